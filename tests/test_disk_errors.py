"""A full disk or a path that cannot be written is one line naming the path and the free space there,
with a non-zero exit and nothing half-written left looking finished (issue 23, rows 6 to 8).

The full disks are real small tmpfs mounts, the read-only paths read-only ones: mounting needs root
(or CAP_SYS_ADMIN), and a test that cannot mount is skipped with the reason."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, make_checkpoint, micro_config, write_config

import tokenizer
from common.files import atomic_write, disk_error
from harness import disks

pytestmark = pytest.mark.usefixtures("mlflow_store")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """`harness.disks.tmpfs`, the test skipped with the reason where mounting is not possible."""
    with contextlib.ExitStack() as stack:
        try:
            mounted = stack.enter_context(disks.tmpfs(folder, size, read_only))
        except disks.CannotMount as e:
            pytest.skip(str(e))
        yield mounted


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)


def assert_one_line(
    done: subprocess.CompletedProcess[str], path: Path, says: str, alone: bool = False
) -> str:
    """`done` failed with one error line, the last on stderr (`alone`: the only one), naming `path`,
    `says` and the free space."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 or not alone, done.stderr
    line = lines[-1]
    assert line.startswith("error: cannot write ") and str(path) in line, line
    assert says in line and " free of " in line, line
    return line


# -- the one helper ---------------------------------------------------------------------------------


def test_disk_error_tells_each_way_a_full_or_read_only_disk_fails(tmp_path):
    errors = []
    with tmpfs(tmp_path / "full", "64k") as full:
        # torch.save into a file object says "unexpected pos ..." (its OSError only as the context).
        with pytest.raises(RuntimeError) as torch_error:
            atomic_write(full / "a.pt", lambda f: torch.save(torch.zeros(1 << 16), f))
        errors.append(torch_error.value)
        with pytest.raises(OSError) as arrow_error:
            pq.write_table(pa.table({"x": np.arange(1 << 16)}), full / "b.parquet")
        errors.append(arrow_error.value)
        for error in errors:
            assert "no space left on device" in disk_error(error, full)
            assert str(full) in disk_error(error, full) and "free of 64.0 KB" in disk_error(error, full)
    # A short write carries no errno, only its message.
    short = OSError("78260 requested and 20416 written")
    assert "no space left on device" in disk_error(short, tmp_path)
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        with pytest.raises(OSError) as ro_error:
            (ro / "x").write_text("x")
        line = disk_error(ro_error.value, tmp_path)
        assert line.startswith(f"error: cannot write {ro / 'x'}: read-only file system"), line
    wrapped = RuntimeError("task failed")
    wrapped.cause = OSError(errno.ENOSPC, "No space left on device")  # as Ray's RayTaskError carries it
    assert "no space left on device" in disk_error(wrapped, tmp_path)
    assert disk_error(OSError(errno.ENOENT, "No such file", "x"), tmp_path) is None
    assert disk_error(RuntimeError("unexpected"), tmp_path) is None


# -- pipeline run and pack ----------------------------------------------------------------------------


def pipeline(command: str, documents: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline COMMAND` on the sample config with `documents` as its eval documents file."""
    sets = [arg for setting in (f"decontam.documents={documents}", *settings) for arg in ("--set", setting)]
    return cli("pipeline", command, "configs/data/sample.yaml", *sets)


@pytest.fixture(scope="module")
def sample_work(tmp_path_factory: pytest.TempPathFactory, eval_documents: Path) -> Path:
    """A finished sample run's work dir, for pack."""
    work = tmp_path_factory.mktemp("sample") / "work"
    done = pipeline("run", eval_documents, f"work_dir={work}")
    assert done.returncode == 0, done.stderr
    return work


@pytest.mark.slow
def test_pipeline_run_on_a_full_disk_says_so_in_one_line(tmp_path, eval_documents):
    # The sample's work dir takes about 5 MB.
    with tmpfs(tmp_path / "disk", "2m") as disk:
        work = disk / "work"
        assert_one_line(
            pipeline("run", eval_documents, f"work_dir={work}"), disk, "no space left on device", alone=True
        )
        assert not (work / "_SUCCESS.json").exists() and not (work / "report.md").exists()


@pytest.mark.slow
def test_pack_on_a_full_disk_says_so_in_one_line(sample_work, eval_documents, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "shards"
        done = pipeline("pack", eval_documents, f"work_dir={sample_work}", f"pack.out_dir={out}")
        assert_one_line(done, disk, "no space left on device", alone=True)
        assert not (out / "manifest.json").exists()


@pytest.mark.slow
def test_pipeline_on_read_only_dirs_says_so_in_one_line(sample_work, eval_documents, tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        work = ro / "work"
        assert_one_line(pipeline("run", eval_documents, f"work_dir={work}"), work, "read-only", alone=True)
        done = pipeline("pack", eval_documents, f"work_dir={sample_work}", f"pack.out_dir={ro / 'shards'}")
        assert_one_line(done, ro / "shards", "read-only", alone=True)


# -- training: checkpoints and exports --------------------------------------------------------------


def train(tmp_path: Path, shards: Path, checkpoints: Path) -> subprocess.CompletedProcess[str]:
    cfg = micro_config(tmp_path, shards, checkpoint={"dir": str(checkpoints)})
    return cli("training", "train", str(write_config(tmp_path, cfg)))


@pytest.mark.slow
def test_a_checkpoint_save_on_a_full_disk_says_so_and_leaves_no_checkpoint(shards, tmp_path):
    # The micro model's first checkpoint takes more than this: the save fails in DeepSpeed's torch.save.
    with tmpfs(tmp_path / "disk", "256k") as disk:
        checkpoints = disk / "ckpt"
        assert_one_line(train(tmp_path, shards, checkpoints), checkpoints, "no space left on device")
        assert not (checkpoints / "latest").exists()
        assert not list(checkpoints.glob("step_*/checksums.json"))


@pytest.mark.slow
def test_two_ranks_on_a_full_disk_stop_with_the_line_and_no_checkpoint(shards, tmp_path):
    # Each rank stops at the same point of the save, the one whose write failed with the line; the
    # timeout stands for a rank left waiting.
    cfg = micro_config(tmp_path, shards, batch={"micro_batch": 1})
    with tmpfs(tmp_path / "disk", "256k") as disk:
        cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"dir": disk / "ckpt"})})
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command = [*torchrun, "-m", "training", "train", str(write_config(tmp_path, cfg))]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "no space left on device" in done.stderr, done.stderr[-3000:]
        # torchrun adds its own traceback of the failed child; none goes through the trainer's code.
        assert str(ROOT / "training") not in done.stderr, done.stderr[-3000:]
        assert not (disk / "ckpt" / "latest").exists()
        assert not list((disk / "ckpt").glob("step_*/checksums.json"))


@pytest.mark.slow
def test_training_into_a_read_only_dir_says_so(shards, tmp_path):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        assert_one_line(train(tmp_path, shards, ro / "ckpt"), ro / "ckpt", "read-only")


@pytest.fixture(scope="module")
def checkpoints(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run") / "checkpoints"
    return make_checkpoint(export, root, tokenizer.load().fingerprint)


def test_an_export_to_a_full_or_read_only_disk_says_so(checkpoints, tmp_path):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "hf"
        assert_one_line(cli("training", "export", str(checkpoints), str(out)), disk, "no space left")
        assert list(disk.iterdir()) == []  # the half-written export is not left, under any name
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        out = ro / "hf"
        assert_one_line(cli("training", "export", str(checkpoints), str(out)), ro, "read-only")


# -- evaluation -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_evaluation_into_a_read_only_dir_says_so(export, tmp_path):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        output = ro / "eval"
        args = ["run", "--model", str(export), "--tasks", "stablelm2_cloze", "--limit", "2"]
        done = cli("evaluation", *args, "--output", str(output))
        assert_one_line(done, ro, "read-only")
        # Told before any work: before the task list is even read.
        args = ["run", "--model", str(export), "--tasks", "no_such_task"]
        assert_one_line(cli("evaluation", *args, "--output", str(output)), ro, "read-only")
