"""`python -m pipeline pack CONFIG`: mixed documents -> Arrow shards of `seq_len + 1` tokens with a manifest.

Each split is one job of Ray tasks in two steps: encode tasks (`encode.Encode`) each encode one parquet
row group and hand each document to the pack task of its shuffle window (chosen by its seeded key);
pack tasks (`window_packing.pack_windows`) pack each of their windows into shards under `<out>/.parts/`. A
finished window is skipped by a re-run. When every window is done the shards are renamed to their
global names and `manifest.json` is written last, so a folder with a manifest is complete. An out_dir
in object storage is packed into the work dir's `staged_shards` folder, then uploaded, manifest last
(`pipeline.shard_upload`).
"""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import tokenizer
from common.config import fingerprint
from common.files import check_output_folder, publish, remove_temporaries, write_json
from common.lock import LOCK_FILE, DirectoryLock, ObjectLock
from common.objectstore import is_url
from common.shards import (
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
from pipeline.cluster import job_metadata, start_ray
from pipeline.config import DataConfig
from pipeline.encode import (
    Encode,
    encode_row_groups,
    mismatch_in,
    parts_windows,
    todo_windows,
    tokenizer_info,
)
from pipeline.mix import shares, target_shares
from pipeline.shard_upload import check_remote_output, upload
from pipeline.sources import READERS
from pipeline.stage import Progress
from pipeline.track import log_data_run, summary
from pipeline.window_packing import SourceCounts, empty_record, finished_windows, pack_windows
from pipeline.workdir import WorkDir
from pipeline.workfiles import (
    LocalCopies,
    WorkPath,
    exists,
    glob,
    parquet_file,
    read_json,
    read_table,
    stamp,
)

PARTS = ".parts"
STATE = ".pack-state.json"
VALID = "valid"


def input_files(folder: WorkPath) -> list[WorkPath]:
    files = glob(folder, "**/*.parquet")
    if not files:
        raise FileNotFoundError(f"{folder}: no parquet files to pack; run the mix stage first (`make data`)")
    return files


def _inputs_fingerprint(files: list[WorkPath], root: WorkPath) -> list[list[Any]]:
    return [[str(f.relative_to(root)), *stamp(f)] for f in files]


def _count_docs(files: list[WorkPath]) -> int:
    return sum(parquet_file(f).metadata.num_rows for f in files)


def _check_schema(files: list[WorkPath]) -> None:
    for f in files:
        names = set(parquet_file(f).schema_arrow.names)
        if missing := {"id", "text", "source"} - names:
            raise ValueError(f"{f}: not a normalized document file, missing columns {sorted(missing)}")


def pack(cfg: DataConfig, verbose: bool = False) -> tuple[Manifest, bool]:
    """Pack `<work_dir>/valid` into `<out_dir>/valid` (per source) and `<work_dir>/mixed` into `<out_dir>`.

    Returns the training manifest and whether both folders were already complete (nothing to do).
    `verbose` shows Ray's own output besides the progress lines (`pipeline.cluster`). Holds the lock of
    `<out_dir>` throughout: another job in it raises LockError before anything is touched. An out_dir
    that holds anything but an earlier pack's output is refused (OutputPathError), before the lock.
    An out_dir URL is packed into `staged_shards` of the work dir (locked too), then uploaded.
    """
    if is_url(cfg.pack.out_dir):
        return _pack_to_store(cfg, verbose)
    check_output_folder(cfg.pack.out_dir, is_pack_output, "shards that `pipeline pack` wrote")
    with DirectoryLock(cfg.pack.out_dir):
        return _pack_locked(cfg, Path(cfg.pack.out_dir), verbose)


def _pack_to_store(cfg: DataConfig, verbose: bool) -> tuple[Manifest, bool]:
    staged = WorkDir(cfg.work_dir).staged_shards
    check_remote_output(cfg.pack.out_dir)
    check_output_folder(staged, is_pack_output, "shards that `pipeline pack` wrote")
    with ObjectLock(cfg.pack.out_dir), DirectoryLock(staged):
        manifest, skipped = _pack_locked(cfg, staged, verbose)
        put = upload(staged, cfg.pack.out_dir)
    print(f"[pack] {cfg.pack.out_dir}: {put} objects put (the manifest last)", flush=True)
    return manifest, skipped and not put


def _pack_locked(cfg: DataConfig, out: Path, verbose: bool) -> tuple[Manifest, bool]:
    work = WorkDir(cfg.work_dir)
    stats = read_json(work.stats_json) if exists(work.stats_json) else {}
    valid, valid_skipped = None, True
    if exists(work.valid_dir) and _count_docs(glob(work.valid_dir, "**/*.parquet")):
        _, valid_skipped = pack_valid(work.valid_dir, out / VALID, cfg, verbose)
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


def plan_split(
    src: WorkPath, cfg: DataConfig, partial_row: str, files: list[WorkPath] | None = None
) -> tuple[list[WorkPath], int, dict[str, Any]]:
    """Input files (`files`, else every one under `src`), number of shuffle windows, and the state that
    names this exact piece of work."""
    files = input_files(src) if files is None else files
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
    src: WorkPath,
    out: Path,
    cfg: DataConfig,
    *,
    partial_row: str,
    valid: str | None = None,
    sources: SourceCounts | None = None,
    targets: dict[str, float] | None = None,
    verbose: bool = False,
    files: list[WorkPath] | None = None,
) -> tuple[Manifest, bool]:
    """Pack every document under `src` (or its `files` only) into shards in `out`, resuming from
    finished windows.

    Returns the manifest and True when `out` already held this exact output (nothing was done).
    """
    label = f"pack {src.name}" + (f" {out.name}" if files is not None else "")  # a per-source valid split
    files, n_windows, state = plan_split(src, cfg, partial_row, files)
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
            # Only when there is work: a complete folder is checked without Ray.
            start_ray(verbose, job_metadata("pack", cfg))
            name = label + (f" round {r + 1}/{rounds}" if rounds > 1 else "")
            progress = Progress(name, n_windows - len(skip), "windows")
            try:
                run_windows(files, parts, cfg, n_windows, skip, partial_row, progress)
            except ray.exceptions.RayTaskError as e:
                if (mismatch := mismatch_in(e)) is None:
                    raise
                raise mismatch from None  # the task's traceback adds nothing to its message
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


def pack_valid(src: WorkPath, out: Path, cfg: DataConfig, verbose: bool = False) -> tuple[Manifest, bool]:
    """Pack the held-out split per source, each into `<out>/<source>/`, and list every source's shards in
    `<out>/manifest.json` with their `source`: one shard folder to a reader of the whole split, rows of a
    single source each for per-source validation. Partial rows are padded, not dropped: every held-out
    document counts. Returns the listing and True when every source was already packed."""
    files = input_files(src)
    _check_schema(files)
    clear_outputs(out)  # the top level only: a split packed whole before, or the previous listing
    packed = {
        source: pack_split(src, out / source, cfg, partial_row="pad", verbose=verbose, files=source_files)
        for source, source_files in files_by_source(files).items()
    }
    shards = [
        info.model_copy(update={"file": f"{source}/{info.file}", "source": source})
        for source, (manifest, _) in packed.items()
        for info in manifest.shards
    ]
    counts = {name: c for manifest, _ in packed.values() for name, c in manifest.sources.items()}
    listing = next(iter(packed.values()))[0].model_copy(
        update={
            "shards": shards,
            "partial_row_tokens": sum(m.partial_row_tokens for m, _ in packed.values()),
            "sources": counts,
            "mixture": mixture(counts, None),
        }
    )
    write_manifest(out, listing)
    remove_unlisted_sources(out, set(packed))
    return listing, all(skipped for _, skipped in packed.values())


def remove_unlisted_sources(out: Path, sources: set[str]) -> None:
    """Delete the folders of sources the split no longer holds (a source removed from the config), after
    the new listing is written: a crash in between leaves unlisted folders, never a listed one missing.
    A folder that pack did not write is left alone."""
    for folder in out.iterdir():
        if folder.is_dir() and folder.name not in sources and is_pack_output(folder):
            shutil.rmtree(folder)


def is_pack_output(folder: Path) -> bool:
    """Whether `folder` is what `pack` writes, finished or not: it holds a manifest or a pack state, or
    nothing but the lock and folders that are (a first run stopped while packing the validation split)."""
    if (folder / MANIFEST).is_file() or (folder / STATE).is_file():
        return True
    rest = [path for path in folder.iterdir() if path.name != LOCK_FILE]
    return all(path.is_dir() and not path.is_symlink() and is_pack_output(path) for path in rest)


def files_by_source(files: list[WorkPath]) -> dict[str, list[WorkPath]]:
    """The document files of each source (a partition holds one source), sources in name order."""
    by_source: dict[str, list[WorkPath]] = {}
    for path in files:
        names = read_table(path, columns=["source"]).column("source").unique().to_pylist()
        if len(names) > 1:
            raise ValueError(f"{path}: documents of sources {sorted(names)}; a partition holds one source")
        for name in names:
            by_source.setdefault(name, []).append(path)
    return dict(sorted(by_source.items()))


# The tasks' functions live in light modules: a worker imports those, not this one (MLflow, seconds).
# Named for the dashboard's task list. A pack task writes the local folder `parts` of this process's
# node, so it runs there (`_on_this_node`); the encode tasks, the work, run anywhere.
_encode = ray.remote(num_cpus=1, name="pack encode")(encode_row_groups)
_pack = ray.remote(num_cpus=1, name="pack windows")(pack_windows)


def run_windows(
    files: list[WorkPath],
    parts: Path,
    cfg: DataConfig,
    n_windows: int,
    skip: Iterable[int],
    partial_row: str,
    progress: Progress,
) -> None:
    """One job of Ray tasks on a started Ray: encode tasks return their documents split by the pack
    task of their window, and each pack task packs its windows. Tasks, not actors: a worker process
    keeps Arcade100k loaded from one task and one job to the next, where an actor pool starts new
    processes that load it again for every job."""
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    todo = todo_windows(n_windows, frozenset(skip))
    windows = parts_windows(todo, min(len(todo), 4 * n_cpus))
    encoder = functools.partial(
        Encode,
        cfg.seed,
        n_windows,
        [name for name, s in cfg.sources.items() if READERS[s.reader].is_code],
        cfg.pack.fim_rate,
        cfg.pack.fim_spm_rate,
        sorted(skip),
        parts=len(windows),
        # The engine this process resolved (and the manifest records), not "auto" again on each node.
        engine=tokenizer.load(engine=cfg.pack.engine).engine,
        verify_rate=cfg.pack.verify_rate,
    )
    # One encode task per parquet row group, read by the task itself: text never passes through the
    # object store, only the encoded documents, once, from the encode task to their pack task.
    units = [(str(f), g) for f in files for g in range(parquet_file(f).num_row_groups)]
    started: list[ray.ObjectRef] = []
    try:
        encoded = _start_encodes(encoder, units, len(windows), cfg.pack.encoders, started)
        args = (str(parts), cfg.pack.seq_len, cfg.pack.rows_per_shard, partial_row)
        pack = _pack.options(scheduling_strategy=_on_this_node())
        packing = {pack.remote(*args, *(refs[i] for refs in encoded)): part for i, part in enumerate(windows)}
        started.extend(packing)
        while packing:
            [ready], _ = ray.wait(list(packing))
            ray.get(ready)
            for _ in packing.pop(ready):
                progress.advance()
    except Exception:
        # Let the started tasks end before the job fails, so none writes into `parts` afterwards. Not
        # ray.cancel: Ray 2.60 aborts the driver when it cancels a task that is completing at that moment
        # ("Tried to complete task that was not pending").
        ray.wait(started, num_returns=len(started))
        raise
    progress.finish()


def _on_this_node() -> NodeAffinitySchedulingStrategy:
    """Tasks that must run on the driver's node (they write its local folders)."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def _start_encodes(
    encoder: Callable[[], Encode],
    units: list[tuple[str, int]],
    parts: int,
    limit: int | None,
    started: list[ray.ObjectRef],
) -> list[list[ray.ObjectRef]]:
    """Start an encode task per unit, at most `limit` at once (None: as many as Ray schedules); return
    each one's table for each of the `parts` pack tasks. Each task is added to `started` as it starts."""
    encoded: list[list[ray.ObjectRef]] = []
    running: list[ray.ObjectRef] = []
    for unit in units:
        if limit is not None and len(running) >= limit:
            _, running = ray.wait(running, num_returns=1, fetch_local=False)
        refs = _encode.options(num_returns=parts).remote(encoder, [unit])
        encoded.append(refs if parts > 1 else [refs])
        running.append(encoded[-1][0])
        started.append(encoded[-1][0])
    return encoded


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
    work = WorkDir(cfg.work_dir)
    # What was uploaded is the staged copy, byte for byte: the run records and summarizes that.
    out = work.staged_shards if is_url(cfg.pack.out_dir) else Path(cfg.pack.out_dir)
    valid = read_manifest(out / manifest.valid) if manifest.valid else None
    digest = manifest_hash(out)
    with LocalCopies() as local:
        reports = [work.stats_json, work.report_png, work.report_md]
        artifacts = [local(path) for path in reports if exists(path)]
        uri, run_id = log_data_run(out, manifest, digest, valid, artifacts, skipped)
    print(summary(out, manifest, valid, digest, skipped), flush=True)
    print(f"[pack] MLflow run {run_id} (experiment data) in {uri}", flush=True)
    return manifest
