"""Window packing for pack: one shuffle window's encoded documents -> rows of `seq_len + 1` tokens.

Documents are grouped into windows by their seeded key and ordered by it within a window, so rows
mix the sources as the mixture intends and the order depends on ids and the seed only, never on Ray's
scheduling. Each window is one writer: at most one partial row per window is padded or dropped.

A window is also the unit of resumption: its shards `w<window>-<j>.arrow` and then its record
`w<window>.json` land in the parts folder, and a window whose record and shards are there is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import tokenizer
from common.files import read_json, write_json
from pipeline.counts import PACK_STEPS
from pipeline.shards import write_shard

SourceCounts = dict[str, dict[str, dict[str, int]]]


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
        "sources": source_counts(docs.column("source").to_pylist(), lengths, kept),
    }
    # Written after the window's shards: its presence says they are all there.
    write_json(record_path(Path(parts_dir), window), record, sort_keys=True)
    return pa.table({"window": [window]})


def source_counts(sources: list[str], lengths: np.ndarray, kept: np.ndarray) -> SourceCounts:
    """Per source, documents and tokens at three points: encoded, set aside as empty, and packed."""
    tokenized, empty, packed = PACK_STEPS
    counts: SourceCounts = {}
    for source, n, k in zip(sources, lengths.tolist(), kept.tolist(), strict=True):
        stages = counts.setdefault(source, {s: {"docs": 0, "tokens": 0} for s in PACK_STEPS})
        stage = stages[tokenized] if n else stages[empty]
        stage["docs"] += 1
        stage["tokens"] += n
        if k:
            stages[packed]["docs"] += 1
            stages[packed]["tokens"] += k
    return counts


def record_path(parts_dir: Path, window: int) -> Path:
    return parts_dir / f"w{window:06d}.json"


def finished_windows(parts_dir: Path, n_windows: int) -> dict[int, dict[str, Any]]:
    """Windows whose record and every listed shard file are on disk: a re-run skips them."""
    done = {}
    for w in range(n_windows):
        path = record_path(parts_dir, w)
        if path.is_file():
            record = read_json(path)
            if all((parts_dir / s["file"]).is_file() for s in record["shards"]):
                done[w] = record
    return done


def empty_record(window: int) -> dict[str, Any]:
    """The record of a window no document hashed into (possible when documents are few)."""
    return {"window": window, "shards": [], "partial_row_tokens": 0, "sources": {}}
