"""`stats.json`, `report.md` and `report.png`: documents and tokens per source per stage, drop reasons,
bad input, and the mixture's target against what was achieved."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.config import DataConfig  # noqa: E402
from pipeline.storage import write_json  # noqa: E402

FILTER_STEPS = ("read", "exclude", "langid", "gopher_repetition", "gopher_quality", "c4", "code")

# The columns of the report, in pipeline order.
STAGES = (
    "read",
    "exclude",
    "langid",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "code",
    "dedup",
    "train",
    "mixed",
)


def collect(
    cfg: DataConfig, plan: dict, filtered: dict, split: dict, mixed: dict, rates: dict, target: dict
) -> dict[str, Any]:
    """Sum the per-partition stats into per-source numbers."""
    per_source: dict[str, Any] = {}
    for name, src in cfg.sources.items():
        steps = ["read", "exclude", *[s for s in FILTER_STEPS[2:] if getattr(src.filters, s) is not None]]
        flow = {s: Counter() for s in [*steps, "dedup", "train", "mixed"]}
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
            "files": sum(1 for p in plan["partitions"] if p["source"] == name),
        }
    total_mixed = sum(s["stages"]["mixed"]["tokens"] for s in per_source.values()) or 1
    mixture = {
        name: {
            "target_share": round(target[name], 4),
            "achieved_share": round(per_source[name]["stages"]["mixed"]["tokens"] / total_mixed, 4),
            "rate": round(rates[name], 4),
        }
        for name in cfg.sources
    }
    return {
        "sources": per_source,
        "mixture": mixture,
        "mix_by": cfg.mix_by,
        "missing_inputs": plan["missing"],
    }


def write_report(cfg: DataConfig, plan, filtered, split, mixed, rates, target) -> dict[str, Any]:
    work = Path(cfg.work_dir)
    stats = collect(cfg, plan, filtered, split, mixed, rates, target)
    write_json(stats, work / "stats.json")
    (work / "report.md").write_text(_markdown(stats), encoding="utf-8")
    _chart(stats, work / "report.png")
    return stats


def _markdown(stats: dict[str, Any]) -> str:
    lines = ["# Data pipeline report", "", "## Documents (tokens) per source after each stage", ""]
    stages = STAGES
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


def _chart(stats: dict[str, Any], path: Path) -> None:
    stages = STAGES
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
