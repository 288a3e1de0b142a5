"""MLflow: the one store every stage logs to, an open run with batched logging, and MLflow 3's
model-centric records: a run's datasets, a logged model per export, its registered versions.

The store is `MLFLOW_TRACKING_URI` when set, else a local sqlite database in ./mlruns with the
artifacts beside it (MLflow 3 refuses a bare ./mlruns file store); `make mlflow-ui` opens it.

A logged model stands for an export folder and references it by path (its EXPORT_TAG) rather than
copying its files into the store: weights run to gigabytes, and the export already sits where it was
written. Whoever resolves a registered version (`model_version_folder`) uses that folder when it is on
this machine, and downloads the version's source otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.data.schema import TensorDatasetSchema
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModel,
    LoggedModelInput,
    LoggedModelOutput,
    Metric,
    Param,
    RunStatus,
)
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.types import Schema, TensorSpec

__all__ = [
    "EXPORT_TAG",
    "REGISTRY_PREFIX",
    "TrackingError",
    "TrackedData",
    "Tracker",
    "find_logged_model",
    "git_commit",
    "log_export_model",
    "model_version_folder",
    "register_model",
    "store_exists",
    "tracking_uri",
]

# MLflow's limits per log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# MLflow's limit on a dataset digest's length (a sha256 is 64 hex digits; its first 36 still name it).
_DIGEST_CHARS = 36
# The input tag MLflow's UI shows as a dataset's context (mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT).
_CONTEXT_TAG = "mlflow.data.context"
# A logged model's tag holding the export folder it stands for, resolved.
EXPORT_TAG = "export_path"
REGISTRY_PREFIX = "models:/"
_LOGGED_MODEL_URI = re.compile(r"models:/(?P<id>m-[0-9a-f]+)")
# The logged model's tag listing its registered versions (mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS).
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"
_REGISTRY_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))")


class TrackingError(ValueError):
    """A run or registered version the store does not hold, or a version whose files cannot be found."""


@dataclass(frozen=True)
class TrackedData:
    """A data set a run reads, as an MLflow dataset input."""

    name: str
    url: str  # where it lives: file:///..., s3://...
    digest: str  # what names its exact content (a manifest's sha256)
    context: str  # what the run does with it: training, validation
    profile: Mapping[str, Any]  # rows, tokens and such, shown beside it
    columns: Mapping[str, tuple[str, tuple[int, ...]]]  # column -> (numpy dtype, shape): its schema

    def dataset(self) -> Dataset:
        scheme = self.url.partition("://")[0]
        tensors = [TensorSpec(np.dtype(dtype), shape, name) for name, (dtype, shape) in self.columns.items()]
        return Dataset(
            name=self.name,
            digest=self.digest[:_DIGEST_CHARS],
            source_type="local" if scheme == "file" else scheme,
            source=json.dumps({"uri": self.url}),
            schema=json.dumps(TensorDatasetSchema(features=Schema(tensors)).to_dict()),
            profile=json.dumps(dict(self.profile)),
        )


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the sqlite database ./mlruns/mlflow.db (created on first use)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    store = Path("mlruns")
    store.mkdir(exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def store_exists(uri: str) -> bool:
    """Whether the store at `uri` may hold runs: a sqlite file that exists (opening one creates it);
    any other store is asked."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


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

    def log_metrics(self, metrics: Mapping[str, float], step: int, model_id: str | None = None) -> None:
        """`metrics` at `step`; with `model_id` they are that logged model's too (its page shows them)."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step, model_id=model_id) for key, value in metrics.items()]
        _log_metric_batches(self.client, self.run_id, batch)

    def log_datasets(self, datasets: Sequence[TrackedData]) -> None:
        """The data sets the run reads, as its dataset inputs, each tagged with its context."""
        inputs = [DatasetInput(d.dataset(), [InputTag(_CONTEXT_TAG, d.context)]) for d in datasets]
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_model_input(self, model_id: str) -> None:
        """The logged model this run reads (an evaluation's model)."""
        self.client.log_inputs(self.run_id, models=[LoggedModelInput(model_id)])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED (preempted; a resume reopens it)."""
        self.client.set_terminated(self.run_id, status=status)


def _log_metric_batches(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])


def log_export_model(
    uri: str,
    run_id: str,
    step: int,
    export: Path,
    *,
    name: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    model_type: str,
) -> LoggedModel:
    """A logged model for the export folder `export` of training run `run_id` (in the store at `uri`)
    at `step`: the run's output at that step, with the metrics the run logged at that step as its own.
    The folder is referenced (EXPORT_TAG), not copied."""
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise TrackingError(f"MLflow run {run_id} is not in {uri} ({_one_line(e.message)})") from None
    model = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        tags={**tags, EXPORT_TAG: str(export.resolve())},
        params=dict(params),
        model_type=model_type,
    )
    try:
        _log_metric_batches(
            client, run_id, _metrics_at(client, run_id, run.data.metrics, step, model.model_id)
        )
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    return client.finalize_logged_model(model.model_id, "READY")


def _metrics_at(
    client: MlflowClient, run_id: str, keys: Sequence[str], step: int, model_id: str
) -> list[Metric]:
    """The last value of each metric the run logged at `step`, as it was logged (same timestamp: the run's
    own history gains no duplicate) and linked to `model_id`."""
    metrics = []
    for key in keys:
        at_step = [m for m in client.get_metric_history(run_id, key) if m.step == step]
        if at_step:
            last = max(at_step, key=lambda m: m.timestamp)
            metrics.append(Metric(key, last.value, last.timestamp, step, model_id=model_id))
    return metrics


def find_logged_model(uri: str, export: str, run_id: str) -> str | None:
    """The id of the newest logged model that training run `run_id` made of the export folder `export`
    (resolved) in the store at `uri`; None where there is none."""
    client = MlflowClient(uri)
    try:
        experiment_id = client.get_run(run_id).info.experiment_id
    except MlflowException:  # the run is in another store, or gone
        return None
    made = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    matching = [m for m in made if m.tags.get(EXPORT_TAG) == export]
    return max(matching, key=lambda m: m.creation_timestamp).model_id if matching else None


def register_model(uri: str, model: LoggedModel, name: str) -> ModelVersion:
    """A new version of registered model `name` (created when missing) for the logged model `model`,
    linked both ways as MLflow's own `register_model` links them: the version's source is the model's
    URI, and the model's tag lists its versions."""
    client = MlflowClient(uri)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with _default_store(uri):
        version = client.create_model_version(
            name, model.model_uri, run_id=model.source_run_id, model_id=model.model_id
        )
    listed = json.loads(client.get_logged_model(model.model_id).tags.get(_MODEL_VERSIONS_TAG, "[]"))
    listed.append({"name": name, "version": str(version.version)})
    client.set_logged_model_tags(model.model_id, {_MODEL_VERSIONS_TAG: json.dumps(listed)})
    return version


@contextlib.contextmanager
def _default_store(uri: str) -> Iterator[None]:
    """MLflow's sqlite registry looks a version's `models:/<model id>` source up in the default store,
    not the client's (a TODO of its own): make `uri` the default meanwhile, through the variable MLflow
    reads it from."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if before is None:
            del os.environ["MLFLOW_TRACKING_URI"]
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def model_version_folder(model_uri: str, download_to: Path) -> Path:
    """The local folder of the registered version `model_uri` names (models:/NAME/VERSION or
    models:/NAME@ALIAS, in the store `tracking_uri()`): its logged model's export folder when that is on
    this machine, else the version's source downloaded into `download_to`."""
    if not (match := _REGISTRY_URI.fullmatch(model_uri)):
        raise TrackingError(
            f"{model_uri}: not a registered model URI (models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    uri = tracking_uri()
    client = MlflowClient(uri)
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException as e:
        why = _one_line(e.message)
        raise TrackingError(f"{model_uri}: not in the model registry of {uri} ({why})") from None
    model_id = found.model_id or (m["id"] if (m := _LOGGED_MODEL_URI.fullmatch(found.source)) else None)
    export = _export_of(client, model_id) if model_id is not None else None
    if export is not None and export.is_dir():
        return export
    where = f"its export {export} is not on this machine" if export else "it names no export"
    try:
        folder = Path(download_artifacts(found.source, dst_path=str(download_to), tracking_uri=uri))
    except (MlflowException, OSError) as e:
        raise TrackingError(
            f"{model_uri}: {where}, and its source {found.source} cannot be downloaded ({_one_line(str(e))})"
        ) from None
    if folder.is_dir() and not any(folder.iterdir()):
        raise TrackingError(f"{model_uri}: {where}, and its source {found.source} holds no files")
    return folder


def _export_of(client: MlflowClient, model_id: str) -> Path | None:
    """The export folder the logged model stands for (EXPORT_TAG); None for a model of another kind."""
    try:
        export = client.get_logged_model(model_id).tags.get(EXPORT_TAG)
    except MlflowException:
        return None
    return Path(export) if export else None


def _one_line(message: str) -> str:
    """MLflow's error message, its line breaks and runs of spaces made single spaces."""
    return " ".join(message.split())
