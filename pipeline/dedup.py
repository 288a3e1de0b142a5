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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.config import DedupConfig
from pipeline.storage import ParquetSink, read_json, write_json, write_table
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


# Connected components by alternating small-star and large-star steps (Kiveris et al., "Connected
# Components in MapReduce and Beyond", SoCC 2014): O(log n) steps even for long chains, and the edge
# count never grows. Node pairs are hash-partitioned by their first node; step k's task for partition
# j reads cc/s<k>/*/p<j>.parquet and scatters its output pairs into cc/s<k+1>/p<j>/, where its
# _DONE.json, written last, marks the producer finished.

StageRunner = Callable[[str, list[dict], Callable[[dict], dict], Callable[[dict], bool]], None]


def run_in_process(
    name: str, tasks: list[dict], fn: Callable[[dict], dict], is_done: Callable[[dict], bool]
) -> None:
    """Runs a stage's unfinished tasks one by one, for direct calls; the pipeline passes its Ray runner."""
    for task in tasks:
        if not is_done(task):
            fn(task)


def component_partitions(work_dir: str, cfg: DedupConfig) -> int:
    """Node partitions for `components`, so that one holds about `edges_per_component_partition` edges."""
    edges = sum(pq.ParquetFile(f).metadata.num_rows for f in _edge_files(Path(work_dir)))
    return max(1, math.ceil(edges / cfg.edges_per_component_partition))


def components(task: dict, work_dir: str, run_stage: StageRunner = run_in_process) -> dict:
    """Stage 4: connected components of the duplicate edges, in `task["partitions"]` node partitions
    (1 if absent). Writes dedup/dropped.parquet: (node, root, reason) for every node but its
    component's smallest, the root. A re-run resumes after the last step whose partitions all finished.
    """
    work = Path(work_dir)
    cc = work / "dedup" / "cc"
    partitions = task.get("partitions", 1)
    edge_files = _edge_files(work)
    layout = {"partitions": partitions, "edges": [f.name for f in edge_files]}
    if (cc / "_LAYOUT.json").exists() and read_json(cc / "_LAYOUT.json") != layout:
        shutil.rmtree(cc)  # steps of another partitioning cannot be reused
    write_json(layout, cc / "_LAYOUT.json")
    step = _last_complete_step(cc, len(edge_files), partitions)
    if step == 0:
        run_stage(
            "components step 0 (scatter)",
            [{"edges": f.stem} for f in edge_files],
            lambda t: scatter_edges(t, work_dir, partitions),
            lambda t: (cc / _step_dir(1) / t["edges"] / "_DONE.json").exists(),
        )
        step = 1
    # A large-star step (even) that found no unsettled node ends the loop: its input is the result.
    while step < 3 or step % 2 == 0 or _unsettled(cc / _step_dir(step)) > 0:
        for old in cc.glob("s*"):
            if int(old.name[1:]) < step:
                shutil.rmtree(old)
        run_stage(
            f"components step {step} ({'small' if step % 2 else 'large'}-star)",
            [{"step": step, "part": j} for j in range(partitions)],
            lambda t: star_partition(t, work_dir, partitions),
            lambda t: (cc / _step_dir(t["step"] + 1) / f"p{t['part']:05d}" / "_DONE.json").exists(),
        )
        step += 1
    run_stage(
        "components roots",
        [{"step": step - 1, "part": j} for j in range(partitions)],
        lambda t: root_partition(t, work_dir),
        lambda t: (cc / "roots" / f"p{t['part']:05d}.parquet").exists(),
    )
    # One file for the split stage, streamed a partition at a time.
    sink = ParquetSink(work / "dedup" / "dropped.parquet", DROPPED_SCHEMA)
    for j in range(partitions):
        sink.writer.write_table(pq.read_table(cc / "roots" / f"p{j:05d}.parquet", schema=DROPPED_SCHEMA))
    sink.close()
    duplicates = pq.ParquetFile(work / "dedup" / "dropped.parquet").metadata.num_rows
    shutil.rmtree(cc)
    return {"duplicates": duplicates, "steps": step}


def scatter_edges(task: dict, work_dir: str, partitions: int) -> dict:
    """Components step 0, per edge bucket: edges keyed by their larger end (`node`), as the first
    small-star step reads them, and the nodes of exact-duplicate edges, for the drop reason."""
    cc = Path(work_dir) / "dedup" / "cc"
    edges = pq.read_table(Path(work_dir) / "dedup" / "edges" / f"{task['edges']}.parquet", schema=EDGE_SCHEMA)
    node, root, kind = (edges.column(c).to_numpy() for c in ("node", "root", "kind"))
    _scatter({"node": np.unique(node[kind == EXACT])}, NODE_SCHEMA, cc / "exact" / task["edges"], partitions)
    out = cc / _step_dir(1) / task["edges"]
    _scatter({"node": node, "other": root}, PAIR_SCHEMA, out, partitions)
    write_json({"pairs": len(node)}, out / "_DONE.json")
    return {"edges": task["edges"], "pairs": len(node)}


def star_partition(task: dict, work_dir: str, partitions: int) -> dict:
    """Components step k >= 1 for one node partition: small-star on odd steps, large-star on even ones."""
    cc = Path(work_dir) / "dedup" / "cc"
    step, part = task["step"], task["part"]
    pairs = _read_partition(cc / _step_dir(step), part, PAIR_SCHEMA)
    node, other = pairs.column("node").to_numpy(), pairs.column("other").to_numpy()
    if step % 2:
        node, other = _small_star(node, other)
        stats = {"pairs": len(node)}
    else:
        node, other, unsettled = _large_star(node, other)
        stats = {"pairs": len(node), "unsettled": unsettled}
    out = cc / _step_dir(step + 1) / f"p{part:05d}"
    _scatter({"node": node, "other": other}, PAIR_SCHEMA, out, partitions)
    write_json(stats, out / "_DONE.json")
    return {"step": step, "part": part, **stats}


def root_partition(task: dict, work_dir: str) -> dict:
    """Last components step for one node partition, on the input of the large-star step that settled:
    every component is then a star around its smallest node, so a node's one smaller neighbour is its root."""
    cc = Path(work_dir) / "dedup" / "cc"
    pairs = _read_partition(cc / _step_dir(task["step"]), task["part"], PAIR_SCHEMA)
    node, other, first = _adjacency(pairs.column("node").to_numpy(), pairs.column("other").to_numpy())
    leaf = first & (other < node)
    exact = _read_partition(cc / "exact", task["part"], NODE_SCHEMA).column("node").to_numpy()
    table = pa.table(
        {
            "node": node[leaf],
            "root": other[leaf],
            "reason": np.where(np.isin(node[leaf], exact), "exact_dup", "near_dup"),
        },
        schema=DROPPED_SCHEMA,
    )
    write_table(table, cc / "roots" / f"p{task['part']:05d}.parquet")
    return {"part": task["part"], "duplicates": len(table)}


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
    """Writes out/p<j>.parquet with the rows whose first column falls in partition j (none if empty)."""
    dest = _node_partition(next(iter(columns.values())), partitions)
    order = np.argsort(dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(partitions + 1))
    for j in range(partitions):
        rows = order[bounds[j] : bounds[j + 1]]
        if len(rows):
            table = pa.table({name: col[rows] for name, col in columns.items()}, schema=schema)
            write_table(table, out / f"p{j:05d}.parquet")


def _read_partition(folder: Path, part: int, schema: pa.Schema) -> pa.Table:
    files = sorted(folder.glob(f"*/p{part:05d}.parquet"))
    return (
        pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()
    )


def _edge_files(work: Path) -> list[Path]:
    return sorted((work / "dedup" / "edges").glob("b*.parquet"))


def _step_dir(step: int) -> str:
    return f"s{step:03d}"


def _last_complete_step(cc: Path, edge_files: int, partitions: int) -> int:
    """The last step whose input is complete (0: none), from its producers' _DONE.json markers."""
    complete = [
        int(d.name[1:])
        for d in cc.glob("s*")
        if len(list(d.glob("*/_DONE.json"))) == (edge_files if d.name == _step_dir(1) else partitions)
    ]
    return max(complete, default=0)


def _unsettled(step_dir: Path) -> int:
    return sum(read_json(f)["unsettled"] for f in step_dir.glob("*/_DONE.json"))
