"""Resuming: the checks before step 1 (settings a checkpoint pins) and the fallback past a broken
checkpoint. Real DeepSpeed checkpoints of the micro model, damaged the way a crash or a bad copy does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import micro_config, write_config, write_shards

import tokenizer
from common.files import read_json, write_json
from common.shards import manifest_hash
from training import checkpoint
from training.__main__ import main
from training.config import TrainConfig
from training.resume import ResumeError
from training.trainer import Result, Trainer

pytestmark = pytest.mark.usefixtures("mlflow_store")

# Checkpoints after steps 2 and 4; evaluation only at the end.
RUN = {
    "schedule": {"warmup_steps": 1, "total_steps": 4},
    "checkpoint": {"interval": 2, "keep_last": 2},
    "eval": {"interval": 100},
}
OPTIMIZER_STATES = "zero_pp_rank_0_mp_rank_00_optim_states.pt"  # DeepSpeed's name in an fp32 run


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards) -> tuple[TrainConfig, Result]:
    cfg = micro_config(tmp_path_factory.mktemp("run"), shards, **RUN)
    return cfg, Trainer(cfg).fit()


def copy_run(run: tuple[TrainConfig, Result], tmp_path: Path, **changes) -> TrainConfig:
    """The run's config with `changes`, over a copy of its checkpoints in `tmp_path` (to damage or resume)."""
    cfg, _ = run
    shutil.copytree(cfg.checkpoint.dir, tmp_path / "ckpt")
    return micro_config(tmp_path, cfg.data.shards, **{**RUN, **changes})


def test_a_checkpoint_lists_its_files_in_checksums_written_before_latest(run, shards):
    cfg, _ = run
    folder = cfg.checkpoint.dir / "step_00000004"
    checksums = read_json(folder / "checksums.json")["files"]
    written = {p.name: p for p in folder.iterdir() if p.name != "checksums.json"}
    assert checksums.keys() == written.keys()
    assert {"trainer.json", "config.json", "rng-rank0.pt", OPTIMIZER_STATES} <= checksums.keys()
    assert all(checksums[name]["bytes"] == path.stat().st_size for name, path in written.items())
    times = [p.stat().st_mtime_ns for p in (*written.values(), folder / "checksums.json")]
    assert max(times) == times[-1] <= (cfg.checkpoint.dir / "latest").stat().st_mtime_ns
    assert checkpoint.why_incomplete(folder) is None
    state = read_json(folder / "trainer.json")
    assert state["data_manifest_sha256"] == manifest_hash(shards)
    assert state["tokenizer_fingerprint"] == tokenizer.load().fingerprint


@pytest.mark.parametrize("damaged", ["mp_rank_00_model_states.pt", OPTIMIZER_STATES, "rng-rank0.pt"])
def test_a_truncated_file_in_the_newest_checkpoint_falls_back_to_the_previous(run, tmp_path, capsys, damaged):
    cfg = copy_run(run, tmp_path)
    path = cfg.checkpoint.dir / "step_00000004" / damaged
    size = path.stat().st_size
    os.truncate(path, size // 2)
    trainer = Trainer(cfg)
    out = capsys.readouterr().out
    assert (
        f"step_00000004 is incomplete: {damaged} has {size // 2:,} bytes, {size:,} were written; "
        "using step_00000002 instead\n"
    ) in out
    assert "universal" not in out and trainer.step == 2
    rest = trainer.fit()
    assert [r.step for r in rest.history] == [3, 4]
    assert [r.loss for r in rest.history] == [r.loss for r in run[1].history[2:]]  # as if never broken
    assert checkpoint.why_incomplete(cfg.checkpoint.dir / "step_00000004") is None  # written anew


def test_latest_naming_a_missing_checkpoint_falls_back_with_a_clear_message(run, tmp_path, capsys):
    cfg = copy_run(run, tmp_path)
    (cfg.checkpoint.dir / "latest").write_text("step_00000006")
    trainer = Trainer(cfg)
    lines = capsys.readouterr().out.splitlines()
    latest = cfg.checkpoint.dir / "latest"
    assert f"{latest} names step_00000006, which does not exist; using step_00000004 instead" in lines
    assert trainer.step == 4


def test_no_complete_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    cfg = copy_run(run, tmp_path)
    for checksums in cfg.checkpoint.dir.glob("step_*/checksums.json"):
        checksums.unlink()
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg.checkpoint.dir}: no complete checkpoint to resume from")
    assert "step_00000002 is incomplete: no checksums.json: its save did not finish" in err
    assert "Traceback" not in err


def test_a_resume_refuses_every_change_it_cannot_honour_naming_old_and_new(run, tmp_path, capsys):
    changes = {"model": {"hidden_size": 128, "num_layers": 3}, "data": {"window": 16, "seed": 9}}
    cfg = copy_run(run, tmp_path, precision="bf16", **changes)
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    # On a CPU without native bf16 a warning about bf16's speed comes first.
    error = next(line for line in err.splitlines() if line.startswith("error: "))
    assert error.startswith(
        f"error: {cfg.checkpoint.dir / 'step_00000004'} cannot be resumed with this config"
    )
    assert [line for line in err.splitlines() if line.startswith("  ")] == [
        "  data.seed: 1234 -> 9",
        "  data.window: None -> 16",
        "  model.hidden_size: 64 -> 128",
        "  model.num_layers: 2 -> 3",
        "  precision: fp32 -> bf16",
    ]
    assert "precision: fp32 resumes this checkpoint on any machine" in err


def test_a_resume_refuses_other_data_and_another_tokenizer(run, tmp_path, shards):
    other = write_shards(tmp_path / "other", rows=48, valid_rows=4, seq_len=16)
    cfg = copy_run(run, tmp_path, data={"shards": str(other), "seq_len": 16})
    with pytest.raises(ResumeError) as refused:
        Trainer(cfg)
    old, new = manifest_hash(shards)[:12], manifest_hash(other)[:12]
    assert "  data.seq_len: 32 -> 16\n" in str(refused.value)
    assert f"  data_manifest_sha256: {old} -> {new}\n" in str(refused.value)

    cfg = copy_run(run, tmp_path / "tokenizer")
    folder = cfg.checkpoint.dir / "step_00000004"
    state = read_json(folder / "trainer.json")
    write_json(folder / "trainer.json", {**state, "tokenizer_fingerprint": "0" * 64})
    checkpoint.record_files(folder)  # as if saved so: a complete checkpoint of another tokenizer
    fingerprint = tokenizer.load().fingerprint[:12]
    with pytest.raises(ResumeError, match=f"\n  tokenizer_fingerprint: 000000000000 -> {fingerprint}\n"):
        Trainer(cfg)
