"""Group-by over numpy columns, a batch of parquet rows at a time, for the dedup tasks.

`fold` reduces (keys, values) batches to one row per distinct key tuple while holding only the groups
and a batch, so a task's memory follows its distinct keys, never the rows that repeat them; `lookup`
finds the row of given keys in such a sorted key table.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from pipeline.workfiles import WorkPath, parquet_file

BATCH_ROWS = 1 << 16
EMPTY = np.empty(0, dtype=np.int64)


def batches(files: Sequence[WorkPath], columns: Sequence[str]) -> Iterator[list[np.ndarray]]:
    """The columns of every file, `BATCH_ROWS` rows at a time, as numpy arrays."""
    for f in files:
        for batch in parquet_file(f).iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
            yield [batch.column(c).to_numpy() for c in columns]


Groups = tuple[tuple[np.ndarray, ...], list[np.ndarray]]


def group(keys: Sequence[np.ndarray], values: Sequence[np.ndarray], ufuncs: Sequence[np.ufunc]) -> Groups:
    """Distinct key tuples, sorted, and each value column reduced by its ufunc over each key's rows."""
    order = np.lexsort(tuple(keys[::-1]))
    keys = [k[order] for k in keys]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = functools.reduce(np.logical_or, (k[1:] != k[:-1] for k in keys))
    at = np.flatnonzero(starts)
    if not len(at):
        return tuple(k[:0] for k in keys), [v[:0] for v in values]
    return tuple(k[at] for k in keys), [u.reduceat(v[order], at) for v, u in zip(values, ufuncs, strict=True)]


def fold(
    batches: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    ufuncs: Sequence[np.ufunc] = (np.minimum,),
) -> Groups:
    """`group` over batches of (keys, values). It holds the groups so far plus partial groups of later
    batches, folded in whenever they outnumber the groups (or a batch): memory follows the distinct keys."""
    parts: list[Groups] = []
    held = groups = 0
    for keys, values in batches:
        parts.append(group(keys, values, ufuncs))
        held += len(parts[-1][0][0])
        if held - groups >= max(BATCH_ROWS, groups):
            parts = [_merge(parts, ufuncs)]
            held = groups = len(parts[0][0][0])
    return _merge(parts, ufuncs) if parts else ((EMPTY,), [EMPTY for _ in ufuncs])


def _merge(parts: list[Groups], ufuncs: Sequence[np.ufunc]) -> Groups:
    keys = [np.concatenate(k) for k in zip(*(p[0] for p in parts), strict=True)]
    values = [np.concatenate(v) for v in zip(*(p[1] for p in parts), strict=True)]
    return group(keys, values, ufuncs)


def lookup(table: tuple[np.ndarray, ...], query: Sequence[np.ndarray]) -> np.ndarray:
    """The row of each query key tuple in a sorted distinct key table that holds them all: one key
    column, or a column of few values (the signature kind) then one of many."""
    if len(table) == 1:
        return np.searchsorted(table[0], query[0])
    rows = np.empty(len(query[0]), dtype=np.int64)
    for k in np.unique(query[0]):
        lo, hi = np.searchsorted(table[0], [k, k + 1])
        mask = query[0] == k
        rows[mask] = lo + np.searchsorted(table[1][lo:hi], query[1][mask])
    return rows
