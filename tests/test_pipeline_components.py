"""Distributed connected components (dedup stage 4) against an in-memory union-find, across node
partition counts, and resumed after a crash part-way through its steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from harness.stages import run_in_process
from pipeline.components import components
from pipeline.dedup import EDGE_SCHEMA, node_id
from pipeline.lsh import BAND, EXACT
from pipeline.stage import Stage, run_on_ray
from pipeline.storage import write_table
from pipeline.workdir import WorkDir


def random_graph(seed: int) -> list[tuple[int, int, int]]:
    """(node, root, kind) edges as the bucket stage writes them (root < node): long chains whose nodes
    are in random order, small clusters, and edges repeated in several buckets."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(node_id(rng.integers(0, 30, 6000), rng.integers(0, 500, 6000))))
    pairs = []
    for chain in (ids[:600], ids[600:900], ids[900:1000]):
        pairs += list(zip(chain[:-1], chain[1:], strict=True))
    rest = ids[1000:3000]
    pairs += [tuple(rng.choice(rest, 2, replace=False)) for _ in range(1500)]
    pairs += [pairs[i] for i in rng.integers(0, len(pairs), 200)]
    kinds = rng.choice([EXACT, BAND], len(pairs), p=[0.3, 0.7])
    return [(int(max(a, b)), int(min(a, b)), int(k)) for (a, b), k in zip(pairs, kinds, strict=True)]


def union_find_roots(edges: list[tuple[int, int, int]]) -> dict[int, tuple[int, str]]:
    """Every node but its component's smallest, with that smallest node and the drop reason."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node, root, _ in edges:
        a, b = find(node), find(root)
        parent[max(a, b)] = min(a, b)
    exact = {node for node, _, kind in edges if kind == EXACT}
    return {n: (find(n), "exact_dup" if n in exact else "near_dup") for n in list(parent) if find(n) != n}


def write_buckets(edges: list[tuple[int, int, int]], work: Path, buckets: int) -> None:
    rng = np.random.default_rng(buckets)
    target = rng.integers(0, buckets, len(edges))
    for j in range(buckets):
        rows = [e for e, t in zip(edges, target, strict=True) if t == j]
        table = pa.table(
            dict(zip(EDGE_SCHEMA.names, zip(*rows, strict=True), strict=True)), schema=EDGE_SCHEMA
        )
        write_table(WorkDir(work).edges(j), table)


def dropped(work: Path) -> dict[int, tuple[int, str]]:
    table = pq.read_table(work / "dedup" / "dropped").to_pylist()
    return {r["node"]: (r["root"], r["reason"]) for r in table}


@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_components_match_union_find(tmp_path, partitions):
    edges = random_graph(seed=partitions)
    write_buckets(edges, tmp_path, buckets=3)
    result = components(WorkDir(tmp_path), partitions, run_in_process)
    expected = union_find_roots(edges)
    assert dropped(tmp_path) == expected
    assert result["duplicates"] == len(expected)
    # A 600-node chain in random order settles in O(log n) steps, not O(n).
    assert result["steps"] < 40
    assert not (tmp_path / "dedup" / "cc").exists(), "the step files were left behind"


class Crash(Exception):
    pass


def test_components_resume_after_a_crash_on_ray(tmp_path):
    edges = random_graph(seed=11)
    write_buckets(edges, tmp_path, buckets=2)
    ran: list[tuple[str, int]] = []

    def crashing(stage: Stage) -> None:
        todo = stage.todo()
        if len(ran) == 5:  # the sixth stage dies after two of its partitions
            run_on_ray(dataclasses.replace(stage, tasks=todo[:2]))
            raise Crash(stage.name)
        ran.append((stage.name, len(todo)))
        run_on_ray(stage)

    def recording(stage: Stage) -> None:
        ran.append((stage.name, len(stage.todo())))
        run_on_ray(stage)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with pytest.raises(Crash) as crash:
            components(WorkDir(tmp_path), 5, crashing)
        assert not (tmp_path / "dedup" / "dropped").exists()
        first = len(ran)
        components(WorkDir(tmp_path), 5, recording)
    finally:
        ray.shutdown()
    # The resumed run starts at the step that crashed, with only its unfinished partitions.
    assert ran[first] == (str(crash.value), 3)
    assert dropped(tmp_path) == union_find_roots(edges)
