"""Exact and MinHash-LSH near-duplicate removal across all sources, as partitioned stages.

1. `signature_partition` (per filtered partition): the exact hash of the normalized text and one key
   per LSH band, scattered into `bucket_partitions` files by key, so that every copy of a key lands
   in the same bucket partition.
2. `bucket_partition` (per bucket partition): documents sharing a key become edges to the smallest.
3. `components` (one task over the edges only): connected components; every node but its
   component's smallest is dropped. Nodes order as (source priority, file, row), so the survivor is
   deterministic.

Memory of steps 1-2 is bounded by the partition sizes; step 3 holds only the duplicated documents
(16 bytes per edge end), not the corpus.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.config import DedupConfig
from pipeline.storage import write_json, write_table
from pipeline.text import normalize_for_dedup

MERSENNE = np.uint64((1 << 61) - 1)
EXACT, BAND = 0, 1
SHINGLE_BLOCK = 2048
SIG_SCHEMA = pa.schema([("kind", pa.int8()), ("key", pa.int64()), ("node", pa.int64())])
EDGE_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("kind", pa.int8())])


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


def signature_partition(task: dict, cfg: DedupConfig, work_dir: str, bucket_partitions: int) -> dict:
    """Stage-2 task: scatter one filtered partition's keys into the bucket partitions."""
    work = Path(work_dir)
    out = work / "dedup" / "sig" / task["pid"]
    table = pq.read_table(work / "filtered" / f"{task['pid']}.parquet", columns=["text"])
    kinds, keys, nodes = [], [], []
    for row, text in enumerate(table.column("text").to_pylist()):
        normalized = normalize_for_dedup(text)
        node = node_id(task["index"], row)
        doc_keys = [exact_key(normalized), *band_keys(minhash(normalized, cfg), cfg)]
        kinds += [EXACT] + [BAND] * cfg.bands
        keys += doc_keys
        nodes += [node] * len(doc_keys)
    keys_arr = np.array(keys, dtype=np.int64)
    target = keys_arr.view(np.uint64) % np.uint64(bucket_partitions)
    sig = pa.table(
        {"kind": np.array(kinds, dtype=np.int8), "key": keys_arr, "node": np.array(nodes, dtype=np.int64)}
    )
    for j in range(bucket_partitions):
        write_table(sig.filter(pa.array(target == j)).cast(SIG_SCHEMA), out / f"b{j:05d}.parquet")
    write_json({"pid": task["pid"], "docs": len(table)}, out / "_DONE.json")
    return {"pid": task["pid"], "docs": len(table)}


def bucket_partition(task: dict, work_dir: str) -> dict:
    """Stage-3 task: within one bucket partition, link every document of a key to that key's smallest node."""
    work = Path(work_dir)
    files = sorted((work / "dedup" / "sig").glob(f"*/b{task['bucket']:05d}.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else SIG_SCHEMA.empty_table()
    table = table.sort_by([("kind", "ascending"), ("key", "ascending"), ("node", "ascending")])
    kind, key, node = (table.column(c).to_numpy() for c in ("kind", "key", "node"))
    starts = np.ones(len(key), dtype=bool)
    starts[1:] = (key[1:] != key[:-1]) | (kind[1:] != kind[:-1])
    root = node[np.maximum.accumulate(np.where(starts, np.arange(len(key)), 0))]
    linked = root != node
    edges = pa.table({"node": node[linked], "root": root[linked], "kind": kind[linked]}, schema=EDGE_SCHEMA)
    write_table(edges, work / "dedup" / "edges" / f"b{task['bucket']:05d}.parquet")
    return {"bucket": task["bucket"], "edges": len(edges)}


def components(task: dict, work_dir: str) -> dict:
    """Stage-4 task: connected components of all edges; writes (node, root, reason) per dropped node.

    Vectorized min-label propagation with pointer jumping: each round gives both ends of every edge
    the smaller of their labels, then replaces each label by its label's label, until nothing changes.
    Labels are indices into the sorted node list, so each component ends labelled with its smallest node.
    """
    work = Path(work_dir)
    edges = pq.read_table(work / "dedup" / "edges", schema=EDGE_SCHEMA)
    src, dst = edges.column("node").to_numpy(), edges.column("root").to_numpy()
    nodes, index = np.unique(np.concatenate([src, dst]), return_inverse=True)
    u, v = index[: len(src)], index[len(src) :]
    label = np.arange(len(nodes))
    while True:
        low = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, low)
        np.minimum.at(new, v, low)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    dropped = label != np.arange(len(nodes))
    exact_nodes = np.unique(src[edges.column("kind").to_numpy() == EXACT])
    is_exact = np.isin(nodes[dropped], exact_nodes)
    table = pa.table(
        {
            "node": nodes[dropped],
            "root": nodes[label[dropped]],
            "reason": np.where(is_exact, "exact_dup", "near_dup"),
        }
    )
    write_table(table, work / "dedup" / "dropped.parquet")
    return {"duplicates": len(table)}
