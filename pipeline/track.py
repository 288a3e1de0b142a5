"""MLflow run of a data job: what went in (the config), what came out (counts, the manifest).

The store is the one training uses: `MLFLOW_TRACKING_URI` when set, else the sqlite database in
./mlruns with artifacts beside it. A training run tagged with a manifest hash finds the data run
that made those shards through the `manifest_hash` tag.
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from configs import flatten, mlflow_tracking_uri
from pipeline.shards import MANIFEST, Manifest

EXPERIMENT = "data"


def data_metrics(manifest: Manifest, valid: Manifest | None) -> dict[str, float]:
    """`<source>.<stage>.docs|tokens` for every stage, mixture shares, and the packed totals."""
    metrics: dict[str, float] = {
        "packed.rows": manifest.rows,
        "packed.tokens": manifest.tokens,
        "packed.shards": len(manifest.shards),
        "packed.partial_row_tokens": manifest.partial_row_tokens,
    }
    for source, stages in manifest.sources.items():
        for stage, counts in stages.items():
            for unit, n in counts.items():
                metrics[f"{source}.{stage}.{unit}"] = n
    for source, shares in manifest.mixture.items():
        for kind, share in shares.items():
            metrics[f"{source}.mixture.{kind}"] = share
    if valid is not None:
        metrics |= {"valid.rows": valid.rows, "valid.tokens": valid.tokens}
    return metrics


def log_data_run(
    out_dir: Path,
    manifest: Manifest,
    manifest_hash: str,
    valid: Manifest | None,
    artifacts: list[Path],
    skipped: bool,
) -> tuple[str, str]:
    """Log one run in experiment `data`; returns (tracking URI, run id)."""
    uri = mlflow_tracking_uri()
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        found.experiment_id if found else client.create_experiment(EXPERIMENT, _artifact_root(uri))
    )
    run_id = client.create_run(experiment_id, run_name=f"data-{manifest_hash[:12]}").info.run_id
    params = [Param(k, v) for k, v in flatten(manifest.data_config).items()]
    metrics = [Metric(k, float(v), 0, 0) for k, v in data_metrics(manifest, valid).items()]
    for start in range(0, max(len(params), len(metrics)), 100):  # MLflow's limit per batch
        client.log_batch(run_id, params=params[start : start + 100], metrics=metrics[start : start + 100])
    tags = {
        "manifest_hash": manifest_hash,
        "data_config_hash": manifest.data_config_hash,
        "tokenizer": manifest.tokenizer.fingerprint,
        "shards": str(out_dir.resolve()),
        "skipped": str(skipped).lower(),
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_artifact(run_id, str(out_dir / MANIFEST))
    if valid is not None:
        client.log_artifact(run_id, str(out_dir / manifest.valid / MANIFEST), artifact_path="valid")
    for path in artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return uri, run_id


def _artifact_root(uri: str) -> str | None:
    # Artifacts of a local sqlite store sit beside the database, as training's do.
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None
