"""An output path is never something we delete (issue 23, row 1): `training export`, `pipeline pack`,
`evaluation run` and `tokenizer export-hf` write where nothing is, or over an earlier output of their
own, and refuse anything else in one line, leaving it exactly as it was."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_checkpoint

import tokenizer
from common.files import OutputPathError, check_output_folder, publish_folder, temporary_path, write_json
from common.lock import LOCK_FILE
from evaluation.__main__ import main as evaluation_main
from evaluation.run import RESULTS, is_eval_output
from pipeline import pack_job
from pipeline.config import DataConfig
from tokenizer.__main__ import main as tokenizer_main
from training.__main__ import main as training_main
from training.hf import TRAINING_RUN, load_hf

ROOT = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder): what must not change."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def checkpoints(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint dir (step_00000007 and `latest`) holding the tiny export's weights."""
    root = tmp_path_factory.mktemp("run") / "checkpoints"
    return make_checkpoint(export, root, tokenizer.load().fingerprint)


def export_cli(checkpoints: Path, out: Path, *more: str) -> int:
    return training_main(["export", str(checkpoints), str(out), *more])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# -- training export --------------------------------------------------------------------------------


def test_export_into_a_folder_of_other_files_refuses_and_keeps_them(checkpoints, tmp_path, capsys):
    # The table's row 1 as typed: `mkdir d; echo x > d/important.txt; python -m training export CK d`.
    d = tmp_path / "d"
    d.mkdir()
    (d / "important.txt").write_text("x\n")
    cli = [sys.executable, "-m", "training", "export", str(checkpoints), str(d)]
    done = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "--overwrite" in done.stderr
    assert export_cli(checkpoints, d, "--overwrite") == 2  # not an export of ours: not even then
    assert "not an export of ours" in one_error_line(capsys)
    assert tree(tmp_path) == {"d": None, "d/important.txt": b"x\n"}


def test_export_never_writes_into_or_over_a_checkpoint_dir(checkpoints, export, tmp_path, capsys):
    other = make_checkpoint(export, tmp_path / "other", tokenizer.load().fingerprint)
    step = checkpoints / "step_00000007"
    before, others = tree(checkpoints.parent), tree(tmp_path)
    targets = [checkpoints, step, checkpoints / "hf", step / "hf", checkpoints.parent, other, other / "hf"]
    for source in (checkpoints, step):
        for out in targets:
            for more in ([], ["--overwrite"]):
                assert export_cli(source, out, *more) == 2, (source, out, more)
                one_error_line(capsys)
    assert tree(checkpoints.parent) == before and tree(tmp_path) == others


def test_a_file_at_the_output_path_is_refused_and_left_as_it_is(checkpoints, tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    for more in ([], ["--overwrite"]):
        assert export_cli(checkpoints, tmp_path / "out", *more) == 2
        assert "is not a folder" in one_error_line(capsys) or more == []
    assert tree(tmp_path) == {"out": b"mine"}  # no `.out.old.PID.tmp` beside it


def test_overwrite_replaces_an_earlier_export_only_and_leaves_nothing_behind(
    checkpoints, export, tmp_path, capsys
):
    out = tmp_path / "hf"
    assert export_cli(checkpoints, out) == 0
    first = tree(out)
    assert TRAINING_RUN in first
    assert export_cli(checkpoints, out, "--dtype", "bf16") == 2  # exists: only with --overwrite
    assert "--overwrite" in one_error_line(capsys) and tree(out) == first
    assert export_cli(checkpoints, out, "--dtype", "bf16", "--overwrite") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporaries, no `.old` folder
    assert tree(out).keys() == first.keys() and tree(out) != first
    _, state_dict = load_hf(out)
    assert all(t.dtype == torch.bfloat16 for t in state_dict.values())

    theirs = tmp_path / "theirs"  # a Hugging Face folder from elsewhere: no TRAINING_RUN
    shutil.copytree(export, theirs)
    kept = tree(theirs)
    assert export_cli(checkpoints, theirs, "--overwrite") == 2
    assert "not an export of ours" in one_error_line(capsys) and tree(theirs) == kept

    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_cli(checkpoints, empty) == 2  # it exists
    one_error_line(capsys)
    assert export_cli(checkpoints, empty, "--overwrite") == 0  # nothing in it to lose
    assert tree(empty).keys() == first.keys()


def test_publish_folder_never_moves_what_is_there(tmp_path):
    target = tmp_path / "target"
    tmp = temporary_path(target)
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    target.write_text("a file")
    for replace in (False, True):
        with pytest.raises(OutputPathError, match="not a folder"):
            publish_folder(tmp, target, replace=replace)
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(OutputPathError, match="not a folder"):
        publish_folder(tmp, target, replace=True)
    target.unlink()
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputPathError, match="replaced only when asked"):
        publish_folder(tmp, target)
    assert tree(target) == {"old.txt": b"old"}
    publish_folder(tmp, target, replace=True)
    assert tree(tmp_path) == {"target": None, "target/new.txt": b"new"}


# -- pipeline pack ----------------------------------------------------------------------------------


def data_config(work: Path, out: Path) -> DataConfig:
    sources = {"web": {"reader": "refinedweb", "paths": ["unused"], "weight": 1.0}}
    return DataConfig.model_validate(
        {"work_dir": str(work), "sources": sources, "pack": {"out_dir": str(out)}}
    )


def test_pack_refuses_an_out_dir_that_is_not_its_own(tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "important.txt").write_text("x\n")
    (tmp_path / "file").write_text("mine")
    for target in (out, tmp_path / "file"):
        with pytest.raises(OutputPathError):  # before anything else: the work dir does not even exist
            pack_job.pack(data_config(tmp_path / "no-work", target))
    assert tree(tmp_path) == {"file": b"mine", "shards": None, "shards/important.txt": b"x\n"}


def test_an_earlier_pack_is_its_own_output_finished_or_not(tmp_path):
    assert pack_job.is_pack_output(write_json(tmp_path / "done" / "manifest.json", {}).parent)
    # A first run stopped while packing one source of the validation split, its lock still there.
    stopped = tmp_path / "stopped"
    write_json(stopped / pack_job.VALID / "web" / pack_job.STATE, {})
    (stopped / LOCK_FILE).write_text("")
    assert pack_job.is_pack_output(stopped)
    (stopped / pack_job.VALID / "notes.txt").write_text("x")
    assert not pack_job.is_pack_output(stopped)


def test_a_gone_source_loses_its_folder_but_a_folder_pack_did_not_write_stays(tmp_path):
    valid = tmp_path / "valid"
    write_json(valid / "gone" / pack_job.STATE, {})
    (valid / "notes").mkdir(parents=True)
    (valid / "notes" / "important.txt").write_text("x\n")
    pack_job.remove_unlisted_sources(valid, {"web"})
    assert tree(valid) == {"notes": None, "notes/important.txt": b"x\n"}


# -- evaluation run --output ------------------------------------------------------------------------


def test_eval_refuses_an_output_holding_other_files_before_any_work(export, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "important.txt").write_text("x\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / RESULTS).write_text('{"config": {"model": "hf"}}')
    (tmp_path / "file").write_text("mine")
    before = tree(tmp_path)
    for output in (other, tmp_path / "foreign", tmp_path / "file"):
        args = ["run", "--model", str(export), "--tasks", "no_such_task", "--output", str(output)]
        assert evaluation_main(args) == 2  # the output is checked first: the unknown task is never reached
        assert str(output) in one_error_line(capsys)
    assert tree(tmp_path) == before


def test_an_earlier_evaluation_is_its_own_output(tmp_path):
    write_json(tmp_path / RESULTS, {"results": {}, "config": {"model": "stablelm2"}})
    assert is_eval_output(tmp_path)
    check_output_folder(tmp_path, is_eval_output, "results")
    (tmp_path / "notes.txt").write_text("x")
    assert not is_eval_output(tmp_path)


# -- tokenizer export-hf ----------------------------------------------------------------------------


def test_tokenizer_export_hf_replaces_only_its_own_folder(tmp_path):
    out = tmp_path / "tok"
    tokenizer_main(["export-hf", str(out)])
    first = tree(out)
    assert "tokenizer.json" in first and tokenizer.RANKS_FILE in first
    (out / "tokenizer.json").write_text("{}")  # an earlier export-hf's folder: replaced whole
    tokenizer_main(["export-hf", str(out)])
    assert tree(out) == first and [p.name for p in tmp_path.iterdir()] == ["tok"]
    (out / "config.json").write_text("{}")  # now a model folder: not export-hf's to replace
    kept = tree(out)
    with pytest.raises(SystemExit, match="not the files export-hf writes"):
        tokenizer_main(["export-hf", str(out)])
    assert tree(out) == kept and [p.name for p in tmp_path.iterdir()] == ["tok"]
