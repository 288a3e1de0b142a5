"""Two data-parallel processes on one CPU (torchrun, gloo) train, validate per source and evaluate
lm-eval tasks exactly like one process, and a checkpoint they saved resumes exactly in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, micro_config, token_rows, write_shard_folder, write_valid_by_source
from mlflow import MlflowClient

from training import checkpoint
from training.model import flops_per_token
from training.trainer import Trainer


@pytest.mark.slow
def test_two_processes_match_one_log_one_run_and_resume_in_one(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    table = token_rows(40)
    shards = write_shard_folder(tmp_path / "shards", table[:32], valid="valid")
    write_valid_by_source(shards / "valid", {"code": table[32:36], "more": table[36:]})
    # fp32 (micro_config's), so that one process with 2 rows per micro-batch and two with 1 row each agree
    # closely.
    common = {"schedule": {"warmup_steps": 1, "total_steps": 4}, "log": {"peak_flops": 1e12}}
    suite = tmp_path / "suite.yaml"  # a multiple-choice task and a 3-shot generation task
    suite.write_text(yaml.safe_dump({"tasks": {"stablelm2_cloze_en": None, "stablelm2_gen_en": None}}))
    evals = {"suite": str(suite), "tasks_interval": 4, "limit": 6}
    two = micro_config(tmp_path / "two", shards, batch={"micro_batch": 1}, eval=evals, **common)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(two.model_dump(mode="json")))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "training", "train", str(path)], cwd=ROOT, env=env, capture_output=True, text=True
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

    one_cfg = micro_config(tmp_path / "one", shards, batch={"micro_batch": 2}, eval=evals, **common)
    one = Trainer(one_cfg).fit()
    assert two_losses == pytest.approx([r.loss for r in one.history], rel=1e-5)
    # Validation per source and the tasks: each rank scored its share, the sums and results were gathered.
    (one_run,) = client.search_runs([client.get_experiment_by_name(one_cfg.log.experiment).experiment_id])
    evaluated = {k: v for k, v in one_run.data.metrics.items() if k.startswith(("val", "eval/"))}
    assert {"val/code/bpb", "val/more/loss", "val_bpb", "eval/stablelm2_gen_en/exact_match"} <= set(evaluated)
    assert {k: run.data.metrics[k] for k in evaluated} == pytest.approx(evaluated, rel=1e-4)
    assert one.task_evals[4] == {k: v for k, v in evaluated.items() if k.startswith("eval/")}
    assert 0 < run.data.metrics["time_share/tasks"] < 1 and one.seconds["tasks"] > 0

    # The two-process checkpoint of step 2, resumed by one process (ZeRO state resharded through
    # DeepSpeed's universal format), trains steps 3 and 4 exactly like the one-process run.
    resumed = micro_config(tmp_path / "resumed", shards, batch={"micro_batch": 2}, **common)
    shutil.copytree(two.checkpoint.dir, resumed.checkpoint.dir)
    shutil.rmtree(resumed.checkpoint.dir / "step_00000004")
    (resumed.checkpoint.dir / "latest").write_text("step_00000002")  # as if preempted after step 2
    assert checkpoint.saved_world_size(resumed.checkpoint.dir / "step_00000002") == 2
    rest = Trainer(resumed).fit()
    assert [r.step for r in rest.history] == [3, 4]
    assert [r.loss for r in rest.history] == pytest.approx([r.loss for r in one.history[2:]], rel=1e-5)
    assert checkpoint.saved_world_size(resumed.checkpoint.dir / "step_00000004") == 1
    assert not (resumed.checkpoint.dir / checkpoint.UNIVERSAL).exists()
