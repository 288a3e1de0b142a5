"""What a pack job reports: its MLflow run (what went in, the config; what came out, counts and the
manifest) and the summary it prints.

The store is the one training uses: `MLFLOW_TRACKING_URI` when set, else the sqlite database in
./mlruns with artifacts beside it. A training run tagged with a manifest hash finds the data run
that made those shards through the `manifest_hash` tag.
"""

from __future__ import annotations

from pathlib import Path

from common.config import flatten
from common.shards import MANIFEST, Manifest
from common.tracking import Tracker, git_commit

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
    tags = {
        "manifest_hash": manifest_hash,
        "data_config_hash": manifest.data_config_hash,
        "tokenizer": manifest.tokenizer.fingerprint,
        "shards": str(out_dir.resolve()),
        "skipped": str(skipped).lower(),
        "git_commit": git_commit(),
    }
    params = flatten(manifest.data_config)
    tracker = Tracker.open(EXPERIMENT, f"data-{manifest_hash[:12]}", params=params, tags=tags)
    tracker.log_metrics(data_metrics(manifest, valid), step=0)
    tracker.log_artifact(out_dir / MANIFEST)
    if valid is not None:
        tracker.log_artifact(out_dir / manifest.valid / MANIFEST, artifact_path="valid")
    for path in artifacts:
        if path.is_file():
            tracker.log_artifact(path)
    tracker.finish()
    return tracker.uri, tracker.run_id


def summary(out: Path, m: Manifest, valid: Manifest | None, digest: str, skipped: bool) -> str:
    """The lines `python -m pipeline pack` prints: the shards, the validation split, the mixture."""
    state = "already complete for this config and inputs, nothing to do" if skipped else "written"
    lines = [
        f"[pack] {out}: {state}",
        f"[pack] {len(m.shards)} shards, {m.rows:,} rows of {m.seq_len + 1} tokens, {m.tokens:,} tokens "
        f"({m.partial_row_tokens:,} lost to partial rows), manifest sha256 {digest[:16]}",
    ]
    if valid is not None:
        lines.append(f"[pack] validation: {out / m.valid}: {valid.rows:,} rows, {valid.tokens:,} tokens")
    lines.append(f"[pack] {'source':<12} {'docs':>9} {'tokens':>13} {'share':>7} {'target':>7}")
    for name, shares in m.mixture.items():
        packed = m.sources.get(name, {}).get("packed", {"docs": 0, "tokens": 0})
        target = f"{shares['target']:7.3f}" if "target" in shares else "      -"
        docs, tokens = packed["docs"], packed["tokens"]
        lines.append(f"[pack] {name:<12} {docs:>9,} {tokens:>13,} {shares['achieved']:7.3f} {target}")
    return "\n".join(lines)
