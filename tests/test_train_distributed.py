"""Two data-parallel processes on one CPU (torchrun, gloo) train exactly like one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient
from test_train import micro_config, write_shards

from training.model import flops_per_token
from training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_two_processes_match_one_and_log_one_run(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    shards = write_shards(tmp_path / "shards", rows=32, valid_rows=4)
    # fp32, so that one process with 2 rows per micro-batch and two with 1 row each agree closely.
    common = {"bf16": False, "schedule": {"warmup_steps": 1, "total_steps": 4}, "log": {"peak_flops": 1e12}}
    two = micro_config(tmp_path / "two", shards, batch={"micro_batch": 1}, **common)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(two.model_dump(mode="json")))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "training", "train", str(path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = two.checkpoint.dir / "step_00000004"
    assert (last / "rng-rank0.pt").is_file() and (last / "rng-rank1.pt").is_file()

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(two.log.experiment).experiment_id])
    assert run.data.tags["world_size"] == "2"
    two_losses = [
        m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    ]
    # MFU from the configured peak: PaLM FLOPs per token x tokens/s per device / peak.
    per_device = run.data.metrics["tokens_per_s_per_device"]
    expected_mfu = flops_per_token(two.model, two.data.seq_len) * per_device / 1e12
    assert run.data.metrics["mfu"] == pytest.approx(expected_mfu)

    one = Trainer(micro_config(tmp_path / "one", shards, batch={"micro_batch": 2}, **common)).fit()
    assert two_losses == pytest.approx([r.loss for r in one.history], rel=1e-5)
