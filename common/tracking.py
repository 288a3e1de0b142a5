"""MLflow: the one store every stage logs to, and an open run with batched logging.

The store is `MLFLOW_TRACKING_URI` when set, else a local sqlite database in ./mlruns with the
artifacts beside it (MLflow 3 refuses a bare ./mlruns file store); `make mlflow-ui` opens it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

__all__ = ["Tracker", "git_commit", "tracking_uri"]

# MLflow's limits per log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the sqlite database ./mlruns/mlflow.db (created on first use)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    store = Path("mlruns")
    store.mkdir(exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store sit beside the database; servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def git_commit() -> str:
    """HEAD of the repository this code runs from, with `-dirty` for uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class Tracker:
    """An open MLflow run: params and tags once, metrics by step, artifacts, and its end status."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri

    @classmethod
    def open(
        cls,
        experiment: str,
        run_name: str | None,
        run_id: str | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Tracker:
        """Reopen run `run_id` (a resume) or create a run in `experiment` logging `params` and `tags`."""
        uri = tracking_uri()
        client = MlflowClient(uri)
        if run_id is not None:
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            tracker = cls(client, run_id, uri)
        else:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                experiment_id = client.create_experiment(experiment, artifact_location=_artifact_root(uri))
            tracker = cls(client, client.create_run(experiment_id, run_name=run_name).info.run_id, uri)
            items = [Param(k, v) for k, v in (params or {}).items()]
            for start in range(0, len(items), _PARAMS_PER_BATCH):
                client.log_batch(tracker.run_id, params=items[start : start + _PARAMS_PER_BATCH])
        for key, value in (tags or {}).items():
            client.set_tag(tracker.run_id, key, value)
        return tracker

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(batch), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[start : start + _METRICS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED (preempted; a resume reopens it)."""
        self.client.set_terminated(self.run_id, status=status)
