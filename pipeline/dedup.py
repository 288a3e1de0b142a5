"""Exact and MinHash-LSH near-duplicate removal across all sources, as partitioned stages.

1. `signature_partition` (per filtered partition): the exact hash of the normalized text and one key
   per LSH band (pipeline/lsh.py), scattered into `bucket_partitions` files by key, so that every copy
   of a key lands in the same bucket partition; and the partition's MinHash signatures, a row per
   document.
2. `bucket_partition` (per bucket partition): documents sharing a key become edges to the smallest;
   an edge of a band key only when the two signatures agree on `min_similarity` of their values.
3. `components` (pipeline/components.py, steps of tasks per node partition): connected components of
   the edges; every node but its component's smallest is dropped. Nodes order as (source priority,
   file, row), so the survivor is deterministic.

Every task holds one partition: of the corpus, of the signature keys, or of the duplicate edges, so
no step's memory grows with the corpus; each step's finished partitions survive a crash.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import xxhash

from pipeline.config import DedupConfig
from pipeline.groupby import batches, fold, lookup
from pipeline.lsh import BAND, EXACT, band_keys, exact_key, minhash
from pipeline.normalize import normalize_for_dedup
from pipeline.plan import Partition
from pipeline.stage import Stage
from pipeline.storage import ParquetSink, write_table
from pipeline.workdir import WorkDir
from pipeline.workfiles import LocalCopies, atomic_write, exists, read_table, write_json

# `digest`: a hash of the document's whole signature, so that a key whose documents all have the same
# signature needs no comparison (0 when nothing is verified).
SIG_SCHEMA = pa.schema(
    [("kind", pa.int8()), ("key", pa.int64()), ("node", pa.int64()), ("digest", pa.int32())]
)
EDGE_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("kind", pa.int8())])
# The low 16 bits of each MinHash value: two different values agree there with probability 2^-16, too
# rarely to move a similarity estimate, at a quarter of the bytes.
STORED_MINHASH = np.uint16
# Signature pairs compared at a time: two arrays of VERIFY_ROWS x bands x rows stored values.
VERIFY_ROWS = 1 << 11


def node_id(part_index: int, row: int) -> int:
    """A document's place in priority order: partitions are numbered in source order, then file order."""
    return (part_index << 32) | row


def node_range(part_index: int) -> tuple[int, int]:
    return part_index << 32, (part_index + 1) << 32


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
        lambda part: exists(work.signatures_done(part.pid)),
    )


def signature_partition(part: Partition, cfg: DedupConfig, work: WorkDir, buckets: int) -> dict[str, int]:
    """Stage-2 task: scatter one filtered partition's keys into the bucket partitions and, when LSH
    candidates are verified, store its signatures."""
    table = read_table(work.filtered(part.pid), columns=["text"])
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
        lambda bucket: exists(work.edges(bucket)),
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
    folded = (((kind, key), (node, digest, digest)) for kind, key, node, digest in batches(files, columns))
    keys, (least, low, high) = fold(folded, (np.minimum, np.minimum, np.maximum))
    sink = ParquetSink(work.edges(bucket), EDGE_SCHEMA)
    stored = StoredMinhashes(work, cfg)
    dissimilar = 0
    for kind, key, node in batches(files, columns[:3]):
        at = lookup(keys, (kind, key))
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
    stored.local.close()
    return {"edges": sink.count, "keys": len(least), "dissimilar": dissimilar}


class StoredMinhashes:
    """The stored signatures of every partition, memory-mapped (the page cache holds them, not the
    task), compared `VERIFY_ROWS` pairs at a time; of a work dir in object storage, node-local copies
    (`workfiles.LocalCopies`)."""

    def __init__(self, work: WorkDir, cfg: DedupConfig):
        self.work, self.width, self.local = work, cfg.bands * cfg.rows, LocalCopies()
        # Bounded: a mapping holds a file descriptor, and a corpus may have tens of thousands of files.
        self.partition = functools.lru_cache(maxsize=256)(self._map)

    def _map(self, index: int) -> np.ndarray:
        return np.load(self.local(self.work.minhashes(index)), mmap_mode="r", allow_pickle=False)

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
