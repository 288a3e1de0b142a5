"""Tensor parallelism inside data parallelism (DeepSpeed AutoTP + ZeRO-1) on CPU with gloo: two ranks
(TP 2 x DP 1) and four (TP 2 x DP 2) train like one process, with document masking and activation
checkpointing; a TP checkpoint resumes under its layout, refuses another one, and its shards join into
the one-process model's weights, bit for bit, in the export.

Run as a script under torchrun, this file is one rank of the TP 2 x DP 1 run: a checkpoint of the
initial weights, 5 steps, then the checkpoint of step 2 resumed for steps 3 to 5.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import micro_config, token_rows, write_shards
from mlflow import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file

from training import checkpoint
from training.__main__ import main
from training.config import TrainConfig
from training.model import StableLM, flops_per_token, tensor_parallel_dim
from training.resume import ResumeError

REPO = Path(__file__).resolve().parent.parent
COMMON = {
    "schedule": {"warmup_steps": 1, "total_steps": 5},
    "log": {"peak_flops": 1e12},
    "checkpoint": {"keep_last": 3},  # steps 2, 4 and 5
    "activation_checkpointing": True,
}
# The runs that nothing resumes from keep their last checkpoint only (the suite's disk use).
LATEST_ONLY = {**COMMON, "checkpoint": {"keep_last": 1}}


def tensor_parallel(cfg: TrainConfig, tensor: int) -> TrainConfig:
    return TrainConfig.model_validate({**cfg.model_dump(mode="json"), "parallel": {"tensor": tensor}})


def torchrun(ranks: int, *args: str) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    proc = subprocess.run([*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def truncated_copy(source: Path, target: Path, step: int) -> None:
    """The checkpoint of `source` at `step`, in `target`, as if the run stopped after `step` (and kept
    one checkpoint: each is ~200 MB, and CI's disk is not large)."""
    keep = f"step_{step:08d}"
    shutil.copytree(
        source, target, ignore=lambda _, names: [n for n in names if n.startswith("step_") and n != keep]
    )
    (target / "latest").write_text(keep)


def losses(history) -> list[float]:
    return [record.loss for record in history]


def test_config_refuses_a_model_that_does_not_split(tmp_path):
    cfg = micro_config(tmp_path, tmp_path / "shards")
    with pytest.raises(ValidationError, match="parallel.tensor 3 must divide model.num_heads 4"):
        tensor_parallel(cfg, 3)


@pytest.mark.slow
def test_tensor_parallel_trains_like_one_process_resumes_and_exports(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from training.trainer import Trainer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    shards = write_shards(tmp_path / "shards", rows=32, valid_rows=4)
    one_cfg = micro_config(tmp_path / "one", shards, **LATEST_ONLY)
    one_trainer = Trainer(one_cfg)
    one_init = {name: tensor.clone() for name, tensor in one_trainer.model.state_dict().items()}
    one = one_trainer.fit().history

    # TP 2 x DP 1: the whole micro-batch on both ranks; straight, then resumed after step 2.
    tp2 = tensor_parallel(micro_config(tmp_path / "tp2", shards, **COMMON), 2)
    (tmp_path / "tp2.yaml").write_text(yaml.safe_dump(tp2.model_dump(mode="json")))
    torchrun(2, str(Path(__file__)), str(tmp_path / "tp2.yaml"), str(tmp_path / "tp2.json"))
    ranks = json.loads((tmp_path / "tp2.json").read_text())
    assert ranks["straight"] == pytest.approx(losses(one), abs=1e-5)
    assert ranks["grad_norms"] == pytest.approx([r.grad_norm for r in one], rel=1e-4)
    assert ranks["resumed_steps"] == [3, 4, 5]
    assert ranks["resumed"] == pytest.approx(ranks["straight"][2:], abs=1e-6)
    # Two ranks read one stream of samples: the tokens a step counts (for tokens/s and MFU) are one process's.
    assert ranks["tokens_per_step"] == one_trainer.tokens_per_step == 2 * 2 * 32

    # TP 2 x DP 2 from the command line: one sample per data-parallel rank and micro-step.
    tp2dp2 = tensor_parallel(
        micro_config(tmp_path / "tp2dp2", shards, batch={"micro_batch": 1}, **LATEST_ONLY), 2
    )
    (tmp_path / "tp2dp2.yaml").write_text(yaml.safe_dump(tp2dp2.model_dump(mode="json")))
    torchrun(4, "-m", "training", "train", str(tmp_path / "tp2dp2.yaml"))
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(tp2dp2.log.experiment).experiment_id])
    assert {k: run.data.tags[k] for k in ("tp", "dp", "world_size")} == {
        "tp": "2",
        "dp": "2",
        "world_size": "4",
    }
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx(losses(one), abs=1e-5)
    # Each device's share of the model FLOPs: 4 samples of 32 tokens per micro-step over 4 devices.
    metrics = run.data.metrics
    assert metrics["tokens_per_s_per_device"] == pytest.approx(metrics["tokens_per_s"] / 4)
    expected_mfu = flops_per_token(tp2dp2.model, tp2dp2.data.seq_len) * metrics["tokens_per_s"] / (4 * 1e12)
    assert metrics["mfu"] == pytest.approx(expected_mfu)

    # Placement: the checkpoint of the TP run before its first step, joined, is the one-process model's
    # initial weights bit for bit (sharding and joining only move values, so no summation order enters),
    # and its export loads in transformers as that model. Trained weights are not compared: Adam turns
    # the rounding differences of near-zero gradients into steps of up to lr, which depend on the CPU.
    init_folder = tmp_path / "tp2_init" / checkpoint.tag_for(0)
    assert misplaced(checkpoint.model_state_dict(init_folder), one_init) == []
    # The measure sees a shard put in the wrong place: the two ranks' files swapped, every split
    # parameter differs (but the zero-initialised biases, the same either way) and nothing else does.
    swapped = tmp_path / "tp2_swapped"
    swapped.mkdir()
    for rank in (0, 1):
        name = "mp_rank_{:02d}_model_states.pt"
        shutil.copy(init_folder / name.format(rank), swapped / name.format(1 - rank))
    split = {name for name, t in one_init.items() if tensor_parallel_dim(name) is not None and t.any()}
    assert split and set(misplaced(checkpoint.model_state_dict(swapped), one_init)) == split

    assert main(["export", str(init_folder), str(tmp_path / "tp2_hf")]) == 0
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "tp2_hf", dtype=torch.float32)
    one_model = StableLM(one_cfg.model)
    one_model.load_state_dict(one_init)
    ids = torch.from_numpy(token_rows(1)[:, :-1]).long()
    with torch.no_grad():
        # The same weights through two fp32 implementations: only the kernels' summation order differs,
        # a relative error of a few float32 ulps per dot product (|logits| < 1 here).
        torch.testing.assert_close(theirs(ids).logits, one_model(ids), rtol=1e-5, atol=1e-5)
    # The trained TP checkpoint exports too, with the one-process export's names, shapes and dtypes.
    assert main(["export", str(tp2.checkpoint.dir), str(tmp_path / "tp2_trained_hf")]) == 0
    assert main(["export", str(one_cfg.checkpoint.dir), str(tmp_path / "one_hf")]) == 0
    ours, reference = (
        load_file(tmp_path / name / "model.safetensors") for name in ("tp2_trained_hf", "one_hf")
    )
    assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {
        k: (v.shape, v.dtype) for k, v in reference.items()
    }

    # Another layout is refused before any model is built, both layouts named.
    elsewhere = micro_config(tmp_path / "elsewhere", shards, **COMMON)
    truncated_copy(tp2.checkpoint.dir, elsewhere.checkpoint.dir, 4)
    with pytest.raises(
        ResumeError, match=r"tp=2 x dp=1 \(world size 2\); this run's is tp=1 x dp=1 \(world size 1\)"
    ):
        Trainer(elsewhere)


def misplaced(joined: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> list[str]:
    """The parameters of `joined` that are not `reference`'s, bit for bit (or are missing)."""
    return [
        name
        for name, tensor in reference.items()
        if name not in joined or not torch.equal(joined[name], tensor)
    ]


def run_rank(config: Path, out: Path) -> None:
    """One rank of the TP 2 x DP 1 run: 5 steps, and steps 3-5 again from the checkpoint of step 2."""
    import torch.distributed as dist

    from training.config import load
    from training.trainer import Trainer

    cfg = load(config)
    trainer = Trainer(cfg)
    trainer._save()  # the sharded initial weights, which the test joins and compares
    if dist.get_rank() == 0:
        tag = checkpoint.tag_for(0)
        shutil.copytree(cfg.checkpoint.dir / tag, config.parent / "tp2_init" / tag)
    dist.barrier()
    straight = trainer.fit().history
    resumed_cfg = TrainConfig.model_validate(
        {**cfg.model_dump(mode="json"), "checkpoint": {"dir": str(config.parent / "tp2_resumed")}}
    )
    if dist.get_rank() == 0:
        truncated_copy(cfg.checkpoint.dir, resumed_cfg.checkpoint.dir, 2)
    dist.barrier()
    resumed = Trainer(resumed_cfg).fit().history
    if dist.get_rank() == 0:
        result = {
            "straight": losses(straight),
            "grad_norms": [r.grad_norm for r in straight],
            "resumed_steps": [r.step for r in resumed],
            "resumed": losses(resumed),
            "tokens_per_step": trainer.tokens_per_step,
        }
        out.write_text(json.dumps(result))


if __name__ == "__main__":
    run_rank(Path(sys.argv[1]), Path(sys.argv[2]))
