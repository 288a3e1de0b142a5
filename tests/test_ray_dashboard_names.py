"""What the Ray dashboard shows of the data job, read back through Ray's public state API: the job named
with its config in its metadata, a stage's Ray Data tasks named after the stage, the pack job's tasks
after their step. Ray here is started as `python -m pipeline` starts it (`start_ray`), with its
dashboard, which the state API queries (the shared `ray_local` runs without one)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray.util.state import list_jobs, list_tasks

from pipeline.cluster import job_metadata, start_ray
from pipeline.config import DataConfig
from pipeline.pack_job import pack
from pipeline.read_filter import FILTER
from pipeline.stage import Stage, run_on_ray
from pipeline.workdir import WorkDir

# Task events reach the dashboard a second or so after the task ends.
EVENTS_WAIT_S = 30.0


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    """A config whose work dir holds a few mixed documents, for the pack job."""
    work = WorkDir(tmp_path_factory.mktemp("work"))
    work.mixed_dir.mkdir()
    docs = [{"id": f"web/{i}", "text": f"document {i} " * 20, "source": "web"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(docs), work.mixed_dir / "part-0.parquet")
    sources = {"web": {"reader": "refinedweb", "paths": ["unused"], "weight": 1.0}}
    pack_cfg = {"seq_len": 31, "rows_per_shard": 16, "out_dir": str(tmp_path_factory.mktemp("shards"))}
    return DataConfig.model_validate({"work_dir": str(work.root), "sources": sources, "pack": pack_cfg})


@pytest.fixture(scope="module")
def address(cfg: DataConfig) -> Iterator[str]:
    """A local Ray with its dashboard, started for a `pipeline run` job; its GCS address."""
    assert not ray.is_initialized()
    start_ray(job=job_metadata("run", cfg))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def task_names(address: str, wanted: set[str]) -> set[str]:
    """The names of this job's tasks, once `wanted` are among them (or the wait is over)."""
    job = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + EVENTS_WAIT_S
    while True:
        tasks = list_tasks(address=address, filters=[("job_id", "=", job)], limit=10_000)
        names = {task.name for task in tasks}
        if wanted <= names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_the_job_is_named_with_its_config(address, cfg):
    job = ray.get_runtime_context().get_job_id()
    (ours,) = [j for j in list_jobs(address=address, detail=True) if j.job_id == job]
    assert ours.metadata == job_metadata("run", cfg)
    assert ours.metadata["job_name"] == "pipeline run" and ours.metadata["work_dir"] == cfg.work_dir


def test_a_stages_tasks_carry_its_name(address):
    stage = Stage(FILTER, tasks=[0, 1, 2], run=lambda task: {"docs": task}, is_done=lambda task: False)
    run_on_ray(stage)
    assert f"Map({FILTER})" in task_names(address, {f"Map({FILTER})"})


def test_the_pack_jobs_tasks_carry_their_step(address, cfg):
    manifest, _ = pack(cfg)
    assert manifest.shards  # the documents were packed
    assert {"pack encode", "pack windows"} <= task_names(address, {"pack encode", "pack windows"})
