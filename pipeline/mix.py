"""Stages 5-6: drop duplicates, hold out the validation split, then mix sources to their targets.

Every random choice is a hash of (seed, document id), so the output depends only on the seed and
the inputs, never on scheduling or on where a killed run stopped.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import DataConfig
from pipeline.dedup import node_range
from pipeline.storage import DOC_SCHEMA, write_json, write_table

DUPS_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the first 8 bytes of sha256 of the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_valid(doc_id: str, fraction: float) -> bool:
    return unit_hash(doc_id) < fraction


def split_partition(task: dict, cfg: DataConfig, work_dir: str) -> dict:
    """Stage-5 task: remove the partition's duplicates, then split it into train and validation."""
    work, pid = Path(work_dir), task["pid"]
    table = pq.read_table(work / "filtered" / f"{pid}.parquet")
    lo, hi = node_range(task["index"])
    dropped = pq.read_table(
        work / "dedup" / "dropped.parquet", filters=[("node", ">=", lo), ("node", "<", hi)]
    )
    dup_rows = (dropped.column("node").to_numpy() - lo).astype("int64")
    is_dup = [False] * len(table)
    for row in dup_rows.tolist():
        is_dup[row] = True
    dups = table.take(pa.array(dup_rows, type=pa.int64()))
    write_table(
        pa.table(
            {"id": dups.column("id"), "source": dups.column("source"), "reason": dropped.column("reason")},
            schema=DUPS_SCHEMA,
        ),
        work / "dups" / f"{pid}.parquet",
    )
    unique = table.filter(pa.array([not d for d in is_dup], pa.bool_()))
    valid_mask = pa.array(
        [in_valid(i, cfg.valid_fraction) for i in unique.column("id").to_pylist()], pa.bool_()
    )
    valid, train = unique.filter(valid_mask), unique.filter(pc.invert(valid_mask))
    write_table(valid.select(DOC_SCHEMA.names), work / "valid" / f"{pid}.parquet")
    write_table(train, work / "train" / f"{pid}.parquet")
    dup_reasons = Counter(dropped.column("reason").to_pylist())
    stats = {
        "pid": pid,
        "source": task["source"],
        "dedup": _count(unique),
        "dup_reasons": dict(dup_reasons),
        "valid": _count(valid),
        "train": _count(train),
    }
    write_json(stats, work / "stats" / "split" / f"{pid}.json")
    return {"pid": pid, "dups": int(sum(dup_reasons.values()))}


def _count(table: pa.Table) -> dict[str, int]:
    return {"docs": len(table), "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0)}


def mixing_rates(cfg: DataConfig, train_tokens: dict[str, int]) -> dict[str, float]:
    """Copies per document for each source: below 1 samples down, above 1 repeats."""
    if cfg.mix_by == "epochs":
        return {name: src.epochs for name, src in cfg.sources.items()}
    available = {name: t for name, t in train_tokens.items() if t > 0}
    weights = {name: cfg.sources[name].weight for name in available}
    total_weight = sum(weights.values())
    total = cfg.total_tokens or sum(available.values())
    return {
        name: (total * weights[name] / total_weight / available[name]) if name in available else 0.0
        for name in cfg.sources
    }


def targets(cfg: DataConfig, train_tokens: dict[str, int], rates: dict[str, float]) -> dict[str, float]:
    """The target share of output tokens per source."""
    if cfg.mix_by == "weight":
        total_weight = sum(src.weight for name, src in cfg.sources.items() if train_tokens.get(name))
        return {
            name: (src.weight / total_weight if train_tokens.get(name) else 0.0)
            for name, src in cfg.sources.items()
        }
    planned = {name: train_tokens.get(name, 0) * rates[name] for name in cfg.sources}
    total = sum(planned.values()) or 1
    return {name: planned[name] / total for name in cfg.sources}


def copies(doc_id: str, rate: float, seed: int) -> int:
    whole = math.floor(rate)
    return whole + (1 if unit_hash(seed, "mix", doc_id) < rate - whole else 0)


def mix_partition(task: dict, cfg: DataConfig, work_dir: str, rates: dict[str, float]) -> dict:
    """Stage-6 task: sample or repeat one train partition; rows come out in a seeded order.

    Output files are named by a hash of (seed, partition) so that reading them in name order
    interleaves the sources instead of reading one source after the other."""
    work, pid = Path(work_dir), task["pid"]
    train = pq.read_table(work / "train" / f"{pid}.parquet")
    rate = rates[task["source"]]
    ids = train.column("id").to_pylist()
    picks, out_ids = [], []
    for row, doc_id in enumerate(ids):
        for k in range(copies(doc_id, rate, cfg.seed)):
            picks.append(row)
            out_ids.append(doc_id if k == 0 else f"{doc_id}~{k}")
    order = sorted(range(len(picks)), key=lambda i: unit_hash(cfg.seed, "order", out_ids[i]))
    mixed = train.take(pa.array([picks[i] for i in order], pa.int64()))
    tokens = int(pc.sum(mixed.column("n_tokens")).as_py() or 0)
    mixed = mixed.set_column(0, "id", pa.array([out_ids[i] for i in order], pa.string())).select(
        DOC_SCHEMA.names
    )
    name = f"part-{int(unit_hash(cfg.seed, 'file', pid) * 2**32):08x}-{pid}.parquet"
    write_table(mixed, work / "mixed" / name)
    stats = {
        "pid": pid,
        "source": task["source"],
        "file": name,
        "mixed": {"docs": len(mixed), "tokens": tokens},
    }
    write_json(stats, work / "stats" / "mix" / f"{pid}.json")
    return {"pid": pid, "docs": len(mixed)}
