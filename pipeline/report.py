"""`stats.json`, `report.md` and `report.png`: documents and tokens per source per stage, drop reasons,
bad input, and the mixture's target against what was achieved."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.files import atomic_write, write_json, write_text  # noqa: E402
from pipeline.config import DataConfig  # noqa: E402
from pipeline.counts import MIX_STEPS, READ_STEPS, REPORT_STEPS  # noqa: E402
from pipeline.layout import WorkDir  # noqa: E402
from pipeline.mix import shares  # noqa: E402
from pipeline.plan import Plan  # noqa: E402

PartitionStats = dict[str, dict[str, Any]]


def collect(
    cfg: DataConfig,
    plan: Plan,
    filtered: PartitionStats,
    split: PartitionStats,
    mixed: PartitionStats,
    rates: dict[str, float],
    targets: dict[str, float],
) -> dict[str, Any]:
    """Sum the per-partition stats (by pid, per stage) into per-source numbers."""
    per_source: dict[str, Any] = {}
    for name, src in cfg.sources.items():
        steps = [*READ_STEPS, *src.filters.enabled()]
        flow = {s: Counter() for s in [*steps, *MIX_STEPS]}
        reasons: dict[str, Counter] = defaultdict(Counter)
        dups, valid = Counter(), Counter()
        for pid, stats in filtered.items():
            if stats["source"] != name:
                continue
            for step in steps:
                flow[step].update(stats["flow"].get(step, {}))
            for reason, rules in stats["reasons"].items():
                reasons[reason].update(rules)
            flow["dedup"].update(split[pid]["dedup"])
            flow["train"].update(split[pid]["train"])
            flow["mixed"].update(mixed[pid]["mixed"])
            dups.update(split[pid]["dup_reasons"])
            valid.update(split[pid]["valid"])
        per_source[name] = {
            "stages": {s: {"docs": c["docs"], "tokens": c["tokens"]} for s, c in flow.items()},
            "dropped": {r: dict(rules) for r, rules in reasons.items() if r != "bad"},
            "bad": dict(reasons.get("bad", {})),
            "duplicates": dict(dups),
            "valid": {"docs": valid["docs"], "tokens": valid["tokens"]},
            "files": sum(1 for p in plan.partitions if p.source == name),
        }
    achieved = shares({name: s["stages"]["mixed"]["tokens"] for name, s in per_source.items()})
    mixture = {
        name: {
            "target_share": round(targets[name], 4),
            "achieved_share": round(achieved[name], 4),
            "rate": round(rates[name], 4),
        }
        for name in cfg.sources
    }
    return {
        "sources": per_source,
        "mixture": mixture,
        "mix_by": cfg.mix_by,
        "missing_inputs": list(plan.missing),
    }


def write_report(
    cfg: DataConfig,
    plan: Plan,
    filtered: PartitionStats,
    split: PartitionStats,
    mixed: PartitionStats,
    rates: dict[str, float],
    targets: dict[str, float],
) -> dict[str, Any]:
    """Write stats.json, report.md and report.png; returns the stats."""
    work = WorkDir(cfg.work_dir)
    stats = collect(cfg, plan, filtered, split, mixed, rates, targets)
    write_json(work.stats_json, stats)
    write_text(work.report_md, _markdown(stats))
    atomic_write(work.report_png, lambda f: _chart(stats, f))
    return stats


def _markdown(stats: dict[str, Any]) -> str:
    lines = ["# Data pipeline report", "", "## Documents (tokens) per source after each stage", ""]
    stages = REPORT_STEPS
    lines += ["| source | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for name, s in stats["sources"].items():
        cells = [
            f"{s['stages'][st]['docs']} ({s['stages'][st]['tokens']})" if st in s["stages"] else "-"
            for st in stages
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Mixture (by {stats['mix_by']})",
        "",
        "| source | target share | achieved share | copies/doc |",
        "|---|---|---|---|",
    ]
    for name, m in stats["mixture"].items():
        lines.append(f"| {name} | {m['target_share']:.3f} | {m['achieved_share']:.3f} | {m['rate']:.3f} |")
    lines += ["", "## Dropped documents", "", "| source | filter | rule | docs |", "|---|---|---|---|"]
    for name, s in stats["sources"].items():
        for reason, rules in sorted(s["dropped"].items()):
            for rule, n in sorted(rules.items()):
                lines.append(f"| {name} | {reason} | {rule or '-'} | {n} |")
        for reason, n in sorted(s["duplicates"].items()):
            lines.append(f"| {name} | dedup | {reason} | {n} |")
    lines += ["", "## Bad input set aside", "", "| source | reason | rows |", "|---|---|---|"]
    for name, s in stats["sources"].items():
        for reason, n in sorted(s["bad"].items()):
            lines.append(f"| {name} | {reason} | {n} |")
    for m in stats["missing_inputs"]:
        lines.append(f"| {m['source']} | {m['reason']}: {m['path']} | - |")
    lines += [
        "",
        "Validation split (held out before mixing): "
        + ", ".join(f"{n} {s['valid']['docs']} docs" for n, s in stats["sources"].items()),
        "",
    ]
    return "\n".join(lines)


def _chart(stats: dict[str, Any], out: IO[bytes]) -> None:
    stages = REPORT_STEPS
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, unit in zip(axes, ("docs", "tokens"), strict=True):
        for name, s in stats["sources"].items():
            xs = [i for i, st in enumerate(stages) if st in s["stages"]]
            ax.plot(xs, [s["stages"][stages[i]][unit] for i in xs], marker="o", label=name)
        ax.set_xticks(range(len(stages)), stages, rotation=40, ha="right")
        ax.set_yscale("symlog")
        ax.set_title(f"{unit} per source after each stage")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
