"""A two-node launch that shares no disk: `torchrun --nnodes 2` twice on this machine (c10d rendezvous on
127.0.0.1, two processes each, gloo), each "node" with its own checkpoint dir and shard cache, the shards
read from the S3 endpoint and the checkpoints gathered there (checkpoint.mirror). One node is killed
mid-run; both restart, the killed one on an empty disk, and resume from the store with the losses of an
unbroken run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest
from conftest import ROOT, micro_config, put_folder, write_config
from mlflow import MlflowClient

from common.net import free_port
from training import checkpoint
from training.trainer import Trainer

STEPS = 6
# Four data-parallel ranks of one row each; one process of four rows is the same run (to rounding).
RUN = {
    "schedule": {"warmup_steps": 1, "total_steps": STEPS},
    "batch": {"micro_batch": 1, "grad_accum": 1},
    "checkpoint": {"interval": 2, "keep_last": 3},
    "eval": {"interval": 100, "batches": 1},
}


def launch(config: Path, port: int, node: Path) -> subprocess.Popen:
    """One node: torchrun's agent and its two ranks, with this node's own checkpoint dir and cache."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2"]
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", str(port)]
    cmd += ["-m", "training", "train", str(config)]
    cmd += ["--set", f"checkpoint.dir={node / 'ckpt'}", "--set", f"data.cache_dir={node / 'cache'}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    log = open(node.with_suffix(".log"), "a")  # noqa: SIM115  # closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def kill_node(proc: subprocess.Popen) -> None:
    """kill -9 of the agent and its ranks at once, as a node that loses power."""
    victims = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait()


def losses(uri: str, experiment: str) -> dict[int, float]:
    """The run's loss by step; a step trained twice (before a kill and after the resume) by its last."""
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


@pytest.mark.slow
@pytest.mark.nodes
def test_two_nodes_sharing_no_disk_train_as_one_and_resume_from_the_store_after_one_is_killed(
    shards, s3_bucket, tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    url = put_folder(shards, f"{s3_bucket}/shards/micro")
    mirror = f"{s3_bucket}/run/checkpoints"
    ckpt = {**RUN["checkpoint"], "mirror": mirror}
    cfg = micro_config(tmp_path / "two", shards, **{**RUN, "data": {"shards": url}, "checkpoint": ckpt})
    config = write_config(tmp_path, cfg)
    nodes = [tmp_path / "node0", tmp_path / "node1"]

    port = free_port()
    procs = [launch(config, port, node) for node in nodes]
    complete = "run/checkpoints/step_00000002/checksums.json"
    s3, bucket = boto3.client("s3"), s3_bucket.removeprefix("s3://")
    deadline = time.time() + 240
    while time.time() < deadline and procs[0].poll() is None:
        if s3.list_objects_v2(Bucket=bucket, Prefix=complete).get("KeyCount"):
            break
        time.sleep(0.1)
    kill_node(procs[1])
    assert procs[0].wait(timeout=120) != 0, "node 0 went on without node 1"
    # Each node holds its own ranks' part: the optimizer states of two ranks, and the weights.
    part = sorted(p.name for p in (nodes[0] / "ckpt" / "step_00000002").glob("*.pt"))
    assert len([name for name in part if "optim_states" in name]) == 2 and checkpoint.MODEL_STATES in part

    # Node 1 comes back with an empty disk; both start again and take the newest step they can share.
    killed_disk = nodes[1].rename(tmp_path / "lost")
    port = free_port()
    procs = [launch(config, port, node) for node in nodes]
    for proc, node in zip(procs, nodes, strict=True):
        assert proc.wait(timeout=300) == 0, node.with_suffix(".log").read_text()[-3000:]
    logs = "".join(node.with_suffix(".log").read_text() for node in nodes)
    assert "is each node's own" in logs and f"{mirror}/step_" in logs  # node 1 brought its step back
    resumed_at = int(logs.split("resuming from ")[1].split("(step ")[1].split(")")[0])
    assert 2 <= resumed_at < STEPS
    assert (nodes[1] / "ckpt" / checkpoint.tag_for(STEPS)).is_dir() and killed_disk.is_dir()

    # The unbroken reference: one process of four rows per step.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'one.db'}")
    one_cfg = micro_config(tmp_path / "one", shards, **{**RUN, "batch": {"micro_batch": 4, "grad_accum": 1}})
    one = Trainer(one_cfg).fit()
    two = losses(uri, cfg.log.experiment)
    assert [two[step] for step in range(1, STEPS + 1)] == pytest.approx(
        [r.loss for r in one.history], rel=1e-5
    )
