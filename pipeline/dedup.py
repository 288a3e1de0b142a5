"""Exact and MinHash-LSH near-duplicate removal across all sources, as partitioned stages.

1. `signature_partition` (per filtered partition): the exact hash of the normalized text and one key
   per LSH band, scattered into `bucket_partitions` files by key, so that every copy of a key lands
   in the same bucket partition.
2. `bucket_partition` (per bucket partition): documents sharing a key become edges to the smallest.
3. `components` (steps of tasks per node partition): connected components of the edges; every node
   but its component's smallest is dropped. Nodes order as (source priority, file, row), so the
   survivor is deterministic.

Every task holds one partition: of the corpus, of the signature keys, or of the duplicate edges, so
no step's memory grows with the corpus; each step's finished partitions survive a crash.
"""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from common.files import read_json, write_json
from pipeline.config import DedupConfig
from pipeline.layout import ComponentsDir, WorkDir
from pipeline.plan import Partition
from pipeline.stage import Runner, Stage, run_in_process
from pipeline.storage import ParquetSink, write_table
from pipeline.text import normalize_for_dedup

MERSENNE = np.uint64((1 << 61) - 1)
EXACT, BAND = 0, 1
SHINGLE_BLOCK = 2048
SIG_SCHEMA = pa.schema([("kind", pa.int8()), ("key", pa.int64()), ("node", pa.int64())])
EDGE_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("kind", pa.int8())])
PAIR_SCHEMA = pa.schema([("node", pa.int64()), ("other", pa.int64())])
NODE_SCHEMA = pa.schema([("node", pa.int64())])
DROPPED_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("reason", pa.string())])


def node_id(part_index: int, row: int) -> int:
    """A document's place in priority order: partitions are numbered in source order, then file order."""
    return (part_index << 32) | row


def node_range(part_index: int) -> tuple[int, int]:
    return part_index << 32, (part_index + 1) << 32


@functools.cache
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # (a*x + b) mod p with the product wrapping at 2^64, as datatrove does: exact arithmetic would keep
    # the order of small x for every permutation, and the signatures would be correlated.
    a = rng.integers(1, int(MERSENNE), num_perm, dtype=np.uint64)
    b = rng.integers(0, int(MERSENNE), num_perm, dtype=np.uint64)
    return a, b


def minhash(normalized: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature (bands * rows values) of the word n-gram shingles of normalized text."""
    words = normalized.split()
    n = cfg.ngram
    grams = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    shingles = np.fromiter(
        (xxhash.xxh64_intdigest(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)
    )
    a, b = _permutations(cfg.bands * cfg.rows, cfg.seed)
    sig = np.full(len(a), MERSENNE, dtype=np.uint64)
    for start in range(0, len(shingles), SHINGLE_BLOCK):
        block = shingles[start : start + SHINGLE_BLOCK, None]
        sig = np.minimum(sig, ((block * a + b) % MERSENNE).min(axis=0))
    return sig


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
    """Stage-2 task: scatter one filtered partition's keys into the bucket partitions."""
    table = pq.read_table(work.filtered(part.pid), columns=["text"])
    kinds, keys, nodes = [], [], []
    for row, text in enumerate(table.column("text").to_pylist()):
        normalized = normalize_for_dedup(text)
        node = node_id(part.index, row)
        doc_keys = [exact_key(normalized), *band_keys(minhash(normalized, cfg), cfg)]
        kinds += [EXACT] + [BAND] * cfg.bands
        keys += doc_keys
        nodes += [node] * len(doc_keys)
    keys_arr = np.array(keys, dtype=np.int64)
    target = keys_arr.view(np.uint64) % np.uint64(buckets)
    sig = pa.table(
        {"kind": np.array(kinds, dtype=np.int8), "key": keys_arr, "node": np.array(nodes, dtype=np.int64)}
    )
    for j in range(buckets):
        write_table(work.signatures(part.pid, j), sig.filter(pa.array(target == j)).cast(SIG_SCHEMA))
    write_json(work.signatures_done(part.pid), {"pid": part.pid, "docs": len(table)})
    return {"docs": len(table)}


def bucket_stage(work: WorkDir, buckets: int) -> Stage[int]:
    return Stage(
        "buckets",
        range(buckets),
        lambda bucket: bucket_partition(bucket, work),
        lambda bucket: work.edges(bucket).exists(),
    )


def bucket_partition(bucket: int, work: WorkDir) -> dict[str, int]:
    """Stage-3 task: within one bucket partition, link every document of a key to that key's smallest node."""
    files = work.bucket_signatures(bucket)
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else SIG_SCHEMA.empty_table()
    table = table.sort_by([("kind", "ascending"), ("key", "ascending"), ("node", "ascending")])
    kind, key, node = (table.column(c).to_numpy() for c in ("kind", "key", "node"))
    starts = np.ones(len(key), dtype=bool)
    starts[1:] = (key[1:] != key[:-1]) | (kind[1:] != kind[:-1])
    root = node[np.maximum.accumulate(np.where(starts, np.arange(len(key)), 0))]
    linked = root != node
    edges = pa.table({"node": node[linked], "root": root[linked], "kind": kind[linked]}, schema=EDGE_SCHEMA)
    write_table(work.edges(bucket), edges)
    return {"edges": len(edges)}


# Connected components by alternating small-star and large-star steps (Kiveris et al., "Connected
# Components in MapReduce and Beyond", SoCC 2014): O(log n) steps even for long chains, and the edge
# count never grows. Node pairs are hash-partitioned by their first node; step k's task for partition
# j reads cc/s<k>/*/p<j>.parquet and scatters its output pairs into cc/s<k+1>/p<j>/, where its
# _DONE.json, written last, marks the producer finished.


def component_partitions(work: WorkDir, cfg: DedupConfig) -> int:
    """Node partitions for `components`, so that one holds about `edges_per_component_partition` edges."""
    edges = sum(pq.ParquetFile(f).metadata.num_rows for f in work.edge_files())
    return max(1, math.ceil(edges / cfg.edges_per_component_partition))


def components(work: WorkDir, partitions: int = 1, run: Runner = run_in_process) -> dict[str, int]:
    """Stage 4: connected components of the duplicate edges, in `partitions` node partitions, each step
    a stage given to `run`. Writes dedup/dropped.parquet: (node, root, reason) for every node but its
    component's smallest, the root. A re-run resumes after the last step whose partitions all finished.
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
    # One file for the split stage, streamed a partition at a time.
    sink = ParquetSink(work.dropped, DROPPED_SCHEMA)
    for part in range(partitions):
        sink.add_table(pq.read_table(cc.roots(part), schema=DROPPED_SCHEMA))
    sink.close()
    shutil.rmtree(cc.root)
    return {"duplicates": sink.count, "steps": step}


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
    edges = pq.read_table(edge_file, schema=EDGE_SCHEMA)
    node, root, kind = (edges.column(c).to_numpy() for c in ("node", "root", "kind"))
    _scatter({"node": np.unique(node[kind == EXACT])}, NODE_SCHEMA, cc.exact(producer), partitions)
    _scatter({"node": node, "other": root}, PAIR_SCHEMA, cc.output(1, producer), partitions)
    write_json(cc.done(1, producer), {"pairs": len(node)})
    return {"pairs": len(node)}


def star_partition(step: int, part: int, cc: ComponentsDir, partitions: int) -> dict[str, int]:
    """Components step k >= 1 for one node partition: small-star on odd steps, large-star on even ones."""
    pairs = _read(cc.parts(cc.step(step), part), PAIR_SCHEMA)
    node, other = pairs.column("node").to_numpy(), pairs.column("other").to_numpy()
    if step % 2:
        node, other = _small_star(node, other)
        stats = {"pairs": len(node)}
    else:
        node, other, unsettled = _large_star(node, other)
        stats = {"pairs": len(node), "unsettled": unsettled}
    producer = cc.producer(part)
    _scatter({"node": node, "other": other}, PAIR_SCHEMA, cc.output(step + 1, producer), partitions)
    write_json(cc.done(step + 1, producer), stats)
    return stats


def root_partition(step: int, part: int, cc: ComponentsDir) -> dict[str, int]:
    """Last components step for one node partition, on the input of the large-star step that settled:
    every component is then a star around its smallest node, so a node's one smaller neighbour is its root."""
    pairs = _read(cc.parts(cc.step(step), part), PAIR_SCHEMA)
    node, other, first = _adjacency(pairs.column("node").to_numpy(), pairs.column("other").to_numpy())
    leaf = first & (other < node)
    exact = _read(cc.exact_parts(part), NODE_SCHEMA).column("node").to_numpy()
    table = pa.table(
        {
            "node": node[leaf],
            "root": other[leaf],
            "reason": np.where(np.isin(node[leaf], exact), "exact_dup", "near_dup"),
        },
        schema=DROPPED_SCHEMA,
    )
    write_table(cc.roots(part), table)
    return {"duplicates": len(table)}


def _small_star(node: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs keyed by their larger end: each node u and its smaller neighbours N link to m = min(N).
    Returned in both directions, as the large-star step needs every node's whole neighbourhood."""
    node, other, first = _adjacency(node, other)
    least = other[first][np.cumsum(first) - 1]
    moved = other != least
    a = np.concatenate([node[first], other[moved]])
    b = np.concatenate([least[first], least[moved]])
    return np.concatenate([a, b]), np.concatenate([b, a])


def _large_star(node: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs in both directions: each node u links its larger neighbours to m = min(u, neighbours),
    keyed by the larger end. Also counts the unsettled nodes, those that are neither a centre (no smaller
    neighbour) nor a leaf (one smaller neighbour, no larger one): with none, every component is a star
    around its smallest node."""
    node, other, first = _adjacency(node, other)
    group = np.cumsum(first) - 1
    least = np.minimum(node[first], other[first])[group]
    larger = other > node
    groups = int(first.sum())
    smaller_count = np.bincount(group[~larger], minlength=groups)
    has_larger = np.bincount(group[larger], minlength=groups) > 0
    unsettled = int(((smaller_count > 1) | ((smaller_count == 1) & has_larger)).sum())
    return other[larger], least[larger], unsettled


def _adjacency(node: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pairs sorted by (node, other), and a mask of each node's first pair."""
    order = np.lexsort((other, node))
    node, other = node[order], other[order]
    distinct = np.ones(len(node), dtype=bool)
    distinct[1:] = (node[1:] != node[:-1]) | (other[1:] != other[:-1])
    node, other = node[distinct], other[distinct]
    first = np.ones(len(node), dtype=bool)
    first[1:] = node[1:] != node[:-1]
    return node, other, first


def _node_partition(node: np.ndarray, partitions: int) -> np.ndarray:
    # Fibonacci hashing: the consecutive rows of one input file spread over all partitions.
    mixed = node.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def _scatter(columns: dict[str, np.ndarray], schema: pa.Schema, out: Path, partitions: int) -> None:
    """Writes the node partitions of `out` with the rows whose first column falls in each (none if empty)."""
    dest = _node_partition(next(iter(columns.values())), partitions)
    order = np.argsort(dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(partitions + 1))
    for j in range(partitions):
        rows = order[bounds[j] : bounds[j + 1]]
        if len(rows):
            table = pa.table({name: col[rows] for name, col in columns.items()}, schema=schema)
            write_table(ComponentsDir.part(out, j), table)


def _read(files: list[Path], schema: pa.Schema) -> pa.Table:
    return (
        pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()
    )


def _last_complete_step(cc: ComponentsDir, edge_files: int, partitions: int) -> int:
    """The last step whose input is complete (0: none), from its producers' _DONE.json markers."""
    producers = {step: edge_files if step == 1 else partitions for step in cc.steps()}
    complete = [step for step, count in producers.items() if len(cc.done_markers(step)) == count]
    return max(complete, default=0)


def _unsettled(cc: ComponentsDir, step: int) -> int:
    return sum(read_json(f)["unsettled"] for f in cc.done_markers(step))
