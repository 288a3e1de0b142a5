"""`stats.json`, `report.md` and `report.png`: documents and tokens per source per stage, drop reasons,
documents removed for eval contamination (per source and task), bad input, every input file with what
became of it, the sources that add nothing to the mixture (and where their share went), and the
mixture's target against what was achieved."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.config import DataConfig  # noqa: E402
from pipeline.counts import MIX_STEPS, READ_STEPS, REPORT_STEPS  # noqa: E402
from pipeline.inputs import file_outcomes, sources_without_input  # noqa: E402
from pipeline.mix import shares  # noqa: E402
from pipeline.plan import Plan  # noqa: E402
from pipeline.workdir import WorkDir  # noqa: E402
from pipeline.workfiles import atomic_write, write_json, write_text  # noqa: E402

PartitionStats = dict[str, dict[str, Any]]


def collect(
    cfg: DataConfig,
    plan: Plan,
    filtered: PartitionStats,
    split: PartitionStats,
    decontam: PartitionStats,
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
        dups, valid, contaminated = Counter(), Counter(), Counter()
        for pid, stats in filtered.items():
            if stats["source"] != name:
                continue
            for step in steps:
                flow[step].update(stats["flow"].get(step, {}))
            for reason, rules in stats["reasons"].items():
                reasons[reason].update(rules)
            flow["dedup"].update(split[pid]["dedup"])
            flow["train"].update(split[pid]["train"])
            flow["decontam"].update(decontam[pid]["decontam"])
            contaminated.update(decontam[pid]["contaminated"])
            flow["mixed"].update(mixed[pid]["mixed"])
            dups.update(split[pid]["dup_reasons"])
            valid.update(split[pid]["valid"])
        per_source[name] = {
            "stages": {s: {"docs": c["docs"], "tokens": c["tokens"]} for s, c in flow.items()},
            "dropped": {r: dict(rules) for r, rules in reasons.items() if r != "bad"},
            "bad": dict(reasons.get("bad", {})),
            "duplicates": dict(dups),
            "contaminated": dict(contaminated),
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
        "files": file_outcomes(filtered),
        "empty_sources": empty_sources(cfg, plan, filtered, per_source),
    }


def empty_sources(
    cfg: DataConfig, plan: Plan, filtered: PartitionStats, per_source: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The sources with no train tokens, why, and what became of their share of the mixture."""
    listed = {p.source for p in plan.partitions}
    without = sources_without_input(cfg, listed, plan.missing, filtered)
    empty = {}
    for name, src in cfg.sources.items():
        if per_source[name]["stages"]["decontam"]["tokens"]:
            continue
        if src.weight is not None:
            share = f"its weight {src.weight} is spread over the other sources in proportion to their weights"
        else:
            share = "it adds nothing (mixing by epochs: each source brings its own tokens)"
        why = without.get(name, "no document left for training after filtering, dedup and decontamination")
        empty[name] = {"optional": src.optional, "why": why, "share": share}
    return empty


def write_report(work: WorkDir, stats: dict[str, Any]) -> None:
    """Write the stats that `collect` summed as stats.json, report.md and report.png."""
    write_json(work.stats_json, stats)
    write_text(work.report_md, _markdown(stats))
    atomic_write(work.report_png, lambda f: _chart(stats, f))


Table = tuple[list[str], list[list[Any]]]  # header, rows


def _markdown(stats: dict[str, Any]) -> str:
    sections = [
        ("Documents (tokens) per source after each stage", _stages(stats)),
        (f"Mixture (by {stats['mix_by']})", _mixture(stats)),
        ("Dropped documents", _dropped(stats)),
        ("Documents sharing an n-gram with an eval task (removed from training)", _contaminated(stats)),
        ("Bad input set aside", _bad_input(stats)),
        ("Sources that add nothing to the mixture", _empty_sources(stats)),
        ("Input files", _files(stats)),
    ]
    lines = ["# Data pipeline report"]
    for title, (header, rows) in sections:
        lines += ["", f"## {title}", "", *(_table(header, rows) if rows else ["none"])]
    valid = ", ".join(f"{n} {s['valid']['docs']} docs" for n, s in stats["sources"].items())
    lines += ["", f"Validation split (held out before mixing, not decontaminated): {valid}"]
    tasks = stats["decontam"]["tasks"]
    lines += [f"Decontaminated against {sum(tasks.values())} eval documents of {len(tasks)} tasks", ""]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table; a `|` inside a cell (a path, an error message) is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def _stages(stats: dict[str, Any]) -> Table:
    rows = [
        [name]
        + [
            f"{s['stages'][st]['docs']} ({s['stages'][st]['tokens']})" if st in s["stages"] else "-"
            for st in REPORT_STEPS
        ]
        for name, s in stats["sources"].items()
    ]
    return ["source", *REPORT_STEPS], rows


def _mixture(stats: dict[str, Any]) -> Table:
    rows = [
        [name, f"{m['target_share']:.3f}", f"{m['achieved_share']:.3f}", f"{m['rate']:.3f}"]
        for name, m in stats["mixture"].items()
    ]
    return ["source", "target share", "achieved share", "copies/doc"], rows


def _dropped(stats: dict[str, Any]) -> Table:
    rows = []
    for name, s in stats["sources"].items():
        for reason, rules in sorted(s["dropped"].items()):
            rows += [[name, reason, rule or "-", n] for rule, n in sorted(rules.items())]
        rows += [[name, "dedup", reason, n] for reason, n in sorted(s["duplicates"].items())]
    return ["source", "filter", "rule", "docs"], rows


def _contaminated(stats: dict[str, Any]) -> Table:
    rows = [
        [name, task, n]
        for name, s in stats["sources"].items()
        for task, n in sorted(s["contaminated"].items())
    ]
    decontam = stats["decontam"]
    rows += [["-", f"{task} (no data on this machine)", "not checked"] for task in decontam["missing_tasks"]]
    return ["source", f"task ({decontam['ngram']}-gram)", "docs"], rows


def _bad_input(stats: dict[str, Any]) -> Table:
    rows = [
        [name, reason, n] for name, s in stats["sources"].items() for reason, n in sorted(s["bad"].items())
    ]
    rows += [[m["source"], f"{m['reason']}: {m['path']}", "-"] for m in stats["missing_inputs"]]
    return ["source", "reason", "rows"], rows


def _empty_sources(stats: dict[str, Any]) -> Table:
    rows = [
        [name, "yes" if e["optional"] else "no", e["why"], e["share"]]
        for name, e in stats["empty_sources"].items()
    ]
    return ["source", "optional", "why", "its share"], rows


def _files(stats: dict[str, Any]) -> Table:
    rows = [
        [
            f["source"],
            f["path"],
            f["rows"],
            f["bad_rows"],
            f["kept"],
            "yes" if f["truncated"] else "no",
            f["file_error"] or "-",
        ]
        for f in stats["files"]
    ]
    return ["source", "file", "rows read", "bad rows", "kept", "truncated", "problem"], rows


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
