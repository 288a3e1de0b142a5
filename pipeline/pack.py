"""Tokenize + pack: mixed documents -> Arrow shards of `seq_len + 1` tokens with a manifest.

The Ray Data job is three steps:

1. `Encode` (an actor per CPU, so Arcade100k loads once per worker) reads one parquet row group at a
   time, `encode_ordinary`s every document, turns code documents into fill-in-the-middle form at
   `fim_rate`, and appends `<|endoftext|>`. Token counts in the manifest include that EOT.
2. Group documents into shuffle windows by a seeded hash of their id, and within a window order them
   by that hash. Windows are random samples of every source, so rows mix sources as the mixture
   intends; the order depends on ids and the seed only, never on Ray's scheduling.
3. `pack_window` concatenates a window's documents into rows and writes them as shards. Each window
   is one writer, so at most one partial row per window is padded or dropped.

Windows are the unit of resumption: a finished window leaves its shards and a record under
`.parts/`; a re-run skips it. When every window is done the shards are renamed to their global names
and `manifest.json` is written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.context import ShuffleStrategy

import tokenizer
from common.config import fingerprint
from pipeline.config import DataConfig
from pipeline.shards import (
    MANIFEST,
    Manifest,
    ShardError,
    ShardInfo,
    ShardSet,
    TokenizerInfo,
    file_sha256,
    manifest_hash,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard,
)

PARTS = ".parts"
STATE = ".pack-state.json"
VALID = "valid"
CODE_READERS = ("starcoder",)
ENCODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("key", pa.uint64()),
        ("window", pa.int64()),
        ("tokens", pa.list_(pa.int32())),
    ]
)
FIM_PREFIX = tokenizer.SPECIAL_TOKENS["<|fim_prefix|>"]
FIM_MIDDLE = tokenizer.SPECIAL_TOKENS["<|fim_middle|>"]
FIM_SUFFIX = tokenizer.SPECIAL_TOKENS["<|fim_suffix|>"]


def doc_key(seed: int, doc_id: str) -> int:
    """The seeded shuffle key of a document: the first 8 bytes of blake2b("{seed}:{id}"), big-endian."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def window_of(key: int, n_windows: int) -> int:
    return key % n_windows


def fim_tokens(enc: tokenizer.Arcade100k, text: str, rng: random.Random, spm_rate: float) -> np.ndarray:
    """StarCoder-style fill-in-the-middle: split at two random characters, emit PSM or SPM order.

    PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle (StarCoder's SPM variant, which
    keeps prefix and middle contiguous).
    """
    a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
    prefix, middle, suffix = (_encode(enc, part) for part in (text[:a], text[a:b], text[b:]))
    if rng.random() < spm_rate:
        parts = [[FIM_PREFIX, FIM_SUFFIX], suffix, [FIM_MIDDLE], prefix, middle]
    else:
        parts = [[FIM_PREFIX], prefix, [FIM_SUFFIX], suffix, [FIM_MIDDLE], middle]
    return np.concatenate([np.asarray(p, dtype=np.int32) for p in parts])


def _encode(enc: tokenizer.Arcade100k, text: str) -> np.ndarray:
    # encode_to_numpy with no special tokens allowed is encode_ordinary, without a Python list per doc.
    return enc.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).view(np.int32)


class Encode:
    """Ray Data callable class: one Arcade100k per worker, loaded once."""

    def __init__(
        self,
        seed: int,
        n_windows: int,
        code_sources: Iterable[str],
        fim_rate: float,
        fim_spm_rate: float,
        skip_windows: Iterable[int] = (),
    ):
        self.enc = tokenizer.load()
        self.seed = seed
        self.n_windows = n_windows
        self.code_sources = frozenset(code_sources)
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.skip_windows = frozenset(skip_windows)

    def __call__(self, units: pa.Table) -> pa.Table:
        """Encode the documents of the parquet row groups named in `units` (columns path, row_group)."""
        tables = [
            pq.ParquetFile(path).read_row_group(group, columns=["id", "text", "source"])
            for path, group in zip(
                units.column("path").to_pylist(), units.column("row_group").to_pylist(), strict=True
            )
        ]
        return self.encode(pa.concat_tables(tables))

    def encode(self, batch: pa.Table) -> pa.Table:
        """Encode a table of documents (columns id, text, source)."""
        ids = batch.column("id").to_pylist()
        keys = [doc_key(self.seed, i) for i in ids]
        windows = [window_of(k, self.n_windows) for k in keys]
        keep = [w not in self.skip_windows for w in windows]
        texts = batch.column("text").to_pylist()
        sources = batch.column("source").to_pylist()
        arrays, out_ids, out_sources, out_keys, out_windows = [], [], [], [], []
        for i, text in enumerate(texts):
            if not keep[i]:
                continue
            arrays.append(self._document(text, sources[i], keys[i]))
            out_ids.append(ids[i])
            out_sources.append(sources[i])
            out_keys.append(keys[i])
            out_windows.append(windows[i])
        offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        columns = [out_ids, out_sources, pa.array(out_keys, pa.uint64()), out_windows, tokens]
        return pa.table(columns, schema=ENCODED_SCHEMA)

    def _document(self, text: str | None, source: str, key: int) -> np.ndarray:
        # An empty or missing text is set aside (no tokens, not even <|endoftext|>) and counted.
        if not text:
            return np.zeros(0, dtype=np.int32)
        if source in self.code_sources and self.fim_rate > 0:
            rng = random.Random(key)
            if rng.random() < self.fim_rate:
                return np.append(
                    fim_tokens(self.enc, text, rng, self.fim_spm_rate), np.int32(self.enc.eot_id)
                )
        return np.append(_encode(self.enc, text), np.int32(self.enc.eot_id))


def pack_window(
    docs: pa.Table, parts_dir: str, seq_len: int, rows_per_shard: int, partial_row: str
) -> pa.Table:
    """Ray Data map_groups function: pack one window's documents into shards under `parts_dir`."""
    docs = docs.sort_by([("key", "ascending"), ("id", "ascending")])
    window = docs.column("window")[0].as_py()
    tokens = docs.column("tokens").combine_chunks()
    flat = tokens.flatten().to_numpy()
    lengths = np.diff(tokens.offsets.to_numpy())
    width = seq_len + 1
    n_full, tail = divmod(len(flat), width)
    if tail and partial_row == "pad":
        flat = np.concatenate([flat, np.full(width - tail, tokenizer.EOT_ID, dtype=np.int32)])
        rows, cost, kept_total = flat.reshape(-1, width), width - tail, len(flat) - (width - tail)
    else:
        rows, cost, kept_total = flat[: n_full * width].reshape(-1, width), tail, n_full * width
    shards = []
    for j, start in enumerate(range(0, len(rows), rows_per_shard)):
        path = Path(parts_dir) / f"w{window:06d}-{j:05d}.arrow"
        shards.append(write_shard(path, rows[start : start + rows_per_shard]).model_dump())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    kept = np.clip(kept_total - starts, 0, lengths)
    record = {
        "window": window,
        "shards": shards,
        "partial_row_tokens": int(cost),
        "sources": _source_counts(docs.column("source").to_pylist(), lengths, kept),
    }
    _write_record(Path(parts_dir), window, record)
    return pa.table({"window": [window]})


def _source_counts(sources: list[str], lengths: np.ndarray, kept: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per source, documents and tokens at three points: encoded, set aside as empty, and packed."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for source, n, k in zip(sources, lengths.tolist(), kept.tolist(), strict=True):
        stages = counts.setdefault(
            source, {s: {"docs": 0, "tokens": 0} for s in ("tokenized", "empty", "packed")}
        )
        stage = stages["tokenized"] if n else stages["empty"]
        stage["docs"] += 1
        stage["tokens"] += n
        if k:
            stages["packed"]["docs"] += 1
            stages["packed"]["tokens"] += k
    return counts


def _record_path(parts_dir: Path, window: int) -> Path:
    return parts_dir / f"w{window:06d}.json"


def _write_record(parts_dir: Path, window: int, record: dict[str, Any]) -> None:
    # Same atomic discipline as the shards: tmp name, fsync, rename; written after the window's shards.
    path = _record_path(parts_dir, window)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(record, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finished_windows(parts_dir: Path, n_windows: int) -> dict[int, dict[str, Any]]:
    """Windows whose record and every listed shard file are on disk: a re-run skips them."""
    done = {}
    for w in range(n_windows):
        path = _record_path(parts_dir, w)
        if path.is_file():
            record = json.loads(path.read_text())
            if all((parts_dir / s["file"]).is_file() for s in record["shards"]):
                done[w] = record
    return done


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


def pack(cfg: DataConfig) -> tuple[Manifest, bool]:
    """Pack `<work_dir>/valid` into `<out_dir>/valid` and `<work_dir>/mixed` into `<out_dir>`.

    Returns the training manifest and whether both folders were already complete (nothing to do).
    """
    work, out = Path(cfg.work_dir), Path(cfg.pack.out_dir)
    stats_path = work / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    valid, valid_skipped = None, True
    if (work / VALID).is_dir() and _count_docs(sorted((work / VALID).rglob("*.parquet"))):
        # Padded, not dropped: every held-out document counts for the validation loss.
        _, valid_skipped = pack_split(work / VALID, out / VALID, cfg, partial_row="pad")
        valid = VALID
    manifest, skipped = pack_split(
        work / "mixed",
        out,
        cfg,
        partial_row=cfg.pack.partial_row,
        valid=valid,
        sources=upstream_counts(stats),
        targets=target_shares(cfg, stats),
    )
    return manifest, skipped and valid_skipped


def upstream_counts(stats: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """Per source per stage documents and tokens from the earlier stages' stats.json."""
    return {
        name: {stage: {"docs": c["docs"], "tokens": c["tokens"]} for stage, c in s["stages"].items()}
        for name, s in stats.get("sources", {}).items()
    }


def target_shares(cfg: DataConfig, stats: dict[str, Any]) -> dict[str, float]:
    """The mixer's target share of tokens per source (stats.json), else the configured weights."""
    if mix := stats.get("mixture"):
        return {name: m["target_share"] for name, m in mix.items()}
    weights = {name: s.weight or 0.0 for name, s in cfg.sources.items()}
    return {name: w / (sum(weights.values()) or 1) for name, w in weights.items()}


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
    sources: dict[str, dict[str, dict[str, int]]] | None = None,
    targets: dict[str, float] | None = None,
) -> tuple[Manifest, bool]:
    """Pack every document under `src` into shards in `out`, resuming from finished windows.

    Returns the manifest and True when `out` already held this exact output (nothing was done).
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
            run_windows(files, parts, cfg, n_windows, skip=skip, partial_row=partial_row)
    done = finished_windows(parts, n_windows)
    records = [done.get(w) or _empty_record(w) for w in range(n_windows)]
    shards = _finalize(out, parts, records)
    if not shards:
        raise ShardError(f"{src}: fewer tokens than one row of {cfg.pack.seq_len + 1}; nothing to train on")
    enc = tokenizer.load()
    packed = _merge_sources({}, records)
    manifest = Manifest(
        seq_len=cfg.pack.seq_len,
        tokenizer=TokenizerInfo(
            name=enc.name, fingerprint=enc.fingerprint, n_vocab=enc.n_vocab, eot_id=enc.eot_id
        ),
        data_config=cfg.model_dump(mode="json"),
        data_config_hash=state["data_config_hash"],
        shards=shards,
        valid=valid,
        partial_row_tokens=sum(r["partial_row_tokens"] for r in records),
        sources=_merge_sources(sources or {}, records),
        mixture=mixture(packed, targets),
    )
    write_manifest(out, manifest)
    shutil.rmtree(parts)
    return manifest, False


def _empty_record(window: int) -> dict[str, Any]:
    # A window no document hashed into (possible when documents are few): nothing to write.
    return {"window": window, "shards": [], "partial_row_tokens": 0, "sources": {}}


def run_windows(
    files: list[Path], parts: Path, cfg: DataConfig, n_windows: int, skip: Iterable[int], partial_row: str
) -> None:
    """One Ray Data job: encode, group and pack every window not in `skip`."""
    from pipeline.run import start_ray

    start_ray()  # only when there is work: a complete folder is checked without Ray
    pack = cfg.pack
    code_sources = [name for name, s in cfg.sources.items() if s.reader in CODE_READERS]
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
    )
    # A sort-based shuffle runs as plain tasks; the hash shuffle's aggregator actors cost seconds to start.
    ray.data.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ds = ds.groupby("window", num_partitions=min(n_windows, 4 * n_cpus)).map_groups(
        pack_window,
        batch_format="pyarrow",
        fn_args=(str(parts), pack.seq_len, pack.rows_per_shard, partial_row),
    )
    ds.materialize()


def _finished_manifest(out: Path, state: dict[str, Any]) -> Manifest | None:
    """The existing manifest if `out` already holds the shards of this exact config and inputs."""
    state_path = out / STATE
    if not (out / MANIFEST).is_file() or not state_path.is_file():
        return None
    if json.loads(state_path.read_text()) != state:
        return None
    try:
        ShardSet(out, verify_checksums=False)
    except ShardError:
        return None
    return read_manifest(out)


def start_or_resume(out: Path, state: dict[str, Any]) -> None:
    """Keep `.parts/` from an interrupted run of the same config and inputs; otherwise start clean."""
    state_path = out / STATE
    same = state_path.is_file() and json.loads(state_path.read_text()) == state
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the new manifest lands
    if not same:
        clear_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_name(state_path.name + ".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, state_path)
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
                os.replace(source, target)
            elif not target.is_file() or file_sha256(target) != info.sha256:
                raise ShardError(f"{target}: missing after an interrupted finalize; delete {out} and re-run")
            shards.append(info)
    for stale in sorted(out.glob("shard-*.arrow"))[len(shards) :]:
        stale.unlink()
    return shards


def _merge_sources(
    upstream: dict[str, dict[str, dict[str, int]]], records: list[dict[str, Any]]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per source per stage counts: the earlier stages' (from stats.json) plus this stage's."""
    merged = {src: {stage: dict(c) for stage, c in stages.items()} for src, stages in upstream.items()}
    for record in records:
        for src, stages in record["sources"].items():
            for stage, counts in stages.items():
                target = merged.setdefault(src, {}).setdefault(stage, {"docs": 0, "tokens": 0})
                for k, v in counts.items():
                    target[k] = target.get(k, 0) + v
    return merged


def mixture(
    sources: dict[str, dict[str, dict[str, int]]], targets: dict[str, float] | None
) -> dict[str, dict[str, float]]:
    """Share of packed tokens per source, beside the target share when there is one."""
    packed = {src: stages.get("packed", {}).get("tokens", 0) for src, stages in sources.items()}
    total = sum(packed.values()) or 1
    out: dict[str, dict[str, float]] = {}
    for name in sorted({*packed, *(targets or {})}):
        out[name] = {"achieved": round(packed.get(name, 0) / total, 6)}
        if targets is not None:
            out[name]["target"] = round(targets.get(name, 0.0), 6)
    return out


def pack_job(cfg: DataConfig) -> Manifest:
    """`python -m pipeline pack`: pack on Ray, log the MLflow run, print a summary."""
    from pipeline.track import log_data_run  # MLflow is heavy: keep it out of the Ray workers' imports

    manifest, skipped = pack(cfg)
    out, work = Path(cfg.pack.out_dir), Path(cfg.work_dir)
    valid = read_manifest(out / manifest.valid) if manifest.valid else None
    digest = manifest_hash(out)
    artifacts = [work / "stats.json", work / "report.png", work / "report.md"]
    uri, run_id = log_data_run(out, manifest, digest, valid, artifacts, skipped)
    print(summary(out, manifest, valid, digest, skipped), flush=True)
    print(f"[pack] MLflow run {run_id} (experiment data) in {uri}", flush=True)
    return manifest


def summary(out: Path, m: Manifest, valid: Manifest | None, digest: str, skipped: bool) -> str:
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
