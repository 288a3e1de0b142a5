"""Window packing for the pack job: one shuffle window's encoded documents -> rows of `seq_len + 1` tokens.

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
import pyarrow.compute as pc

import tokenizer
from common.files import read_json, write_json
from common.shards import write_shard
from pipeline.counts import PACK_STEPS

SourceCounts = dict[str, dict[str, dict[str, int]]]


def pack_windows(
    parts_dir: str, seq_len: int, rows_per_shard: int, partial_row: str, *pieces: pa.Table
) -> None:
    """A pack task of `pipeline.pack_job`: pack the windows of the documents in `pieces` (tables of
    `ENCODED_SCHEMA`, one from each encode task) one after the other. A window no document hashed
    into writes nothing."""
    docs = pa.concat_tables(pieces)
    order = sort_order(docs, ["window", "key", "id"])
    windows = docs.column("window").to_numpy()[order]
    firsts = np.flatnonzero(np.diff(windows, prepend=-1)).tolist()  # each window's first document
    for first, end in zip(firsts, [*firsts[1:], len(order)], strict=True):
        _pack(docs, order[first:end], parts_dir, seq_len, rows_per_shard, partial_row)


def sort_order(docs: pa.Table, columns: list[str]) -> np.ndarray:
    """The indices of `docs` in ascending order of `columns`."""
    return pc.sort_indices(docs, sort_keys=[(c, "ascending") for c in columns]).to_numpy().astype(np.int64)


def _pack(
    docs: pa.Table, order: np.ndarray, parts_dir: str, seq_len: int, rows_per_shard: int, partial_row: str
) -> None:
    """Pack the documents of one window, taken in `order`, into shards under `parts_dir`."""
    window = docs.column("window")[int(order[0])].as_py()
    bodies = token_slices(docs.column("tokens"), order)
    lengths = np.array([len(b) for b in bodies], dtype=np.int64)
    width = seq_len + 1
    n_full, tail = divmod(int(lengths.sum()), width)
    if tail and partial_row == "pad":
        # The rows in one copy of the tokens, padding included.
        flat = np.concatenate([*bodies, np.full(width - tail, tokenizer.EOT_ID, dtype=np.int32)])
        rows, cost, kept_total = flat.reshape(-1, width), width - tail, len(flat) - (width - tail)
    else:
        flat = np.concatenate(bodies)
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
        "sources": source_counts(docs.column("source").take(order).to_pylist(), lengths, kept),
    }
    # Written after the window's shards: its presence says they are all there.
    write_json(record_path(Path(parts_dir), window), record, sort_keys=True)


def token_slices(tokens: pa.ChunkedArray, order: np.ndarray) -> list[np.ndarray]:
    """The token arrays of the documents at `order`, as views of the column's chunks (one from each
    encode task): the rows are then made in one copy of the tokens."""
    chunks = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in tokens.chunks]
    chunk_starts = np.cumsum([0] + [len(c) for c in tokens.chunks])
    chunk_of = np.searchsorted(chunk_starts, order, side="right") - 1
    slices = []
    for c, i in zip(chunk_of.tolist(), (order - chunk_starts[chunk_of]).tolist(), strict=True):
        offsets, values = chunks[c]
        slices.append(values[offsets[i] : offsets[i + 1]])
    return slices


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
