"""The trainer end to end on CPU: real DeepSpeed (gloo), real MLflow (sqlite in tmp), real shards.

The model is a micro Stable LM 2 (width 64, 2 layers, seq 32) over the full 100,352-row vocabulary,
trained on rows that the Arcade100k tokenizer makes from this repository's own source files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import micro_config, token_rows, write_config, write_shard_folder, write_shards
from mlflow import MlflowClient
from pydantic import ValidationError

import tokenizer
from common.precision import resolve_precision
from common.shards import ShardError, ShardSet
from training import checkpoint
from training.__main__ import main, with_hf_model
from training.config import TrainConfig
from training.data import ShardLoader
from training.hf import load_hf
from training.model import StableLM
from training.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.usefixtures("mlflow_store")


def at_step(trainer: Trainer, steps: set[int], action) -> None:
    """Run `action(output)` on the final norm's output (what the loss reads) in each training micro-batch
    of the given (1-based) steps."""

    def hook(module, inputs, output):
        if torch.is_grad_enabled() and trainer.step + 1 in steps:
            return action(output)

    trainer.model.model.norm.register_forward_hook(hook)


# -- the loader ------------------------------------------------------------------------------------


def drain(loader: ShardLoader, n: int) -> list[list[int]]:
    return [loader.next_batch()[:, 0].tolist() for _ in range(n)]


def test_loader_order_is_seeded_split_across_ranks_and_covers_each_epoch(shards):
    rows = ShardSet(shards)
    assert drain(ShardLoader(rows, 4, seed=1), 5) == drain(ShardLoader(rows, 4, seed=1), 5)
    assert drain(ShardLoader(rows, 4, seed=1), 5) != drain(ShardLoader(rows, 4, seed=2), 5)
    # Two ranks of 2 rows read exactly what one rank of 4 reads, split in halves.
    whole = drain(ShardLoader(rows, 4, seed=1), 30)
    r0, r1 = (drain(ShardLoader(rows, 2, seed=1, rank=r, world_size=2), 30) for r in (0, 1))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == whole
    # 96 rows / 4 per micro-step = 24 micro-steps per epoch, each row once; epoch 2 is another order.
    first_tokens = [int(rows[i][0]) for i in range(len(rows))]
    assert sorted(sum(whole[:24], [])) == sorted(first_tokens)
    assert whole[24:30] != whole[:6]


def test_loader_state_resumes_on_the_next_rows_and_refuses_other_data(shards, tmp_path):
    rows = ShardSet(shards)
    straight = ShardLoader(rows, 4, seed=7)
    expected = drain(straight, 40)
    first = ShardLoader(rows, 4, seed=7)
    head = drain(first, 27)  # into the second epoch
    resumed = ShardLoader(rows, 4, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert head + drain(resumed, 13) == expected
    with pytest.raises(ShardError, match="seed"):
        ShardLoader(rows, 4, seed=8).load_state_dict(first.state_dict())


def test_windows_cut_each_row_into_overlapping_samples(shards):
    rows = ShardSet(shards)
    loader = ShardLoader(rows, 3, seed=5, window=8, shuffle=False)
    assert loader.samples == 4 * len(rows)
    first_row = np.asarray(rows[0])
    for w, sample in enumerate(loader.next_batch().numpy()):  # row 0's windows 0, 1, 2
        assert np.array_equal(sample, first_row[8 * w : 8 * w + 9])
    with pytest.raises(ShardError, match="does not divide"):
        ShardLoader(rows, 3, seed=5, window=5)
    with pytest.raises(ValidationError, match="does not divide"):
        micro_config(Path("unused"), shards, data={"window": 5})


# -- failures before the first step -----------------------------------------------------------------


def test_bad_data_is_a_clear_error_before_any_step(tmp_path, capsys):
    good = write_shards(tmp_path / "good", rows=8)
    cases = {
        "missing": (tmp_path / "nowhere", {}, "no manifest.json"),
        "seq_len": (good, {"data.seq_len": 16}, "seq_len 32, the model expects 16"),
        "vocab": (good, {"model.vocab_size": 50_000}, "model's vocab is 50000"),
    }
    corrupt = write_shards(tmp_path / "corrupt", rows=8)
    shard = corrupt / "shard-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    cases["corrupt"] = (corrupt, {}, "does not match the manifest")
    # Ids the embedding cannot look up, in shards whose sha256 matches their manifest.
    for name, row, bad_id in (("id_above", 70, 100_352 + 7), ("id_below", 3, -1)):
        table = token_rows(80)
        table[row, 5] = bad_id
        folder = write_shard_folder(tmp_path / name, table)
        shard = folder / f"shard-{row // 64:05d}.arrow"
        cases[name] = (folder, {}, f"{shard}: row {row % 64} holds token id {bad_id} at position 5, outside")
    for name, (folder, overrides, message) in cases.items():
        cfg = micro_config(tmp_path / name, folder)
        sets = [f"{key}={value}" for key, value in overrides.items()]
        code = main(["train", str(write_config(tmp_path, cfg)), *sum((["--set", s] for s in sets), [])])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, err)
        assert not (tmp_path / name / "ckpt").exists()


# -- training ----------------------------------------------------------------------------------------


def test_preempted_and_resumed_run_equals_the_straight_run(tmp_path, shards, mlflow_store):
    """2N steps straight == N steps, SIGTERM, resume, N steps: identical losses; plus the checkpoints,
    the loss falling, validation, and the one MLflow run that both halves logged to."""
    straight = Trainer(micro_config(tmp_path / "a", shards))
    full = straight.fit()
    losses = [r.loss for r in full.history]
    assert full.status == "finished" and len(losses) == 8 and all(r.applied for r in full.history)
    assert sum(losses[-2:]) / 2 < losses[0] - 0.5  # the loss falls
    root = tmp_path / "a" / "ckpt"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000006", "step_00000008"]
    assert checkpoint.latest_tag(root) == "step_00000008"

    cfg = micro_config(tmp_path / "b", shards)
    first = Trainer(cfg)
    at_step(first, {3}, lambda out: os.kill(os.getpid(), signal.SIGTERM))
    half = first.fit()
    assert half.status == "preempted" and half.step == 3
    assert checkpoint.latest_tag(cfg.checkpoint.dir) == "step_00000003"
    rest = Trainer(cfg).fit()
    assert rest.status == "finished"
    assert [r.loss for r in half.history + rest.history] == losses
    assert [r.lr for r in half.history + rest.history] == [r.lr for r in full.history]
    assert rest.evals == full.evals and set(full.evals) == {4, 8}

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(cfg.log.experiment)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == half.run_id == rest.run_id and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 9))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses)
    for key in ("lr", "grad_norm", "tokens_per_s", "memory_gib", "val_loss", "val_perplexity"):
        assert client.get_metric_history(run.info.run_id, key), key
    assert "mfu" not in run.data.metrics  # no peak FLOP/s known for a CPU
    assert run.data.params["optim.lr"] == "0.01" and run.data.params["model.hidden_size"] == "64"
    assert run.data.tags["data_manifest_sha256"] and run.data.tags["git_commit"]
    assert run.data.tags["tokenizer_fingerprint"] == tokenizer.load().fingerprint
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "manifest.json", "resumed"} <= artifacts


def test_nonfinite_steps_are_skipped_then_abort_keeping_the_last_good_checkpoint(tmp_path, shards):
    cfg = micro_config(tmp_path, shards, max_nonfinite_in_row=2, eval={"interval": 100})
    trainer = Trainer(cfg)
    at_step(trainer, {3, 5, 6}, lambda out: out * float("nan"))
    weights = {}

    def snapshot(module, inputs, output):
        weights.setdefault(trainer.step, trainer.model.lm_head.weight.detach().clone())

    trainer.model.model.norm.register_forward_hook(snapshot)
    with pytest.raises(NonFiniteLossError, match="2 steps in a row.*last good checkpoint is .*step_00000004"):
        trainer.fit()
    assert trainer.skipped_steps == 3
    # Skipped steps leave the weights alone; step 3's skip did not stop step 4 from training.
    assert torch.equal(weights[2], weights[3]) and not torch.equal(weights[3], weights[4])
    assert torch.equal(weights[4], weights[5])
    assert checkpoint.latest_tag(cfg.checkpoint.dir) == "step_00000004"
    saved = checkpoint.model_state_dict(cfg.checkpoint.dir / "step_00000004")["lm_head.weight"]
    assert torch.equal(saved, trainer.model.lm_head.weight.detach())


def test_a_resume_accepts_new_optimizer_schedule_batch_and_intervals_and_notes_the_batch(
    tmp_path, shards, capsys
):
    Trainer(micro_config(tmp_path, shards, schedule={"warmup_steps": 1, "total_steps": 2})).fit()
    capsys.readouterr()
    more = micro_config(
        tmp_path,
        shards,
        optim={"lr": 5e-3, "min_lr": 5e-4, "weight_decay": 0.0},
        schedule={"warmup_steps": 2, "total_steps": 3, "switch_fraction": 0.5},
        batch={"grad_accum": 1},
        checkpoint={"interval": 3, "keep_last": 1},
        eval={"interval": 3, "batches": 1},
        log={"interval": 3, "run_name": "renamed"},
        seed=99,
    )
    assert Trainer(more).fit().step == 3
    out = capsys.readouterr().out
    assert "resuming from" in out and "step_00000002 (step 2)" in out
    assert "global batch changes from 4 to 2 samples per step" in out


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, shards) -> tuple[Path, TrainConfig, str]:
    """(config file, config, what stdout got) of `python -m training train` for 2 steps with
    `precision: auto`: bf16 on a CPU with native bf16, fp32 on one without (which emulates bf16 slowly)."""
    tmp_path = tmp_path_factory.mktemp("auto")
    cfg = micro_config(tmp_path, shards, schedule={"warmup_steps": 1, "total_steps": 2}, precision="auto")
    path = write_config(tmp_path, cfg)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["train", str(path)]) == 0
    return path, cfg, out.getvalue()


def test_train_prints_one_line_per_log_interval_and_deepspeed_only_when_verbose(auto_run, capsys):
    from training.distributed import deepspeed

    path, cfg, out = auto_run
    lines = out.splitlines()
    resolved = resolve_precision("auto", torch.device("cpu"))
    assert lines[0] == f"precision: {resolved.name} ({resolved.why})"
    assert [line.split(" |")[0] for line in lines if "tok/s" in line] == ["step 1/2", "step 2/2"]
    # Resumes with nothing left to train, which builds DeepSpeed's engine: its logger (a stream it
    # bound at import, so read here through a handler) and its prints come through only with --verbose.
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append
    deepspeed.utils.logger.addHandler(handler)
    try:
        capsys.readouterr()
        assert main(["train", str(path)]) == 0
        quiet, quiet_logged = capsys.readouterr().out, [r.getMessage() for r in logged]
        logged.clear()
        assert main(["train", str(path), "--verbose"]) == 0
        verbose, verbose_logged = capsys.readouterr().out, [r.getMessage() for r in logged]
    finally:
        deepspeed.utils.logger.removeHandler(handler)
    assert not any("DeepSpeed info" in m for m in quiet_logged)
    assert "CPU Virtual Memory" not in quiet
    assert not any(line.startswith("MA ") for line in quiet.splitlines())
    assert any("DeepSpeed info" in m for m in verbose_logged)
    # bf16 runs DeepSpeed's BF16_Optimizer, whose memory report (printed) is among what --verbose shows.
    assert ("CPU Virtual Memory" in verbose) == (resolved.name == "bf16")


def test_export_writes_the_trained_dtype_loads_in_transformers_and_imports_back(tmp_path, auto_run, shards):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, cfg, _ = auto_run
    out = tmp_path / "export"
    assert main(["export", str(cfg.checkpoint.dir), str(out)]) == 0
    _, exported = load_hf(out)
    trained = resolve_precision("auto", torch.device("cpu")).dtype
    assert {t.dtype for t in exported.values()} == {trained}  # the precision it trained in
    ours = StableLM(cfg.model)
    ours.load_state_dict(checkpoint.model_state_dict(checkpoint.resolve(cfg.checkpoint.dir)))
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(theirs).__name__ == "StableLmForCausalLM"
    ids = torch.tensor([tokenizer.load().encode_ordinary("def train(cfg): return Trainer(cfg).fit()")])
    with torch.no_grad():
        diff = (theirs(ids).logits - ours(ids)).abs().max().item()
    assert diff <= 1e-4  # the module weights are the values the export holds
    assert AutoTokenizer.from_pretrained(out).decode(ids[0]) == "def train(cfg): return Trainer(cfg).fit()"
    other, other_dtype = ("fp32", torch.float32) if trained == torch.bfloat16 else ("bf16", torch.bfloat16)
    assert main(["export", str(cfg.checkpoint.dir), str(tmp_path / other), "--dtype", other]) == 0
    assert {t.dtype for t in load_hf(tmp_path / other)[1].values()} == {other_dtype}

    # import-hf: a new run starts from the exported weights and trains on.
    two_steps = {"warmup_steps": 1, "total_steps": 2}
    cont = with_hf_model(micro_config(tmp_path / "cont", shards, schedule=two_steps), out)
    trainer = Trainer(cont)
    assert torch.equal(trainer.model.lm_head.weight.detach(), exported["lm_head.weight"].float())
    assert trainer.fit().status == "finished"


class NormTasks:
    """A task evaluator of the trainer's own protocol (`training.task_evaluator.TaskEvaluator`): one
    "task" whose metric is the norm of the model's output projection."""

    names = ("norm",)

    def run(self, model: StableLM) -> dict[str, float]:
        return {"eval/norm/lm_head": model.lm_head.weight.norm().item(), "eval/other/x": 1.0}


def test_the_task_evaluator_handed_to_the_trainer_runs_every_tasks_interval_and_after_the_last_step(
    tmp_path, shards, capsys
):
    schedule = {"warmup_steps": 1, "total_steps": 3}
    cfg = micro_config(tmp_path, shards, schedule=schedule, eval={"suite": "given", "tasks_interval": 2})
    trainer = Trainer(cfg, tasks=NormTasks())
    result = trainer.fit()
    assert sorted(result.task_evals) == [2, 3]
    assert result.task_evals[3]["eval/norm/lm_head"] == trainer.model.lm_head.weight.norm().item()
    assert result.task_evals[2] != result.task_evals[3] and result.seconds["tasks"] > 0
    assert "step 3 | eval/norm/lm_head " in capsys.readouterr().out  # the suite's own tasks are printed
