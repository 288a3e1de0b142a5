"""Pile input files for the data job's hostile-input cases: seeded random documents, as JSON lines or as a
parquet table whose chosen text cells hold bytes that are not UTF-8, or nulls."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["cells_file", "cells_table", "documents", "jsonl"]


def documents(n: int, seed: int = 0) -> list[dict]:
    """Pile rows of seeded random words: they compress poorly, so a file spans several zstd blocks."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(3000)]
    return [{"text": f"doc {i} " + " ".join(rng.choices(words, k=150)), "meta": {}} for i in range(n)]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def cells_file(path: Path, rows: int, group_rows: int, odd: dict[int, bytes | None]) -> list[str]:
    """A pile parquet file whose text cells at the rows of `odd` hold the given bytes (invalid UTF-8, or
    None for a null); returns the texts of the other rows."""
    table, kept = cells_table(rows, odd)
    pq.write_table(table, path, row_group_size=group_rows)
    return kept


def cells_table(rows: int, odd: dict[int, bytes | None]) -> tuple[pa.Table, list[str]]:
    """The table of `cells_file`, and the texts of its rows not in `odd`."""
    texts: list[bytes | None] = [d["text"].encode() for d in documents(rows, seed=7)]
    for row, cell in odd.items():
        texts[row] = cell
    # Arrow's view of binary as string does not check UTF-8: the bytes are written as they are.
    column = pa.array(texts, pa.binary()).view(pa.string())
    table = pa.table({"text": column, "meta": pa.array([{"k": 1}] * rows)})
    return table, [t.decode() for i, t in enumerate(texts) if i not in odd]
