"""`python -m pipeline run CONFIG`: read -> filter -> dedup -> split -> mix, as resumable Ray Data stages.

Each stage is a list of partition tasks run through Ray Data; a task's outputs are atomic and its
stats file (written last) marks it finished, so a re-run after a kill skips finished partitions and
redoes only the others. A stage writes `_SUCCESS.json` when all its partitions are done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from common.config import ConfigError
from pipeline.config import DataConfig
from pipeline.dedup import bucket_partition, component_partitions, components, signature_partition
from pipeline.mix import mix_partition, mixing_rates, split_partition, targets
from pipeline.read_filter import filter_partition
from pipeline.report import write_report
from pipeline.sources import expand_paths
from pipeline.storage import read_json, write_json

# Settings that only the split and mix stages read: changing them redoes those two stages only.
MIX_FIELDS = ("seed", "valid_fraction", "total_tokens")
MIX_SOURCE_FIELDS = ("weight", "epochs")
MIX_OUTPUTS = ("train", "valid", "dups", "mixed", "stats/split", "stats/mix", "_SUCCESS.json")


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def config_hashes(cfg: DataConfig) -> tuple[str, str]:
    """Fingerprints of what the read/filter/dedup stages and the split/mix stages depend on
    (the work dir and the packing settings change neither)."""
    data = cfg.model_dump(mode="json", exclude={"pack", "work_dir"})
    mix = {k: data.pop(k) for k in MIX_FIELDS}
    mix["sources"] = {n: {k: s.pop(k) for k in MIX_SOURCE_FIELDS} for n, s in data["sources"].items()}
    return _sha(data), _sha(mix)


def make_plan(cfg: DataConfig) -> dict[str, Any]:
    """Input files in priority order (sources as listed, then file order), or the plan of an earlier run."""
    path = Path(cfg.work_dir) / "plan.json"
    upstream, mix = config_hashes(cfg)
    if path.exists():
        plan = read_json(path)
        if plan["config_hash"] != upstream:
            raise ConfigError(
                f"{cfg.work_dir} holds a run with other sources, filters or dedup settings; "
                "use another work_dir or remove it"
            )
        if plan.get("mix_hash") != mix:
            print("[plan] split or mixture settings changed: redoing the split and mix stages", flush=True)
            for name in MIX_OUTPUTS:
                target = Path(cfg.work_dir) / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            plan["mix_hash"] = mix
            write_json(plan, path)
        return plan
    partitions, missing = [], []
    for source, src in cfg.sources.items():
        try:
            files, unmatched = expand_paths(src.paths)
        except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs installed: a config problem
            raise ConfigError(f"source {source!r}: cannot list {src.paths}: {e}") from e
        missing += [{"source": source, "path": p, "reason": r} for p, r in unmatched]
        for path_ in files:
            index = len(partitions)
            partitions.append(
                {"pid": f"{index:05d}-{source}", "index": index, "source": source, "path": path_}
            )
    plan = {"config_hash": upstream, "mix_hash": mix, "partitions": partitions, "missing": missing}
    write_json(plan, path)
    return plan


def start_ray() -> None:
    """Local Ray by default; the cluster named by RAY_ADDRESS when set."""
    if ray.is_initialized():
        return
    context = ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    url = context.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", flush=True)
    if url:
        print(f"  {dashboard_access()}", flush=True)


def dashboard_access() -> str:
    """How to get into the dashboard: Ray >= 2.59 turns token auth on for a local ray.init()."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return (
            "token authentication is on: paste the token that `ray get-auth-token` prints (default file "
            "~/.ray/auth_token) when the page asks; on a cluster, forward the head's port 8265 first "
            "(`ray dashboard cluster.yaml` or `ssh -L 8265:localhost:8265 HEAD`)"
        )
    return (
        "no authentication (anyone who can reach the port can submit jobs): it listens on this host only; "
        "on a cluster, forward the head's port 8265 (`ray dashboard cluster.yaml` or "
        "`ssh -L 8265:localhost:8265 HEAD`), or start Ray with RAY_AUTH_MODE=token"
    )


def run_stage(
    name: str, tasks: list[dict], fn: Callable[[dict], dict], is_done: Callable[[dict], bool]
) -> None:
    """Run the unfinished tasks of a stage as a Ray Data job, printing a line per finished partition."""
    todo = [t for t in tasks if not is_done(t)]
    print(
        f"[{name}] {len(todo)} of {len(tasks)} partitions to run ({len(tasks) - len(todo)} done before)",
        flush=True,
    )
    if not todo:
        return
    start = time.time()
    results = ray.data.from_items(todo, override_num_blocks=len(todo)).map(fn)
    for i, result in enumerate(results.iter_rows(), 1):
        detail = ", ".join(f"{k}={v}" for k, v in result.items())
        print(f"[{name}] {i}/{len(todo)} {detail}", flush=True)
    print(f"[{name}] done in {time.time() - start:.1f}s", flush=True)


def run(cfg: DataConfig) -> Path:
    """Run (or resume) every stage; returns the work dir."""
    work = Path(cfg.work_dir)
    plan = make_plan(cfg)
    parts = plan["partitions"]
    for stale in work.rglob(".*.tmp"):  # half-written files of a killed run; finished ones were renamed
        stale.unlink()
    for m in plan["missing"]:
        print(f"[read] set aside {m['path']} ({m['source']}): {m['reason']}", flush=True)
    start_ray()
    wd = str(work)
    sources, rejects = cfg.sources, cfg.write_rejects
    run_stage(
        "filter",
        parts,
        lambda t: filter_partition(t, sources, wd, rejects),
        lambda t: (work / "stats" / "filter" / f"{t['pid']}.json").exists(),
    )
    filtered = {p["pid"]: read_json(work / "stats" / "filter" / f"{p['pid']}.json") for p in parts}
    kept_docs = sum(s["kept_docs"] for s in filtered.values())
    buckets = max(1, math.ceil(kept_docs * (cfg.dedup.bands + 1) / cfg.dedup.rows_per_bucket_partition))
    dedup_cfg = cfg.dedup
    run_stage(
        "minhash",
        parts,
        lambda t: signature_partition(t, dedup_cfg, wd, buckets),
        lambda t: (work / "dedup" / "sig" / t["pid"] / "_DONE.json").exists(),
    )
    run_stage(
        "buckets",
        [{"bucket": j} for j in range(buckets)],
        lambda t: bucket_partition(t, wd),
        lambda t: (work / "dedup" / "edges" / f"b{t['bucket']:05d}.parquet").exists(),
    )
    if (work / "dedup" / "dropped.parquet").exists():
        print("[components] done before", flush=True)
    else:
        components({"partitions": component_partitions(wd, dedup_cfg)}, wd, run_stage)
    run_stage(
        "split",
        parts,
        lambda t: split_partition(t, cfg, wd),
        lambda t: (work / "stats" / "split" / f"{t['pid']}.json").exists(),
    )
    split = {p["pid"]: read_json(work / "stats" / "split" / f"{p['pid']}.json") for p in parts}
    train_tokens = {name: 0 for name in cfg.sources}
    for s in split.values():
        train_tokens[s["source"]] += s["train"]["tokens"]
    rates = mixing_rates(cfg, train_tokens)
    run_stage(
        "mix",
        parts,
        lambda t: mix_partition(t, cfg, wd, rates),
        lambda t: (work / "stats" / "mix" / f"{t['pid']}.json").exists(),
    )
    mixed = {p["pid"]: read_json(work / "stats" / "mix" / f"{p['pid']}.json") for p in parts}
    write_report(cfg, plan, filtered, split, mixed, rates, targets(cfg, train_tokens, rates))
    write_json({"partitions": len(parts), "config_hash": plan["config_hash"]}, work / "_SUCCESS.json")
    print(f"[done] {work}/mixed (train), {work}/valid (validation), report {work}/report.md", flush=True)
    return work
