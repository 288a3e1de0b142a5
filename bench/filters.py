"""Gopher repetition + Gopher quality + C4 filters: this project's against datatrove's, same documents.

    .venv/bin/python -m bench.filters

Baseline: datatrove 0.10.1 with spaCy 3.8.18 (its word and sentence splitter for English and the
CulturaX languages), installed into bench/.venv-datatrove on first use, never into the project's
environment, and run in a subprocess on the same documents in the same order. Each filter decides
on every document (as `python -m pipeline explain` does); datatrove gets the document's language,
and for the CulturaX languages FineWeb-2's stop words (the ones `pipeline.stop_words` holds).

Two sets of documents, two tables:
- real text (bench/corpus.py `real_documents`): English prose from packages' docs and licences and
  man pages; for de, es, fr, it, nl and pt their man pages and the translations in message
  catalogues. Per filter and language: keep/drop agreement and rule agreement (kept, or dropped by
  the same rule), and docs/s per core of each side (documents per CPU second of one process).
- planted edge cases: every English document of the bundled sample corpus and a seeded edit of each
  that moves it towards a rule's threshold (cut short, repeated lines, bullets, trailing ellipses,
  link and number lists, menu lines).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import tempfile
import time
import venv
from collections import defaultdict
from pathlib import Path

from bench.corpus import REAL_LANGUAGES, real_documents, real_sources
from common.config import CONFIG_DIR, load
from pipeline.config import C4Config, DataConfig, FiltersConfig, GopherQualityConfig, GopherRepetitionConfig
from pipeline.filters import Doc, build_chain, run_chain
from pipeline.sources import Record, expand_paths, read_file
from pipeline.spacy_split import splitter
from pipeline.stop_words import STOP_WORDS

ROOT = Path(__file__).resolve().parents[1]

BASELINE_ENV = ROOT / "bench" / ".venv-datatrove"
BASELINE_PINS = ["datatrove==0.10.1", "spacy==3.8.18", "regex==2026.11.19"]
ENGLISH = {"refinedweb": None, "pile": None, "redpajama": ("c4", "common_crawl", "stackexchange")}
FILTERS = ("gopher_repetition", "gopher_quality", "c4")
# Real documents per language (fewer where the machine has fewer), and the longest kept.
REAL_DOCS = {"en": 1500, "de": 400, "es": 400, "fr": 400, "it": 400, "nl": 400, "pt": 400}
MAX_CHARS = 200_000
TARGET_KEEP, TARGET_RULE, TARGET_SPEED = 0.995, 0.99, 10.0

# Runs inside the datatrove environment: every filter's decision on every document, and their CPU time.
DATATROVE_FILTERS = Path(__file__).with_name("datatrove_filters.py")

Decisions = list[list[tuple[bool, str | None]]]


def planted_documents() -> list[tuple[str, str]]:
    """The sample's English documents and a seeded edit of each, as (language, text)."""
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
    rng = random.Random(0)
    return [("en", t) for t in texts + [perturb(t, rng) for t in texts]]


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


def real_corpus() -> list[tuple[str, str]]:
    """Up to REAL_DOCS[lang] real documents of each language, each at most MAX_CHARS long."""
    docs = []
    for lang in REAL_LANGUAGES:
        texts = (t for t in real_documents(lang) if len(t) <= MAX_CHARS)
        docs.extend((lang, t) for t in itertools.islice(texts, REAL_DOCS[lang]))
    return docs


def ours(docs: list[tuple[str, str]]) -> tuple[float, Decisions]:
    chain = build_chain(
        FiltersConfig(
            gopher_repetition=GopherRepetitionConfig(), gopher_quality=GopherQualityConfig(), c4=C4Config()
        )
    )
    for lang in {lang for lang, _ in docs}:
        # Outside the timing, as on the datatrove side: the word rules and the compiled n-gram measures
        # load (once per worker process in a pipeline).
        run_chain(chain, Doc("0", "load the rules", "bench", lang=lang), evaluate_all=True)
    start = time.process_time()
    decisions = []
    for lang, text in docs:
        outcome = run_chain(chain, Doc("0", text, "bench", lang=lang), evaluate_all=True)
        decisions.append([(d.kept, d.rule) for d in outcome.decisions.values()])
    return time.process_time() - start, decisions


def baseline_python() -> Path:
    python = BASELINE_ENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BASELINE_ENV} with {' '.join(BASELINE_PINS)} (first run only)", flush=True)
        venv.create(BASELINE_ENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BASELINE_PINS], check=True)
    return python


def theirs(docs: list[tuple[str, str]]) -> tuple[float, Decisions]:
    stops = {lang: sorted(words) for lang, words in STOP_WORDS.items() if lang != "en"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        out = subprocess.run(
            [str(baseline_python()), "-P", str(DATATROVE_FILTERS), str(path), json.dumps(stops)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], [[(kept, rule) for kept, rule in d] for d in result["decisions"]]


def agreement_table(docs: list[tuple[str, str]], a: Decisions, b: Decisions) -> list[str]:
    """Per filter and language: documents, keep/drop and rule agreement, drops on each side."""
    rows = [f"{'filter':<18} {'lang':<4} {'docs':>5} {'keep/drop':>9} {'rule':>7} {'dropped ours/dt':>16}"]
    for f, name in enumerate(FILTERS):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (lang, _) in enumerate(docs):
            groups[lang].append(i)
        if len(groups) > 1:
            groups["all"] = list(range(len(docs)))
        for lang, idx in groups.items():
            keep = sum(a[i][f][0] == b[i][f][0] for i in idx) / len(idx)
            rule = sum(a[i][f] == b[i][f] for i in idx) / len(idx)
            drops = f"{sum(not a[i][f][0] for i in idx)}/{sum(not b[i][f][0] for i in idx)}"
            mark = "" if keep >= TARGET_KEEP and rule >= TARGET_RULE else "  below target"
            rows.append(f"{name:<18} {lang:<4} {len(idx):>5} {keep:>9.2%} {rule:>7.2%} {drops:>16}{mark}")
    return rows


def disagreements(docs: list[tuple[str, str]], a: Decisions, b: Decisions, limit: int = 10) -> list[str]:
    rows = []
    for (lang, text), x, y in zip(docs, a, b, strict=True):
        for name, dx, dy in zip(FILTERS, x, y, strict=True):
            if dx != dy and len(rows) < limit:
                rows.append(f"  {name} [{lang}]: ours {dx}, datatrove {dy}: {text[:70]!r}")
    return rows


def main() -> None:
    print("real text available here:", "; ".join(f"{lang} {real_sources(lang)}" for lang in REAL_LANGUAGES))
    real = real_corpus()
    counts = {lang: sum(d[0] == lang for d in real) for lang in REAL_LANGUAGES}
    print(f"real documents: {len(real)} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    our_seconds, our_real = ours(real)
    # Again, every chunk of text now in the word cache: the bound of a long-running worker's rate.
    warm_seconds, _ = ours(real)
    their_seconds, their_real = theirs(real)
    print("\n".join(agreement_table(real, our_real, their_real)))
    ours_rate, theirs_rate = len(real) / our_seconds, len(real) / their_seconds
    print(
        f"docs/s per core (all filters, all documents): ours {ours_rate:,.0f}, datatrove {theirs_rate:,.0f}"
    )
    print(f"speed ratio (ours / datatrove): {ours_rate / theirs_rate:.1f}x (target >= {TARGET_SPEED:.0f}x)")
    print(f"  ours on a second pass, every chunk's words cached: {len(real) / warm_seconds:,.0f} docs/s")
    print("\n".join(disagreements(real, our_real, their_real)))

    planted = planted_documents()
    splitter.cache_clear()  # a fresh word cache, as in a new worker
    our_seconds, our_planted = ours(planted)
    their_seconds, their_planted = theirs(planted)
    print(f"\nplanted edge cases: {len(planted)} English documents of the sample and an edit of each")
    print("\n".join(agreement_table(planted, our_planted, their_planted)))
    ours_rate, theirs_rate = len(planted) / our_seconds, len(planted) / their_seconds
    ratio = ours_rate / theirs_rate
    print(f"docs/s per core: ours {ours_rate:,.0f}, datatrove {theirs_rate:,.0f}, {ratio:.1f}x")
    print("\n".join(disagreements(planted, our_planted, their_planted)))


if __name__ == "__main__":
    main()
