"""Stages 5 and 7: drop duplicates, hold out the validation split; mix the decontaminated train split
to the sources' targets.

Every random choice is a hash of (seed, document id), so the output depends only on the seed and
the inputs, never on scheduling or on where a killed run stopped.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DataConfig
from pipeline.dedup import node_range
from pipeline.plan import Partition
from pipeline.stage import Stage, partition_stage
from pipeline.storage import DOC_SCHEMA, write_table
from pipeline.workdir import WorkDir
from pipeline.workfiles import read_table, write_json

SPLIT, MIX = "split", "mix"
DUPS_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the first 8 bytes of sha256 of the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_valid(doc_id: str, fraction: float) -> bool:
    return unit_hash(doc_id) < fraction


def split_stage(cfg: DataConfig, work: WorkDir, parts: Sequence[Partition]) -> Stage[Partition]:
    return partition_stage(SPLIT, work, parts, lambda part: split_partition(part, cfg, work))


def split_partition(part: Partition, cfg: DataConfig, work: WorkDir) -> dict[str, int]:
    """Stage-5 task: remove the partition's duplicates, then split it into train and validation."""
    pid = part.pid
    table = read_table(work.filtered(pid))
    lo, hi = node_range(part.index)
    dropped = read_table(work.dropped, filters=[("node", ">=", lo), ("node", "<", hi)])
    dup_rows = (dropped.column("node").to_numpy() - lo).astype("int64")
    is_dup = [False] * len(table)
    for row in dup_rows.tolist():
        is_dup[row] = True
    dups = table.take(pa.array(dup_rows, type=pa.int64()))
    columns = {"id": dups.column("id"), "source": dups.column("source"), "reason": dropped.column("reason")}
    write_table(work.dups(pid), pa.table(columns, schema=DUPS_SCHEMA))
    unique = table.filter(pa.array([not d for d in is_dup], pa.bool_()))
    valid_mask = pa.array(
        [in_valid(i, cfg.valid_fraction) for i in unique.column("id").to_pylist()], pa.bool_()
    )
    valid, train = unique.filter(valid_mask), unique.filter(pc.invert(valid_mask))
    write_table(work.valid(pid), valid.select(DOC_SCHEMA.names))
    write_table(work.train(pid), train)
    dup_reasons = Counter(dropped.column("reason").to_pylist())
    stats = {
        "pid": pid,
        "source": part.source,
        "dedup": doc_counts(unique),
        "dup_reasons": dict(dup_reasons),
        "valid": doc_counts(valid),
        "train": doc_counts(train),
    }
    write_json(work.stats(SPLIT, pid), stats)
    return {"dups": int(sum(dup_reasons.values()))}


def doc_counts(table: pa.Table) -> dict[str, int]:
    """Documents and tokens of a table of filtered documents."""
    return {"docs": len(table), "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0)}


def train_tokens(cfg: DataConfig, stage_stats: Mapping[str, dict[str, Any]], step: str) -> dict[str, int]:
    """Tokens per source at counting step `step` of a stage's stats (the train split: after decontam)."""
    tokens = {name: 0 for name in cfg.sources}
    for stats in stage_stats.values():
        tokens[stats["source"]] += stats[step]["tokens"]
    return tokens


def shares(amounts: Mapping[str, float]) -> dict[str, float]:
    """Each amount as a share of their total (all 0 when the total is 0)."""
    total = sum(amounts.values()) or 1
    return {name: amount / total for name, amount in amounts.items()}


def target_shares(cfg: DataConfig, train_tokens: Mapping[str, int] | None = None) -> dict[str, float]:
    """The share of output tokens each source is mixed to: the one definition of the mixture's target.

    By weight: its weight among the sources that have train tokens. By epochs: its train tokens times
    its epochs among all. Without `train_tokens` (pack on a work dir with no stats.json) every source
    counts as having data by weight, and the shares by epochs are unknown: 0.
    """
    if cfg.mix_by == "weight":
        has_data = {name: train_tokens is None or bool(train_tokens.get(name)) for name in cfg.sources}
        return shares({name: src.weight if has_data[name] else 0.0 for name, src in cfg.sources.items()})
    tokens = train_tokens or {}
    return shares({name: tokens.get(name, 0) * src.epochs for name, src in cfg.sources.items()})


def mixing_rates(cfg: DataConfig, train_tokens: Mapping[str, int]) -> dict[str, float]:
    """Copies per document for each source: below 1 samples down, above 1 repeats."""
    if cfg.mix_by == "epochs":
        return {name: src.epochs for name, src in cfg.sources.items()}
    targets = target_shares(cfg, train_tokens)
    total = cfg.total_tokens or sum(train_tokens.values())
    return {
        name: total * targets[name] / train_tokens[name] if train_tokens.get(name) else 0.0
        for name in cfg.sources
    }


def copies(doc_id: str, rate: float, seed: int) -> int:
    whole = math.floor(rate)
    return whole + (1 if unit_hash(seed, "mix", doc_id) < rate - whole else 0)


def mix_stage(
    cfg: DataConfig, work: WorkDir, parts: Sequence[Partition], rates: dict[str, float]
) -> Stage[Partition]:
    return partition_stage(MIX, work, parts, lambda part: mix_partition(part, cfg, work, rates))


def mix_partition(part: Partition, cfg: DataConfig, work: WorkDir, rates: dict[str, float]) -> dict[str, int]:
    """Stage-7 task: sample or repeat one decontaminated train partition; rows come out in a seeded order.

    Output files are named by a hash of (seed, partition) so that reading them in name order
    interleaves the sources instead of reading one source after the other."""
    pid = part.pid
    train = read_table(work.decontaminated(pid))
    rate = rates[part.source]
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
    path = work.mixed(pid, int(unit_hash(cfg.seed, "file", pid) * 2**32))
    write_table(path, mixed)
    stats = {
        "pid": pid,
        "source": part.source,
        "file": path.name,
        "mixed": {"docs": len(mixed), "tokens": tokens},
    }
    write_json(work.stats(MIX, pid), stats)
    return {"docs": len(mixed)}
