"""`python -m pipeline pack CONFIG`: mixed documents -> Arrow shards of `seq_len + 1` tokens with a manifest.

Each split is one Ray Data job of three steps: `encode.Encode` actors encode one parquet row group at a
time; documents are grouped into shuffle windows by their seeded key; `packing.pack_window` packs each
window into shards under `<out>/.parts/`. A finished window is skipped by a re-run. When every window
is done the shards are renamed to their global names and `manifest.json` is written last, so a folder
with a manifest is complete.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray
from ray.data.context import ShuffleStrategy

import tokenizer
from common.config import fingerprint
from common.files import publish, read_json, remove_temporaries, write_json
from pipeline.cluster import start_ray
from pipeline.config import DataConfig
from pipeline.encode import Encode, Reference, mismatch_in, tokenizer_info
from pipeline.layout import WorkDir
from pipeline.mix import shares, target_shares
from pipeline.packing import SourceCounts, empty_record, finished_windows, pack_window
from pipeline.shards import (
    MANIFEST,
    Manifest,
    ShardError,
    ShardInfo,
    ShardSet,
    file_sha256,
    manifest_hash,
    read_manifest,
    shard_name,
    write_manifest,
)
from pipeline.sources import READERS
from pipeline.stage import Progress
from pipeline.track import log_data_run, summary

PARTS = ".parts"
STATE = ".pack-state.json"
VALID = "valid"


def input_files(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no parquet files to pack; run the mix stage first (`make data`)")
    return files


def _inputs_fingerprint(files: list[Path], root: Path) -> list[list[Any]]:
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _count_docs(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _check_schema(files: list[Path]) -> None:
    for f in files:
        names = set(pq.read_schema(f).names)
        if missing := {"id", "text", "source"} - names:
            raise ValueError(f"{f}: not a normalized document file, missing columns {sorted(missing)}")


def pack(cfg: DataConfig, verbose: bool = False) -> tuple[Manifest, bool]:
    """Pack `<work_dir>/valid` into `<out_dir>/valid` and `<work_dir>/mixed` into `<out_dir>`.

    Returns the training manifest and whether both folders were already complete (nothing to do).
    `verbose` shows Ray's own output besides the progress lines (`pipeline.cluster`).
    """
    work, out = WorkDir(cfg.work_dir), Path(cfg.pack.out_dir)
    stats = read_json(work.stats_json) if work.stats_json.is_file() else {}
    valid, valid_skipped = None, True
    if work.valid_dir.is_dir() and _count_docs(sorted(work.valid_dir.rglob("*.parquet"))):
        # Padded, not dropped: every held-out document counts for the validation loss.
        _, valid_skipped = pack_split(work.valid_dir, out / VALID, cfg, partial_row="pad", verbose=verbose)
        valid = VALID
    manifest, skipped = pack_split(
        work.mixed_dir,
        out,
        cfg,
        partial_row=cfg.pack.partial_row,
        valid=valid,
        sources=upstream_counts(stats),
        targets=_targets(cfg, stats),
        verbose=verbose,
    )
    return manifest, skipped and valid_skipped


def upstream_counts(stats: dict[str, Any]) -> SourceCounts:
    """Per source per stage documents and tokens from the earlier stages' stats.json."""
    return {
        name: {stage: {"docs": c["docs"], "tokens": c["tokens"]} for stage, c in s["stages"].items()}
        for name, s in stats.get("sources", {}).items()
    }


def _targets(cfg: DataConfig, stats: dict[str, Any]) -> dict[str, float]:
    """The mixer's target share of tokens per source (stats.json), else the target from the config alone."""
    if mix := stats.get("mixture"):
        return {name: m["target_share"] for name, m in mix.items()}
    return target_shares(cfg)


def plan_split(src: Path, cfg: DataConfig, partial_row: str) -> tuple[list[Path], int, dict[str, Any]]:
    """Input files, number of shuffle windows, and the state that names this exact piece of work."""
    files = input_files(src)
    _check_schema(files)
    n_windows = max(1, math.ceil(_count_docs(files) / cfg.pack.shuffle_window))
    state = {
        "data_config_hash": fingerprint(cfg),
        "tokenizer": tokenizer.load().fingerprint,
        "inputs": _inputs_fingerprint(files, src),
        "partial_row": partial_row,
    }
    return files, n_windows, state


def pack_split(
    src: Path,
    out: Path,
    cfg: DataConfig,
    *,
    partial_row: str,
    valid: str | None = None,
    sources: SourceCounts | None = None,
    targets: dict[str, float] | None = None,
    verbose: bool = False,
    reference: Reference | None = None,
) -> tuple[Manifest, bool]:
    """Pack every document under `src` into shards in `out`, resuming from finished windows.

    Returns the manifest and True when `out` already held this exact output (nothing was done).
    `reference` replaces tiktoken in the encoders' exactness check (a seam for its tests).
    """
    files, n_windows, state = plan_split(src, cfg, partial_row)
    if (manifest := _finished_manifest(out, state)) is not None:
        return manifest, True
    start_or_resume(out, state)
    parts = out / PARTS
    rounds = min(cfg.pack.rounds, n_windows)
    for r in range(rounds):
        # A round shuffles only its windows' tokens, so the object store holds 1/rounds of the corpus.
        done = finished_windows(parts, n_windows)
        skip = set(done) | {w for w in range(n_windows) if w % rounds != r}
        if len(skip) < n_windows:
            start_ray(verbose)  # only when there is work: a complete folder is checked without Ray
            name = f"pack {src.name}" + (f" round {r + 1}/{rounds}" if rounds > 1 else "")
            progress = Progress(name, n_windows - len(skip), "windows")
            try:
                run_windows(files, parts, cfg, n_windows, skip, partial_row, progress, reference)
            except ray.exceptions.RayTaskError as e:
                if (mismatch := mismatch_in(e)) is None:
                    raise
                raise mismatch from None  # the actor's traceback adds nothing to its message
    done = finished_windows(parts, n_windows)
    records = [done.get(w) or empty_record(w) for w in range(n_windows)]
    shards = _finalize(out, parts, records)
    if not shards:
        raise ShardError(f"{src}: fewer tokens than one row of {cfg.pack.seq_len + 1}; nothing to train on")
    manifest = Manifest(
        seq_len=cfg.pack.seq_len,
        tokenizer=tokenizer_info(tokenizer.load(engine=cfg.pack.engine), cfg.pack.verify_rate),
        data_config=cfg.model_dump(mode="json"),
        data_config_hash=state["data_config_hash"],
        shards=shards,
        valid=valid,
        partial_row_tokens=sum(r["partial_row_tokens"] for r in records),
        sources=_merge_sources(sources or {}, records),
        mixture=mixture(_merge_sources({}, records), targets),
    )
    write_manifest(out, manifest)
    shutil.rmtree(parts)
    return manifest, False


def run_windows(
    files: list[Path],
    parts: Path,
    cfg: DataConfig,
    n_windows: int,
    skip: Iterable[int],
    partial_row: str,
    progress: Progress,
    reference: Reference | None = None,
) -> None:
    """One Ray Data job on a started Ray: encode, group and pack every window not in `skip`."""
    pack = cfg.pack
    code_sources = [name for name, s in cfg.sources.items() if READERS[s.reader].is_code]
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # One unit of work per parquet row group, read by the encoder itself: text never passes through
    # the object store, and every encoder gets work however Ray would have merged small files.
    units = [{"path": str(f), "row_group": g} for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(
        Encode,
        batch_format="pyarrow",
        batch_size=1,
        # Start with one actor and grow to one per CPU: a fixed pool of every CPU would starve the read.
        compute=ray.data.ActorPoolStrategy(size=min(len(units), pack.encoders or n_cpus)),
        fn_constructor_args=(
            cfg.seed,
            n_windows,
            code_sources,
            pack.fim_rate,
            pack.fim_spm_rate,
            sorted(skip),
        ),
        # The engine this process resolved (and the manifest records), not "auto" again on each node.
        fn_constructor_kwargs={
            "engine": tokenizer.load(engine=pack.engine).engine,
            "verify_rate": pack.verify_rate,
            "reference": reference,
        },
    )
    # A sort-based shuffle runs as plain tasks; the hash shuffle's aggregator actors cost seconds to start.
    ray.data.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ds = ds.groupby("window", num_partitions=min(n_windows, 4 * n_cpus)).map_groups(
        pack_window,
        batch_format="pyarrow",
        fn_args=(str(parts), pack.seq_len, pack.rows_per_shard, partial_row),
    )
    for _ in ds.iter_rows():  # one row per packed window
        progress.advance()
    progress.finish()


def _finished_manifest(out: Path, state: dict[str, Any]) -> Manifest | None:
    """The existing manifest if `out` already holds the shards of this exact config and inputs."""
    if not (out / MANIFEST).is_file() or not _same_state(out, state):
        return None
    try:
        ShardSet(out, verify_checksums=False)
    except ShardError:
        return None
    return read_manifest(out)


def _same_state(out: Path, state: dict[str, Any]) -> bool:
    return (out / STATE).is_file() and read_json(out / STATE) == state


def start_or_resume(out: Path, state: dict[str, Any]) -> None:
    """Keep `.parts/` from an interrupted run of the same config and inputs; otherwise start clean."""
    same = _same_state(out, state)
    if out.is_dir():
        remove_temporaries(out)  # what a killed writer left half-written
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the new manifest lands
    if not same:
        clear_outputs(out)
        write_json(out / STATE, state, sort_keys=True)
    (out / PARTS).mkdir(parents=True, exist_ok=True)


def clear_outputs(out: Path) -> None:
    """Remove what a previous pack wrote to `out` (and only that)."""
    if not out.is_dir():
        return
    for path in out.glob("shard-*.arrow"):
        path.unlink()
    for name in (MANIFEST, STATE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / PARTS, ignore_errors=True)


def _finalize(out: Path, parts: Path, records: list[dict[str, Any]]) -> list[ShardInfo]:
    """Rename window parts to global shard names in window order; safe to repeat after a crash."""
    shards = []
    for record in records:
        for part in record["shards"]:
            info = ShardInfo(**{**part, "file": shard_name(len(shards))})
            source, target = parts / part["file"], out / info.file
            if source.is_file():
                publish(source, target)
            elif not target.is_file() or file_sha256(target) != info.sha256:
                raise ShardError(f"{target}: missing after an interrupted finalize; delete {out} and re-run")
            shards.append(info)
    for stale in sorted(out.glob("shard-*.arrow"))[len(shards) :]:
        stale.unlink()
    return shards


def _merge_sources(upstream: SourceCounts, records: list[dict[str, Any]]) -> SourceCounts:
    """Per source per stage counts: the earlier stages' (from stats.json) plus this stage's."""
    merged = {src: {stage: dict(c) for stage, c in stages.items()} for src, stages in upstream.items()}
    for record in records:
        for src, stages in record["sources"].items():
            for stage, counts in stages.items():
                target = merged.setdefault(src, {}).setdefault(stage, {"docs": 0, "tokens": 0})
                for k, v in counts.items():
                    target[k] = target.get(k, 0) + v
    return merged


def mixture(sources: SourceCounts, targets: dict[str, float] | None) -> dict[str, dict[str, float]]:
    """Share of packed tokens per source, beside the target share when there is one."""
    achieved = shares({src: stages.get("packed", {}).get("tokens", 0) for src, stages in sources.items()})
    out: dict[str, dict[str, float]] = {}
    for name in sorted({*achieved, *(targets or {})}):
        out[name] = {"achieved": round(achieved.get(name, 0.0), 6)}
        if targets is not None:
            out[name]["target"] = round(targets.get(name, 0.0), 6)
    return out


def pack_job(cfg: DataConfig, verbose: bool = False) -> Manifest:
    """`python -m pipeline pack`: pack on Ray, log the MLflow run, print a summary."""
    manifest, skipped = pack(cfg, verbose)
    out, work = Path(cfg.pack.out_dir), WorkDir(cfg.work_dir)
    valid = read_manifest(out / manifest.valid) if manifest.valid else None
    digest = manifest_hash(out)
    artifacts = [work.stats_json, work.report_png, work.report_md]
    uri, run_id = log_data_run(out, manifest, digest, valid, artifacts, skipped)
    print(summary(out, manifest, valid, digest, skipped), flush=True)
    print(f"[pack] MLflow run {run_id} (experiment data) in {uri}", flush=True)
    return manifest
