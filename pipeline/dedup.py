"""Exact and MinHash-LSH near-duplicate removal across all sources, as partitioned stages.

1. `signature_partition` (per filtered partition): the exact hash of the normalized text and one key
   per LSH band, scattered into `bucket_partitions` files by key, so that every copy of a key lands
   in the same bucket partition; and the partition's MinHash signatures, a row per document.
2. `bucket_partition` (per bucket partition): documents sharing a key become edges to the smallest;
   an edge of a band key only when the two signatures agree on `min_similarity` of their values.
3. `components` (steps of tasks per node partition): connected components of the edges; every node
   but its component's smallest is dropped. Nodes order as (source priority, file, row), so the
   survivor is deterministic.

Every task holds one partition: of the corpus, of the signature keys, or of the duplicate edges, so
no step's memory grows with the corpus; each step's finished partitions survive a crash.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from common.files import atomic_write, read_json, write_json
from pipeline.config import DedupConfig
from pipeline.layout import ComponentsDir, WorkDir
from pipeline.plan import Partition
from pipeline.stage import Runner, Stage, run_in_process
from pipeline.storage import ParquetSink, write_table
from pipeline.text import normalize_for_dedup

EXACT, BAND = 0, 1
# `digest`: a hash of the document's whole signature, so that a key whose documents all have the same
# signature needs no comparison (0 when nothing is verified).
SIG_SCHEMA = pa.schema(
    [("kind", pa.int8()), ("key", pa.int64()), ("node", pa.int64()), ("digest", pa.int32())]
)
EDGE_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("kind", pa.int8())])
# The low 16 bits of each MinHash value: two different values agree there with probability 2^-16, too
# rarely to move a similarity estimate, at a quarter of the bytes.
STORED_MINHASH = np.uint16
PAIR_SCHEMA = pa.schema([("node", pa.int64()), ("other", pa.int64())])
NODE_SCHEMA = pa.schema([("node", pa.int64())])
DROPPED_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("reason", pa.string())])


def node_id(part_index: int, row: int) -> int:
    """A document's place in priority order: partitions are numbered in source order, then file order."""
    return (part_index << 32) | row


def node_range(part_index: int) -> tuple[int, int]:
    return part_index << 32, (part_index + 1) << 32


def minhash(normalized: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature (bands * rows values) of the word n-gram shingles of normalized text."""
    # Imported here, by the tasks that hash: numba and LLVM add about 150 MiB to a process (the driver's too).
    from pipeline.minhash import permutations, signature

    return signature(normalized, cfg.ngram, *permutations(cfg.bands * cfg.rows, cfg.seed))


def band_keys(sig: np.ndarray, cfg: DedupConfig) -> list[int]:
    r = cfg.rows
    return [
        _signed(xxhash.xxh64_intdigest(sig[i * r : (i + 1) * r].tobytes(), seed=i)) for i in range(cfg.bands)
    ]


def exact_key(normalized: str) -> int:
    return _signed(xxhash.xxh64_intdigest(normalized.encode("utf-8")))


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def bucket_partitions(cfg: DedupConfig, kept_docs: int) -> int:
    """How many bucket partitions, so that one holds about `rows_per_bucket_partition` signature rows
    (each document has one exact key and one key per band)."""
    return max(1, math.ceil(kept_docs * (cfg.bands + 1) / cfg.rows_per_bucket_partition))


def signature_stage(
    cfg: DedupConfig, work: WorkDir, parts: Sequence[Partition], buckets: int
) -> Stage[Partition]:
    return Stage(
        "minhash",
        parts,
        lambda part: signature_partition(part, cfg, work, buckets),
        lambda part: work.signatures_done(part.pid).exists(),
    )


def signature_partition(part: Partition, cfg: DedupConfig, work: WorkDir, buckets: int) -> dict[str, int]:
    """Stage-2 task: scatter one filtered partition's keys into the bucket partitions and, when LSH
    candidates are verified, store its signatures."""
    table = pq.read_table(work.filtered(part.pid), columns=["text"])
    kinds, keys, nodes, digests = [], [], [], []
    verify = cfg.min_similarity > 0
    minhashes = np.empty((len(table) if verify else 0, cfg.bands * cfg.rows), dtype=STORED_MINHASH)
    for row, text in enumerate(table.column("text").to_pylist()):
        normalized = normalize_for_dedup(text)
        node = node_id(part.index, row)
        signature = minhash(normalized, cfg)
        if verify:
            minhashes[row] = signature.astype(STORED_MINHASH)  # keeps the low bits
        doc_keys = [exact_key(normalized), *band_keys(signature, cfg)]
        kinds += [EXACT] + [BAND] * cfg.bands
        keys += doc_keys
        nodes += [node] * len(doc_keys)
        digests += [xxhash.xxh32_intdigest(signature.tobytes()) - (1 << 31) if verify else 0] * len(doc_keys)
    columns = {
        "kind": np.array(kinds, dtype=np.int8),
        "key": np.array(keys, dtype=np.int64),
        "node": nodes,
        "digest": np.array(digests, dtype=np.int32),
    }
    sig = pa.table(columns, schema=SIG_SCHEMA)
    if verify:
        write_minhashes(work, part.index, minhashes)
    write_signatures(work, part.pid, sig, buckets)
    write_json(work.signatures_done(part.pid), {"pid": part.pid, "docs": len(table)})
    return {"docs": len(table)}


def write_signatures(work: WorkDir, pid: str, sig: pa.Table, buckets: int) -> None:
    """Scatter one partition's (kind, key, node) rows into the bucket partitions, by key."""
    target = sig.column("key").to_numpy().view(np.uint64) % np.uint64(buckets)
    for j in range(buckets):
        write_table(work.signatures(pid, j), sig.filter(pa.array(target == j)))


def write_minhashes(work: WorkDir, index: int, minhashes: np.ndarray) -> None:
    """The stored signatures of partition number `index`, row r being node_id(index, r)'s."""
    atomic_write(work.minhashes(index), lambda f: np.save(f, minhashes, allow_pickle=False))


def bucket_stage(work: WorkDir, buckets: int, cfg: DedupConfig) -> Stage[int]:
    return Stage(
        "buckets",
        range(buckets),
        lambda bucket: bucket_partition(bucket, work, cfg),
        lambda bucket: work.edges(bucket).exists(),
    )


def bucket_partition(bucket: int, work: WorkDir, cfg: DedupConfig) -> dict[str, int]:
    """Stage-3 task: within one bucket partition, link every document of a key to that key's smallest node.

    Two passes over the signature files, a batch at a time: the least node of each distinct key, then
    an edge per row to its key's least node. A key shared by a million copies is one entry of the first
    pass, so memory follows the distinct keys of the partition, never the size of a duplicate cluster.
    A band key's edge is kept only when the two signatures agree on `min_similarity` of their values
    (an exact key's documents have the same text): each member is compared with the key's least node,
    the edge it would give, so the comparisons are as many as the edges, never all pairs of a key. A
    key whose members all have one signature digest (least = greatest), the copies of a page, needs
    no comparison at all."""
    files = work.bucket_signatures(bucket)
    columns = ("kind", "key", "node", "digest")
    folded = (((kind, key), (node, digest, digest)) for kind, key, node, digest in _batches(files, columns))
    keys, (least, low, high) = _fold(folded, (np.minimum, np.minimum, np.maximum))
    sink = ParquetSink(work.edges(bucket), EDGE_SCHEMA)
    stored = StoredMinhashes(work, cfg)
    dissimilar = 0
    for kind, key, node in _batches(files, columns[:3]):
        at = _lookup(keys, (kind, key))
        root = least[at]
        linked = root != node
        if cfg.min_similarity > 0:
            check = np.flatnonzero(linked & (kind == BAND) & (low[at] != high[at]))
            failed = check[stored.similarity(node[check], root[check]) < cfg.min_similarity]
            linked[failed] = False
            dissimilar += len(failed)
        sink.add_table(
            pa.table({"node": node[linked], "root": root[linked], "kind": kind[linked]}, schema=EDGE_SCHEMA)
        )
    sink.close()
    return {"edges": sink.count, "keys": len(least), "dissimilar": dissimilar}


class StoredMinhashes:
    """The stored signatures of every partition, memory-mapped (the page cache holds them, not the
    task), compared `VERIFY_ROWS` pairs at a time."""

    def __init__(self, work: WorkDir, cfg: DedupConfig):
        self.work, self.width = work, cfg.bands * cfg.rows
        # Bounded: a mapping holds a file descriptor, and a corpus may have tens of thousands of files.
        self.partition = functools.lru_cache(maxsize=256)(self._map)

    def _map(self, index: int) -> np.ndarray:
        return np.load(self.work.minhashes(index), mmap_mode="r", allow_pickle=False)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The share of equal stored values of the signatures of nodes a[i] and b[i]. A pair repeats
        when several bands of one document fall in this bucket partition: each is compared once."""
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        first = np.ones(len(a), dtype=bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        pair_of_row = np.empty(len(a), dtype=np.int64)
        pair_of_row[order] = np.cumsum(first) - 1
        a, b = a[first], b[first]
        shares = np.empty(len(a))
        for start in range(0, len(a), VERIFY_ROWS):
            chunk = slice(start, start + VERIFY_ROWS)
            shares[chunk] = np.count_nonzero(self.rows(a[chunk]) == self.rows(b[chunk]), axis=1) / self.width
        return shares[pair_of_row]

    def rows(self, nodes: np.ndarray) -> np.ndarray:
        part, row = nodes >> 32, nodes & 0xFFFFFFFF
        out = np.empty((len(nodes), self.width), dtype=STORED_MINHASH)
        for index in np.unique(part):
            at = part == index
            out[at] = self.partition(int(index))[row[at]]
        return out


# Connected components by alternating small-star and large-star steps (Kiveris et al., "Connected
# Components in MapReduce and Beyond", SoCC 2014): O(log n) steps even for long chains, and the edge
# count never grows. Node pairs are hash-partitioned by their first node; step k's task for partition
# j reads cc/s<k>/*/p<j>.parquet and scatters its output pairs into cc/s<k+1>/p<j>/, where its
# _DONE.json, written last, marks the producer finished.
#
# Every task reads its input twice, a batch at a time: once to fold each node's neighbours into a few
# numbers (least, greatest), once to map each pair through them. It holds one row per distinct node of
# its partition plus a batch, however many neighbours a node has: the centre of a star of a million
# duplicates is one row. Pairs are deduplicated per batch only, so a pair may repeat across batches;
# every step is defined on the set of pairs, and the folds (least, greatest) ignore repeats.


def component_partitions(work: WorkDir, cfg: DedupConfig) -> int:
    """Node partitions for `components`, so that one holds about `edges_per_component_partition` edges."""
    edges = sum(pq.ParquetFile(f).metadata.num_rows for f in work.edge_files())
    return max(1, math.ceil(edges / cfg.edges_per_component_partition))


def components(work: WorkDir, partitions: int = 1, run: Runner = run_in_process) -> dict[str, int]:
    """Stage 4: connected components of the duplicate edges, in `partitions` node partitions, each step
    a stage given to `run`. Writes dedup/dropped/: (node, root, reason) for every node but its
    component's smallest, the root, one file per node partition sorted by node, so that the split
    task of an input partition reads only the row groups of its node range. A re-run resumes after the
    last step whose partitions all finished.
    """
    cc = work.components
    edge_files = work.edge_files()
    _keep_steps_of(cc, {"partitions": partitions, "edges": [f.name for f in edge_files]})
    step = _last_complete_step(cc, len(edge_files), partitions)
    if step == 0:
        run(_scatter_stage(cc, edge_files, partitions))
        step = 1
    # A large-star step (even) that found no unsettled node ends the loop: its input is the result.
    while step < 3 or step % 2 == 0 or _unsettled(cc, step) > 0:
        for old, folder in cc.steps().items():
            if old < step:
                shutil.rmtree(folder)
        run(_star_stage(cc, step, partitions))
        step += 1
    run(_roots_stage(cc, step - 1, partitions))
    duplicates = sum(pq.ParquetFile(cc.roots(part)).metadata.num_rows for part in range(partitions))
    # One rename publishes every partition's file at once: dedup/dropped/ exists only when complete.
    shutil.rmtree(work.dropped, ignore_errors=True)
    os.replace(cc.roots_dir, work.dropped)
    shutil.rmtree(cc.root)
    return {"duplicates": duplicates, "steps": step}


def _keep_steps_of(cc: ComponentsDir, layout: dict[str, Any]) -> None:
    """Steps of another partitioning or of other edges cannot be reused: start those over."""
    if cc.layout.exists() and read_json(cc.layout) != layout:
        shutil.rmtree(cc.root)
    write_json(cc.layout, layout)


def _scatter_stage(cc: ComponentsDir, edge_files: list[Path], partitions: int) -> Stage[Path]:
    return Stage(
        "components step 0 (scatter)",
        edge_files,
        functools.partial(scatter_edges, cc=cc, partitions=partitions),
        lambda edge_file: cc.done(1, edge_file.stem).exists(),
    )


def _star_stage(cc: ComponentsDir, step: int, partitions: int) -> Stage[int]:
    return Stage(
        f"components step {step} ({'small' if step % 2 else 'large'}-star)",
        range(partitions),
        functools.partial(star_partition, step, cc=cc, partitions=partitions),
        lambda part: cc.done(step + 1, cc.producer(part)).exists(),
    )


def _roots_stage(cc: ComponentsDir, step: int, partitions: int) -> Stage[int]:
    return Stage(
        "components roots",
        range(partitions),
        functools.partial(root_partition, step, cc=cc),
        lambda part: cc.roots(part).exists(),
    )


def scatter_edges(edge_file: Path, cc: ComponentsDir, partitions: int) -> dict[str, int]:
    """Components step 0, per edge bucket: edges keyed by their larger end (`node`), as the first
    small-star step reads them, and the nodes of exact-duplicate edges, for the drop reason."""
    producer = edge_file.stem
    pairs = _Scatter(cc.output(1, producer), PAIR_SCHEMA, partitions)
    exact = _Scatter(cc.exact(producer), NODE_SCHEMA, partitions)
    for node, root, kind in _batches([edge_file], ("node", "root", "kind")):
        exact.add(np.unique(node[kind == EXACT]))
        pairs.add(node, root)
    exact.close()
    pairs.close()
    write_json(cc.done(1, producer), {"pairs": pairs.count})
    return {"pairs": pairs.count}


def star_partition(step: int, part: int, cc: ComponentsDir, partitions: int) -> dict[str, int]:
    """Components step k >= 1 for one node partition: small-star on odd steps, large-star on even ones."""
    files = cc.parts(cc.step(step), part)
    out = _Scatter(cc.output(step + 1, cc.producer(part)), PAIR_SCHEMA, partitions)
    if step % 2:
        stats = _small_star(files, out)
    else:
        stats = _large_star(files, out)
    out.close()
    stats = {"pairs": out.count, **stats}
    write_json(cc.done(step + 1, cc.producer(part)), stats)
    return stats


def root_partition(step: int, part: int, cc: ComponentsDir) -> dict[str, int]:
    """Last components step for one node partition, on the input of the large-star step that settled:
    every component is then a star around its smallest node, so a node's one smaller neighbour is its root."""
    (nodes,), (least,) = _fold(((n,), (o,)) for n, o in _pair_batches(cc.parts(cc.step(step), part)))
    leaf = least < nodes
    node, root = nodes[leaf], least[leaf]
    exact = np.concatenate([b[0] for b in _batches(cc.exact_parts(part), ("node",))] or [_EMPTY])
    reason = np.where(np.isin(node, exact), "exact_dup", "near_dup")
    sink = ParquetSink(cc.roots(part), DROPPED_SCHEMA)
    for start in range(0, max(1, len(node)), BATCH_ROWS):  # small row groups: the split reads a range
        rows = slice(start, start + BATCH_ROWS)
        columns = {"node": node[rows], "root": root[rows], "reason": reason[rows]}
        sink.add_table(pa.table(columns, schema=DROPPED_SCHEMA))
    sink.close()
    return {"duplicates": len(node), "nodes": len(nodes)}


def _small_star(files: list[Path], out: _Scatter) -> dict[str, int]:
    """Pairs keyed by their larger end: each node u and its smaller neighbours N link to m = min(N).
    Written in both directions, as the large-star step needs every node's whole neighbourhood."""
    (nodes,), (least,) = _fold(((n,), (o,)) for n, o in _pair_batches(files))
    for start in range(0, len(nodes), BATCH_ROWS):
        rows = slice(start, start + BATCH_ROWS)
        out.add_both(nodes[rows], least[rows])
    for node, other in _pair_batches(files):
        m = least[_lookup((nodes,), (node,))]
        moved = other != m
        out.add_both(other[moved], m[moved])
    return {"nodes": len(nodes)}


def _large_star(files: list[Path], out: _Scatter) -> dict[str, int]:
    """Pairs in both directions: each node u links its larger neighbours to m = min(u, neighbours),
    keyed by the larger end. Also counts the unsettled nodes, those that are neither a centre (no smaller
    neighbour) nor a leaf (one smaller neighbour, no larger one): with none, every component is a star
    around its smallest node."""
    folded = (((n,), (o, np.where(o < n, o, _NONE), o)) for n, o in _pair_batches(files))
    (nodes,), (least, greatest_smaller, greatest) = _fold(folded, (np.minimum, np.maximum, np.maximum))
    unsettled = (least < nodes) & ((greatest_smaller != least) | (greatest > nodes))
    centre = np.minimum(nodes, least)
    for node, other in _pair_batches(files):
        larger = other > node
        out.add(other[larger], centre[_lookup((nodes,), (node[larger],))])
    return {"nodes": len(nodes), "unsettled": int(unsettled.sum())}


BATCH_ROWS = 1 << 16
# Signature pairs compared at a time: two arrays of VERIFY_ROWS x bands x rows stored values.
VERIFY_ROWS = 1 << 11
_EMPTY = np.empty(0, dtype=np.int64)
_NONE = np.iinfo(np.int64).min


def _batches(files: Sequence[Path], columns: Sequence[str]) -> Iterator[list[np.ndarray]]:
    """The columns of every file, `BATCH_ROWS` rows at a time, as numpy arrays."""
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
            yield [batch.column(c).to_numpy() for c in columns]


def _pair_batches(files: Sequence[Path]) -> Iterator[list[np.ndarray]]:
    return _batches(files, ("node", "other"))


Groups = tuple[tuple[np.ndarray, ...], list[np.ndarray]]


def _group(keys: Sequence[np.ndarray], values: Sequence[np.ndarray], ufuncs: Sequence[np.ufunc]) -> Groups:
    """Distinct key tuples, sorted, and each value column reduced by its ufunc over each key's rows."""
    order = np.lexsort(tuple(keys[::-1]))
    keys = [k[order] for k in keys]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = functools.reduce(np.logical_or, (k[1:] != k[:-1] for k in keys))
    at = np.flatnonzero(starts)
    if not len(at):
        return tuple(k[:0] for k in keys), [v[:0] for v in values]
    return tuple(k[at] for k in keys), [u.reduceat(v[order], at) for v, u in zip(values, ufuncs, strict=True)]


def _fold(
    batches: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    ufuncs: Sequence[np.ufunc] = (np.minimum,),
) -> Groups:
    """`_group` over batches of (keys, values). It holds the groups so far plus partial groups of later
    batches, folded in whenever they outnumber the groups (or a batch): memory follows the distinct keys."""
    parts: list[Groups] = []
    held = groups = 0
    for keys, values in batches:
        parts.append(_group(keys, values, ufuncs))
        held += len(parts[-1][0][0])
        if held - groups >= max(BATCH_ROWS, groups):
            parts = [_merge(parts, ufuncs)]
            held = groups = len(parts[0][0][0])
    return _merge(parts, ufuncs) if parts else ((_EMPTY,), [_EMPTY for _ in ufuncs])


def _merge(parts: list[Groups], ufuncs: Sequence[np.ufunc]) -> Groups:
    keys = [np.concatenate(k) for k in zip(*(p[0] for p in parts), strict=True)]
    values = [np.concatenate(v) for v in zip(*(p[1] for p in parts), strict=True)]
    return _group(keys, values, ufuncs)


def _lookup(table: tuple[np.ndarray, ...], query: Sequence[np.ndarray]) -> np.ndarray:
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


class _Scatter:
    """One producer's output, its rows deduplicated per call and appended to the node partition of
    their first column; partitions that receive no row get no file."""

    def __init__(self, out: Path, schema: pa.Schema, partitions: int):
        self.out, self.schema, self.partitions = out, schema, partitions
        self.sinks: dict[int, ParquetSink] = {}
        self.count = 0

    def add(self, *columns: np.ndarray) -> None:
        if not len(columns[0]):
            return
        (*columns,), _ = _group(columns, [], [])
        dest = _node_partition(columns[0], self.partitions)
        order = np.argsort(dest, kind="stable")
        bounds = np.searchsorted(dest[order], np.arange(self.partitions + 1))
        for j in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[j] : bounds[j + 1]]
            table = pa.table([c[rows] for c in columns], schema=self.schema)
            if j not in self.sinks:
                self.sinks[j] = ParquetSink(ComponentsDir.part(self.out, int(j)), self.schema)
            self.sinks[j].add_table(table)
        self.count += len(columns[0])

    def add_both(self, a: np.ndarray, b: np.ndarray) -> None:
        """Pairs (a, b) and (b, a)."""
        self.add(np.concatenate([a, b]), np.concatenate([b, a]))

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        self.out.mkdir(parents=True, exist_ok=True)


def _node_partition(node: np.ndarray, partitions: int) -> np.ndarray:
    # Fibonacci hashing: the consecutive rows of one input file spread over all partitions.
    mixed = node.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def _last_complete_step(cc: ComponentsDir, edge_files: int, partitions: int) -> int:
    """The last step whose input is complete (0: none), from its producers' _DONE.json markers."""
    producers = {step: edge_files if step == 1 else partitions for step in cc.steps()}
    complete = [step for step, count in producers.items() if len(cc.done_markers(step)) == count]
    return max(complete, default=0)


def _unsettled(cc: ComponentsDir, step: int) -> int:
    return sum(read_json(f)["unsettled"] for f in cc.done_markers(step))
