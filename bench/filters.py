"""Gopher repetition + Gopher quality + C4 filters: this project's against datatrove's, same documents.

    .venv/bin/python -m bench.filters

Baseline: datatrove 0.10.1 with spaCy 3.8.18 (which it uses to split English words and sentences),
installed into bench/.venv-datatrove on first use, never into the project's environment, and run
in a subprocess on the same documents in the same order. Documents: every English document of the
bundled sample corpus (RefinedWeb, the Pile, RedPajama's English subsets, planted cases included).
Each document also appears once more with a seeded edit that moves it towards a rule's threshold
(cut short, repeated lines, bullets, trailing ellipses, link and number lists, menu lines), so the
rules are compared near their edges and not only on clean text.
Prints the decision agreement (kept or dropped, and by which filter) and docs/s per core of each,
measured as documents per CPU second of one process.
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import time
import venv
from pathlib import Path

from common.config import CONFIG_DIR, load
from pipeline.config import C4Config, DataConfig, GopherQualityConfig, GopherRepetitionConfig
from pipeline.filters import C4QualityFilter, Doc, GopherQualityFilter, GopherRepetitionFilter
from pipeline.sources import Record, expand_paths, read_file

ROOT = Path(__file__).resolve().parents[1]

BASELINE_ENV = ROOT / "bench" / ".venv-datatrove"
BASELINE_PINS = ["datatrove==0.10.1", "spacy==3.8.18", "regex==2026.11.19"]
ENGLISH = {"refinedweb": None, "pile": None, "redpajama": ("c4", "common_crawl", "stackexchange")}
REPEATS = 3

# Runs inside the datatrove environment: reads documents as JSON lines, prints decisions and CPU time.
DATATROVE_SIDE = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

texts = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
repeats = int(sys.argv[2])
steps = [("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
         ("c4", C4QualityFilter())]

def decide(text):
    doc = Document(text=text, id="0")
    for name, step in steps:
        result = step.filter(doc)
        if result is not True:
            return name, result[1] if isinstance(result, tuple) else None
    return None, None

decide(texts[0])  # load spaCy outside the timing
start = time.process_time()
for _ in range(repeats):
    decisions = [decide(t) for t in texts]
print(json.dumps({"seconds": time.process_time() - start, "decisions": decisions}))
"""


def english_documents() -> list[str]:
    cfg = load(CONFIG_DIR / "data" / "sample.yaml", DataConfig)
    texts = []
    for source, subsets in ENGLISH.items():
        src = cfg.sources[source]
        files, _ = expand_paths([str(ROOT / p) for p in src.paths])
        for path in files:
            for item in read_file(source, path, src):
                if not isinstance(item, Record):
                    continue
                subset = item.meta.get("red_pajama_subset")
                if subsets is None or subset in subsets:
                    texts.append(item.text)
    return texts


def perturb(text: str, rng: random.Random) -> str:
    """A seeded edit of a document that pushes it towards one of the filters' thresholds."""
    lines = text.splitlines()
    words = text.split()
    edit = rng.randrange(6)
    if edit == 0:
        return " ".join(words[: rng.randint(30, 90)])
    if edit == 1:
        line = rng.choice([x for x in lines if x] or [text])
        return "\n".join(lines + [line] * rng.randint(1, 6))
    if edit == 2:
        return "\n".join(f"- {x}" if rng.random() < 0.9 else x for x in lines)
    if edit == 3:
        return "\n".join(x.rstrip(".") + "..." if rng.random() < 0.4 else x for x in lines)
    if edit == 4:
        extra = [
            f"https://www.example.com/page/{rng.randint(1, 999)} {rng.randint(1, 99999)}" for _ in range(30)
        ]
        return text + "\n" + " ".join(extra)
    menu = ["Home", "News", "Sport", "Weather", "Contact us", "Sign in", "Share this page"]
    return "\n".join(rng.sample(menu, rng.randint(2, 6)) + lines)


def ours(texts: list[str]) -> tuple[float, list[tuple[str | None, str | None]]]:
    steps = [
        GopherRepetitionFilter(GopherRepetitionConfig()),
        GopherQualityFilter(GopherQualityConfig()),
        C4QualityFilter(C4Config()),
    ]

    def decide(text: str) -> tuple[str | None, str | None]:
        doc = Doc("0", text, "bench", lang="en")
        for step in steps:
            decision = step(doc)
            if not decision.kept:
                return step.name, decision.rule
        return None, None

    start = time.process_time()
    for _ in range(REPEATS):
        decisions = [decide(t) for t in texts]
    return time.process_time() - start, decisions


def baseline_python() -> Path:
    python = BASELINE_ENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BASELINE_ENV} with {' '.join(BASELINE_PINS)} (first run only)", flush=True)
        venv.create(BASELINE_ENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BASELINE_PINS], check=True)
    return python


def theirs(texts: list[str]) -> tuple[float, list[tuple[str | None, str | None]]]:
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        docs.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
        script = Path(tmp) / "datatrove_side.py"
        script.write_text(DATATROVE_SIDE)
        out = subprocess.run(
            [str(baseline_python()), str(script), str(docs), str(REPEATS)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], [tuple(d) for d in result["decisions"]]


def main() -> None:
    rng = random.Random(0)
    clean = english_documents()
    texts = clean + [perturb(t, rng) for t in clean]
    our_seconds, our_decisions = ours(texts)
    their_seconds, their_decisions = theirs(texts)
    n = len(texts)
    kept_agree = sum(
        (a[0] is None) == (b[0] is None) for a, b in zip(our_decisions, their_decisions, strict=True)
    )
    filter_agree = sum(a[0] == b[0] for a, b in zip(our_decisions, their_decisions, strict=True))
    rule_agree = sum(a == b for a, b in zip(our_decisions, their_decisions, strict=True))
    ours_rate, theirs_rate = REPEATS * n / our_seconds, REPEATS * n / their_seconds
    print(f"documents: {len(clean)} English documents of the sample and an edit of each, {REPEATS} passes")
    print(
        f"dropped: ours {sum(d[0] is not None for d in our_decisions)}, "
        f"datatrove {sum(d[0] is not None for d in their_decisions)}"
    )
    print(f"agreement kept/dropped: {kept_agree / n:.2%} (target >= 97%)")
    print(f"agreement on the dropping filter: {filter_agree / n:.2%}, and on its rule: {rule_agree / n:.2%}")
    print(f"docs/s per core: ours {ours_rate:,.0f}, datatrove {theirs_rate:,.0f}")
    print(f"speed ratio (ours / datatrove): {ours_rate / theirs_rate:.1f}x (target >= 10x)")
    for text, a, b in zip(texts, our_decisions, their_decisions, strict=True):
        if (a[0] is None) != (b[0] is None):
            print(f"  disagree: ours {a}, datatrove {b}: {text[:80]!r}")


if __name__ == "__main__":
    main()
