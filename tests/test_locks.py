"""One writer per directory (`common.lock`): a second job is refused with its holder named, a dead
holder's lock is taken over, and `pipeline run`, `pipeline pack` and the trainer each hold theirs."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, micro_config, write_config

from common import config as configs
from common.lock import LOCK_FILE, DirectoryLock, LockError
from pipeline.config import DataConfig
from pipeline.pack_job import pack
from pipeline.run import run
from training import checkpoint
from training.__main__ import main as training_main
from training.trainer import Trainer

SAMPLE = ROOT / "configs" / "data" / "sample.yaml"
HOLD = "import sys, time; from common.lock import DirectoryLock; DirectoryLock(sys.argv[1]).acquire(); "
HOLD += "print('held', flush=True); time.sleep(600)"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A folder and a process that holds its lock."""
    folder = tmp_path / "held"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "held\n"
    yield folder, proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and mtime: what a refused job must leave as it was."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# -- the lock itself ------------------------------------------------------------------------------


def test_a_second_taker_is_refused_with_the_holder_named_until_the_holder_is_killed(holder, capsys):
    folder, proc = holder
    with pytest.raises(LockError) as refused:
        DirectoryLock(folder).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        f"{folder} is in use by another job (pid {proc.pid} on {socket.gethostname()}, "
    )
    assert "from common.lock import DirectoryLock" in message  # its command

    proc.send_signal(signal.SIGKILL)  # the kernel drops its flock; the lock file stays behind
    proc.wait()
    assert (folder / LOCK_FILE).is_file()
    with DirectoryLock(folder) as lock:
        recorded = json.loads(lock.path.read_text())
        assert recorded["pid"] == os.getpid() and recorded["host"] == socket.gethostname()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"warning: {folder / LOCK_FILE}: taking over the lock of a job that ended")
    assert f"(pid {proc.pid} on " in err
    assert not (folder / LOCK_FILE).exists()  # released: no file left behind


def test_the_lock_is_released_on_exit_from_the_block_error_or_not(tmp_path, capsys):
    folder = tmp_path / "made"
    with pytest.raises(RuntimeError, match="the job failed"), DirectoryLock(folder):
        assert (folder / LOCK_FILE).is_file()
        raise RuntimeError("the job failed")
    assert not folder.exists()  # the lock made it and the job left it empty
    folder.mkdir()
    (folder / "output").write_text("kept")
    with DirectoryLock(folder), pytest.raises(LockError, match="is in use by another job"):
        DirectoryLock(folder).acquire()  # one holder, even within one process
    with DirectoryLock(folder):
        pass
    assert [p.name for p in folder.iterdir()] == ["output"]
    assert capsys.readouterr().err == ""  # no takeover: each release was clean


@pytest.fixture
def without_flock(monkeypatch):
    """A filesystem without flock (as some network filesystems are): the O_EXCL fallback locks."""

    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", unsupported)


def test_without_flock_a_dead_holder_on_this_host_is_taken_over_and_a_live_one_refuses(
    tmp_path, without_flock, capsys
):
    def planted(pid: int, host: str = socket.gethostname()) -> None:
        record = {"host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00", "command": "job A"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(record))

    gone = dead_pid()
    planted(gone)
    with DirectoryLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(LockError, match=f"pid {os.getpid()} on "):
            DirectoryLock(tmp_path).acquire()
    assert f"taking over the lock of a job that ended without releasing it (pid {gone} on " in (
        capsys.readouterr().err
    )
    assert not (tmp_path / LOCK_FILE).exists()

    planted(gone, host="elsewhere")  # a pid on another host cannot be checked: refused
    with pytest.raises(LockError, match=f"pid {gone} on elsewhere, started 2026-01-01T00:00:00"):
        DirectoryLock(tmp_path).acquire()


# -- row 3: two `pipeline run`s, and two packs --------------------------------------------------------


def test_a_second_pipeline_run_in_a_work_dir_is_refused_before_it_touches_a_file(holder, tmp_path):
    work, proc = holder
    in_flight = work / "filtered" / ".00000-refinedweb.parquet.21098.tmp"  # the first run's, half-written
    in_flight.parent.mkdir()
    in_flight.write_bytes(b"PAR1")
    before = snapshot(work)
    cfg = configs.load(SAMPLE, DataConfig, {"work_dir": str(work)})
    with pytest.raises(LockError, match=f"^{work} is in use by another job \\(pid {proc.pid} on "):
        run(cfg)

    config = tmp_path / "sample.yaml"
    config.write_text(SAMPLE.read_text().replace("work_dir: data/work/sample", f"work_dir: {work}"))
    second = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(config)], cwd=ROOT, capture_output=True, text=True
    )
    assert second.returncode == 1
    assert second.stderr.startswith(f"error: {work} is in use by another job (pid {proc.pid} on ")
    assert second.stderr.count("\n") == 1 and "python -c" in second.stderr
    assert snapshot(work) == before  # the first run's temporary file included


def test_a_second_pack_into_an_out_dir_is_refused_before_it_touches_a_file(holder, tmp_path):
    out, proc = holder
    (out / ".pack-state.json").write_text("{}")  # what the first pack has written so far
    (out / ".parts").mkdir()
    (out / ".parts" / ".shard-00000.arrow.21098.tmp").write_bytes(b"being written")
    before = snapshot(out)
    cfg = configs.load(SAMPLE, DataConfig, {"work_dir": str(tmp_path / "work"), "pack.out_dir": str(out)})
    with pytest.raises(LockError, match=f"^{out} is in use by another job \\(pid {proc.pid} on "):
        pack(cfg)
    assert snapshot(out) == before


# -- row 2: two trainers on one checkpoint dir ------------------------------------------------------


@pytest.mark.usefixtures("mlflow_store")
def test_a_second_trainer_on_a_checkpoint_dir_is_refused_and_the_first_trains_on_untouched(
    tmp_path, shards, capsys
):
    cfg = micro_config(tmp_path, shards)
    first = Trainer(cfg)
    with pytest.raises(
        LockError, match=f"^{cfg.checkpoint.dir} is in use by another job \\(pid {os.getpid()}"
    ):
        Trainer(cfg)
    capsys.readouterr()
    assert training_main(["train", str(write_config(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg.checkpoint.dir} is in use by another job (pid {os.getpid()} on ")
    assert err.count("\n") == 1
    assert [p.name for p in cfg.checkpoint.dir.iterdir()] == [LOCK_FILE]  # the refused ones wrote nothing

    result = first.fit()
    assert result.status == "finished" and result.step == 8
    root = cfg.checkpoint.dir
    assert not (root / LOCK_FILE).exists()  # released when `fit` ended
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000006", "step_00000008"]
    assert checkpoint.latest_tag(root) == "step_00000008"
    for tag in ("step_00000006", "step_00000008"):
        assert checkpoint.why_incomplete(root / tag) is None
        assert checkpoint.read(root / tag).state["mlflow_run_id"] == result.run_id
