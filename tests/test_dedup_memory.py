"""Dedup memory does not grow with a duplicate cluster: one boilerplate page repeated N times (and near
copies of it) deduplicates to one copy, and no bucket or components task holds more than a bound set by
the partition sizes, for a cluster four times larger as for the smaller one. Documents that share a band
key with the page but not enough of its signature stay (the bucket task verifies every band edge).

A task's memory is measured as its peak of numpy allocations (tracemalloc traces numpy's buffers), the
arrays that hold keys, nodes and pairs: what the old design held a whole cluster in."""

from __future__ import annotations

import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import dedup, groupby
from pipeline.components import component_partitions, components
from pipeline.config import DedupConfig
from pipeline.dedup import SIG_SCHEMA, STORED_MINHASH, node_id
from pipeline.lsh import BAND, EXACT
from pipeline.stage import Stage
from pipeline.workdir import WorkDir

CFG = DedupConfig(rows_per_bucket_partition=150_000, edges_per_component_partition=150_000)
DOCS_PER_PARTITION = 10_000
UNIQUE_DOCS = 10_000
NEAR_SHARED_BANDS = 8  # a near copy shares these bands with the page, the others are its own
COLLIDING_DOCS = 1_000  # share one band with the page, and no more of its signature


def plant(work: WorkDir, copies: int, seed: int) -> tuple[int, int]:
    """Signatures of `copies` exact copies of one page, `copies // 4` near copies of it, COLLIDING_DOCS
    documents that collide with it on one band and UNIQUE_DOCS others, in shuffled order over input
    partitions; returns (bucket partitions, the page's first node). A near copy's stored signature
    differs from the page's in one value of each band it does not share (similarity 0.95); only the
    page's copies share a signature digest, so its keys of copies alone need no comparison."""
    rng = np.random.default_rng(seed)
    near = copies // 4
    docs = copies + near + COLLIDING_DOCS + UNIQUE_DOCS
    order = rng.permutation(docs)  # doc d sits at position order[d]
    nodes = node_id(order // DOCS_PER_PARTITION, order % DOCS_PER_PARTITION).astype(np.int64)
    bands, r = CFG.bands, CFG.rows
    keys = rng.integers(-(2**63), 2**63 - 1, size=(docs, bands + 1), dtype=np.int64)
    page = rng.integers(-(2**63), 2**63 - 1, size=bands + 1, dtype=np.int64)
    keys[:copies] = page
    near_docs, colliding = slice(copies, copies + near), slice(copies + near, copies + near + COLLIDING_DOCS)
    keys[near_docs, 1 : 1 + NEAR_SHARED_BANDS] = page[1 : 1 + NEAR_SHARED_BANDS]
    keys[colliding, bands] = page[bands]
    minhashes = rng.integers(0, 2**16, size=(docs, bands * r), dtype=STORED_MINHASH)
    own = minhashes[near_docs, NEAR_SHARED_BANDS * r :: r].copy()
    minhashes[:copies] = minhashes[near_docs] = minhashes[0]
    minhashes[near_docs, NEAR_SHARED_BANDS * r :: r] = own
    minhashes[colliding, (bands - 1) * r :] = minhashes[0, (bands - 1) * r :]
    digests = rng.integers(-(2**31), 2**31 - 1, size=docs, dtype=np.int32)
    digests[:copies] = digests[0]
    kinds = np.array([EXACT] + [BAND] * bands, dtype=np.int8)
    buckets = dedup.bucket_partitions(CFG, docs)
    part = order // DOCS_PER_PARTITION
    for p in np.unique(part):
        rows = np.flatnonzero(part == p)
        stored = np.empty((len(rows), minhashes.shape[1]), dtype=STORED_MINHASH)
        stored[order[rows] % DOCS_PER_PARTITION] = minhashes[rows]
        dedup.write_minhashes(work, int(p), stored)
        sig = pa.table(
            {
                "kind": np.tile(kinds, len(rows)),
                "key": keys[rows].ravel(),
                "node": np.repeat(nodes[rows], bands + 1),
                "digest": np.repeat(digests[rows], bands + 1),
            },
            schema=SIG_SCHEMA,
        )
        dedup.write_signatures(work, f"p{p}", sig, buckets)
    return buckets, int(nodes[:copies].min())


def dedup_measured(work: WorkDir, buckets: int) -> dict[str, int]:
    """Buckets and components, every task run under tracemalloc: the peak bytes of each stage's
    largest task."""
    peaks: dict[str, int] = defaultdict(int)

    def measured(name: str, run, task) -> None:
        tracemalloc.start()
        try:
            run(task)
            peaks[name] = max(peaks[name], tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    for bucket in range(buckets):
        measured("buckets", lambda b: dedup.bucket_partition(b, work, CFG), bucket)

    def runner(stage: Stage) -> None:
        kind = stage.name.split("(")[-1].rstrip(")")  # scatter, small-star, large-star, components roots
        for task in stage.todo():
            measured(kind, stage.run, task)

    components(work, component_partitions(work, CFG), runner)
    return dict(peaks)


@pytest.mark.slow
def test_a_page_repeated_many_times_dedups_in_bounded_memory(tmp_path: Path):
    peaks = {}
    for copies in (24_000, 96_000):
        work = WorkDir(tmp_path / str(copies))
        buckets, page = plant(work, copies, seed=copies)
        peaks[copies] = dedup_measured(work, buckets)
        dropped = pq.read_table(work.dropped)
        # Exactly one copy is kept: every exact and near copy links to the page's first node.
        near = copies // 4
        assert len(dropped) == copies + near - 1
        assert set(dropped.column("root").to_pylist()) == {page}
        reasons = dropped.column("reason").to_pylist()
        assert reasons.count("exact_dup") == copies - 1 and reasons.count("near_dup") == near
    small, large = peaks.values()
    # A task holds the distinct keys (or nodes) of its partition and a batch of rows, in a few arrays of
    # 8-byte values, and a bucket task the stored signatures of VERIFY_ROWS pairs (two arrays of 2-byte
    # values and their comparison): the bound depends on the partition sizes and the batches, not on the
    # cluster. Only how full the batches are differs between the two corpora: one batch of slack.
    batch = 48 * groupby.BATCH_ROWS
    verify = 5 * dedup.VERIFY_ROWS * CFG.bands * CFG.rows
    bound = 32 * (CFG.rows_per_bucket_partition + CFG.edges_per_component_partition) + batch + verify
    for stage in small:
        assert large[stage] <= bound, (stage, large[stage], bound)
        assert large[stage] <= small[stage] + batch, (stage, small[stage], large[stage])
