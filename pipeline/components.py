"""Stage 4: connected components of the duplicate edges; every node but its component's smallest is
dropped (`components`). Nodes order as (source priority, file, row), so the survivor is deterministic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.groupby import BATCH_ROWS, EMPTY, batches, fold, group, lookup
from pipeline.lsh import EXACT
from pipeline.stage import Runner, Stage
from pipeline.storage import ParquetSink
from pipeline.workdir import ComponentsDir, WorkDir
from pipeline.workfiles import (
    WorkPath,
    exists,
    make_folder,
    parquet_file,
    publish_folder,
    read_json,
    remove,
    write_json,
)

PAIR_SCHEMA = pa.schema([("node", pa.int64()), ("other", pa.int64())])
NODE_SCHEMA = pa.schema([("node", pa.int64())])
DROPPED_SCHEMA = pa.schema([("node", pa.int64()), ("root", pa.int64()), ("reason", pa.string())])
_NONE = np.iinfo(np.int64).min


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
    edges = sum(parquet_file(f).metadata.num_rows for f in work.edge_files())
    return max(1, math.ceil(edges / cfg.edges_per_component_partition))


def components(work: WorkDir, partitions: int, run: Runner) -> dict[str, int]:
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
                remove(folder)
        run(_star_stage(cc, step, partitions))
        step += 1
    run(_roots_stage(cc, step - 1, partitions))
    duplicates = sum(parquet_file(cc.roots(part)).metadata.num_rows for part in range(partitions))
    # Every partition's file at once: dedup/dropped/ is published only when complete (`is_published`).
    publish_folder(cc.roots_dir, work.dropped)
    remove(cc.root)
    return {"duplicates": duplicates, "steps": step}


def _keep_steps_of(cc: ComponentsDir, layout: dict[str, Any]) -> None:
    """Steps of another partitioning or of other edges cannot be reused: start those over."""
    if exists(cc.layout) and read_json(cc.layout) != layout:
        remove(cc.root)
    write_json(cc.layout, layout)


def _scatter_stage(cc: ComponentsDir, edge_files: list[WorkPath], partitions: int) -> Stage[WorkPath]:
    return Stage(
        "components step 0 (scatter)",
        edge_files,
        functools.partial(scatter_edges, cc=cc, partitions=partitions),
        lambda edge_file: exists(cc.done(1, edge_file.stem)),
    )


def _star_stage(cc: ComponentsDir, step: int, partitions: int) -> Stage[int]:
    return Stage(
        f"components step {step} ({'small' if step % 2 else 'large'}-star)",
        range(partitions),
        functools.partial(star_partition, step, cc=cc, partitions=partitions),
        lambda part: exists(cc.done(step + 1, cc.producer(part))),
    )


def _roots_stage(cc: ComponentsDir, step: int, partitions: int) -> Stage[int]:
    return Stage(
        "components roots",
        range(partitions),
        functools.partial(root_partition, step, cc=cc),
        lambda part: exists(cc.roots(part)),
    )


def scatter_edges(edge_file: WorkPath, cc: ComponentsDir, partitions: int) -> dict[str, int]:
    """Components step 0, per edge bucket: edges keyed by their larger end (`node`), as the first
    small-star step reads them, and the nodes of exact-duplicate edges, for the drop reason."""
    producer = edge_file.stem
    pairs = _Scatter(cc.output(1, producer), PAIR_SCHEMA, partitions)
    exact = _Scatter(cc.exact(producer), NODE_SCHEMA, partitions)
    for node, root, kind in batches([edge_file], ("node", "root", "kind")):
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
    (nodes,), (least,) = fold(((n,), (o,)) for n, o in _pair_batches(cc.parts(cc.step(step), part)))
    leaf = least < nodes
    node, root = nodes[leaf], least[leaf]
    exact = np.concatenate([b[0] for b in batches(cc.exact_parts(part), ("node",))] or [EMPTY])
    reason = np.where(np.isin(node, exact), "exact_dup", "near_dup")
    sink = ParquetSink(cc.roots(part), DROPPED_SCHEMA)
    for start in range(0, max(1, len(node)), BATCH_ROWS):  # small row groups: the split reads a range
        rows = slice(start, start + BATCH_ROWS)
        columns = {"node": node[rows], "root": root[rows], "reason": reason[rows]}
        sink.add_table(pa.table(columns, schema=DROPPED_SCHEMA))
    sink.close()
    return {"duplicates": len(node), "nodes": len(nodes)}


def _small_star(files: list[WorkPath], out: _Scatter) -> dict[str, int]:
    """Pairs keyed by their larger end: each node u and its smaller neighbours N link to m = min(N).
    Written in both directions, as the large-star step needs every node's whole neighbourhood."""
    (nodes,), (least,) = fold(((n,), (o,)) for n, o in _pair_batches(files))
    for start in range(0, len(nodes), BATCH_ROWS):
        rows = slice(start, start + BATCH_ROWS)
        out.add_both(nodes[rows], least[rows])
    for node, other in _pair_batches(files):
        m = least[lookup((nodes,), (node,))]
        moved = other != m
        out.add_both(other[moved], m[moved])
    return {"nodes": len(nodes)}


def _large_star(files: list[WorkPath], out: _Scatter) -> dict[str, int]:
    """Pairs in both directions: each node u links its larger neighbours to m = min(u, neighbours),
    keyed by the larger end. Also counts the unsettled nodes, those that are neither a centre (no smaller
    neighbour) nor a leaf (one smaller neighbour, no larger one): with none, every component is a star
    around its smallest node."""
    folded = (((n,), (o, np.where(o < n, o, _NONE), o)) for n, o in _pair_batches(files))
    (nodes,), (least, greatest_smaller, greatest) = fold(folded, (np.minimum, np.maximum, np.maximum))
    unsettled = (least < nodes) & ((greatest_smaller != least) | (greatest > nodes))
    centre = np.minimum(nodes, least)
    for node, other in _pair_batches(files):
        larger = other > node
        out.add(other[larger], centre[lookup((nodes,), (node[larger],))])
    return {"nodes": len(nodes), "unsettled": int(unsettled.sum())}


def _pair_batches(files: Sequence[WorkPath]) -> Iterator[list[np.ndarray]]:
    return batches(files, ("node", "other"))


class _Scatter:
    """One producer's output, its rows deduplicated per call and appended to the node partition of
    their first column; partitions that receive no row get no file."""

    def __init__(self, out: WorkPath, schema: pa.Schema, partitions: int):
        self.out, self.schema, self.partitions = out, schema, partitions
        self.sinks: dict[int, ParquetSink] = {}
        self.count = 0

    def add(self, *columns: np.ndarray) -> None:
        if not len(columns[0]):
            return
        (*columns,), _ = group(columns, [], [])
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
        make_folder(self.out)


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
