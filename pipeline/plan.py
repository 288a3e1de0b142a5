"""The plan of a run (`plan.json`): its input files as partitions in priority order, and the config
hashes that decide what an existing work dir can be resumed with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from common.config import ConfigError
from pipeline.config import DataConfig
from pipeline.inputs import require_input, sources_without_input
from pipeline.sources import expand_paths
from pipeline.workdir import WorkDir, remove_outputs
from pipeline.workfiles import exists, read_json, write_json

# Settings that only the split, decontam and mix stages read: changing them redoes those stages only.
MIX_FIELDS = ("seed", "valid_fraction", "total_tokens", "decontam")
MIX_SOURCE_FIELDS = ("weight", "epochs")


@dataclass(frozen=True)
class Partition:
    """One input file: the task of the filter, minhash, split and mix stages."""

    pid: str  # "<index>-<source>": names the partition's files
    index: int  # priority order (sources as listed, then file order): dedup keeps the smallest
    source: str
    path: str


@dataclass(frozen=True)
class Plan:
    config_hash: str
    mix_hash: str
    partitions: tuple[Partition, ...]
    # {"source", "path", "reason"} of each pattern that matched no readable file.
    missing: tuple[dict[str, str], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            config_hash=data["config_hash"],
            mix_hash=data.get("mix_hash", ""),
            partitions=tuple(Partition(**p) for p in data["partitions"]),
            missing=tuple(data["missing"]),
        )


def config_hashes(cfg: DataConfig) -> tuple[str, str]:
    """Fingerprints of what the read/filter/dedup stages and the split/decontam/mix stages depend on
    (the work dir and the packing settings change neither)."""
    data = cfg.model_dump(mode="json", exclude={"pack", "work_dir"})
    mix = {k: data.pop(k) for k in MIX_FIELDS}
    mix["sources"] = {n: {k: s.pop(k) for k in MIX_SOURCE_FIELDS} for n, s in data["sources"].items()}
    return _sha(data), _sha(mix)


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def make_plan(cfg: DataConfig) -> Plan:
    """Input files in priority order (sources as listed, then file order), or the plan of an earlier run.

    Raises InputError, before anything is written, when a required source matches no file."""
    work = WorkDir(cfg.work_dir)
    upstream, mix = config_hashes(cfg)
    if exists(work.plan):
        plan = Plan.from_json(read_json(work.plan))
        if plan.config_hash != upstream:
            raise ConfigError(
                f"{cfg.work_dir} holds a run with other sources, filters or dedup settings; "
                "use another work_dir or remove it"
            )
        if plan.mix_hash != mix:
            plan = _redo_mix(work, plan, mix)
        return plan
    partitions: list[Partition] = []
    missing: list[dict[str, str]] = []
    for source, src in cfg.sources.items():
        try:
            files, unmatched = expand_paths(src.paths)
        except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs installed: a config problem
            raise ConfigError(f"source {source!r}: cannot list {src.paths}: {e}") from e
        missing += [{"source": source, "path": p, "reason": r} for p, r in unmatched]
        for path in files:
            index = len(partitions)
            partitions.append(Partition(f"{index:05d}-{source}", index, source, path))
    require_input(cfg, sources_without_input(cfg, {p.source for p in partitions}, missing))
    plan = Plan(upstream, mix, tuple(partitions), tuple(missing))
    write_json(work.plan, asdict(plan))
    return plan


def _redo_mix(work: WorkDir, plan: Plan, mix_hash: str) -> Plan:
    """Remove the split, decontam and mix outputs, which other settings of theirs make stale."""
    print("[plan] split, decontam or mixture settings changed: redoing those stages", flush=True)
    remove_outputs(work.mix_outputs())
    plan = replace(plan, mix_hash=mix_hash)
    write_json(work.plan, asdict(plan))
    return plan
