"""`python -m pipeline run CONFIG`: read -> filter -> dedup -> split -> decontam -> mix, as resumable Ray
Data stages.

Each stage is a list of partition tasks run through Ray Data (`pipeline.stage`); a task's outputs are
atomic and its marker file (written last) says it finished, so a re-run after a kill skips finished
partitions and redoes only the others. `_SUCCESS.json` is written when every stage is done.
"""

from __future__ import annotations

from pipeline.cluster import job_metadata, start_ray
from pipeline.components import component_partitions, components
from pipeline.config import DataConfig
from pipeline.decontam import DECONTAM, decontam_stage, drop_stale, eval_ngrams
from pipeline.dedup import bucket_partitions, bucket_stage, signature_stage
from pipeline.inputs import require_input, sources_without_input
from pipeline.mix import MIX, SPLIT, mix_stage, mixing_rates, split_stage, target_shares, train_tokens
from pipeline.plan import make_plan
from pipeline.read_filter import FILTER, filter_stage
from pipeline.report import collect, write_report
from pipeline.stage import run_on_ray
from pipeline.workdir import WorkDir
from pipeline.workfiles import WorkPath, is_published, lock, remove_temporaries, write_json


def run(cfg: DataConfig, verbose: bool = False) -> WorkPath:
    """Run (or resume) every stage, holding the work dir's lock; returns the work dir. Another job in
    the work dir raises LockError before anything is touched. A required source without input raises
    InputError: when planning if it matches no file, else after the filter stage (before dedup). An
    unknown eval task to decontaminate against raises ConfigError before any stage."""
    work = WorkDir(cfg.work_dir)
    with lock(work.root):
        return _run_locked(cfg, work, verbose)


def _run_locked(cfg: DataConfig, work: WorkDir, verbose: bool) -> WorkPath:
    plan = make_plan(cfg)
    # Half-written files of a killed run (finished ones were renamed); with the lock held, no other
    # job's are in flight.
    remove_temporaries(work.root)
    # Once, on the driver, before any stage: an unknown eval task fails here; the tasks get a copy.
    ngrams = eval_ngrams(cfg.decontam)
    for m in plan.missing:
        print(f"[plan] warning: {m['source']}: {m['path']}: {m['reason']}", flush=True)
    start_ray(verbose, job_metadata("run", cfg))
    parts, pids = plan.partitions, [p.pid for p in plan.partitions]
    listed = {p.source for p in parts}

    run_on_ray(filter_stage(cfg, work, parts))
    filtered = work.read_stats(FILTER, pids)
    without = sources_without_input(cfg, listed, plan.missing, filtered)
    require_input(cfg, without)
    for name, why in without.items():
        print(f"[filter] warning: optional source {name!r} has no input, runs without it: {why}", flush=True)
    buckets = bucket_partitions(cfg.dedup, sum(s["kept_docs"] for s in filtered.values()))
    run_on_ray(signature_stage(cfg.dedup, work, parts, buckets))
    run_on_ray(bucket_stage(work, buckets, cfg.dedup))
    if is_published(work.dropped):
        print("[components] done before", flush=True)
    else:
        components(work, component_partitions(work, cfg.dedup), run_on_ray)
    run_on_ray(split_stage(cfg, work, parts))
    split = work.read_stats(SPLIT, pids)
    drop_stale(work, pids, ngrams.fingerprint)
    run_on_ray(decontam_stage(work, parts, ngrams))
    decontam = work.read_stats(DECONTAM, pids)
    tokens = train_tokens(cfg, decontam, DECONTAM)
    rates = mixing_rates(cfg, tokens)
    run_on_ray(mix_stage(cfg, work, parts, rates))
    mixed = work.read_stats(MIX, pids)

    stats = collect(cfg, plan, filtered, split, decontam, mixed, rates, target_shares(cfg, tokens))
    write_report(work, {**stats, DECONTAM: ngrams.summary()})
    write_json(work.success, {"partitions": len(parts), "config_hash": plan.config_hash})
    print(
        f"[done] {work.mixed_dir} (train), {work.valid_dir} (validation), report {work.report_md}", flush=True
    )
    return work.root
