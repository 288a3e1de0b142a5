"""Generate the bundled sample corpus in each source's native schema and file format.

    .venv/bin/python data/sample/make.py      # rewrites data/sample/{refinedweb,...}/ and labels.jsonl

Normal documents are composed from the hand-written sentence banks in banks.py and code_banks.py;
planted cases (spam, repetition, gibberish, foreign languages, duplicates, Books3, malformed rows,
pages quoting an item of a bundled eval task and clean look-alikes of them) are placed at known rows and
listed in labels.jsonl with the fate the pipeline must give them. The eval pages come last, from their
own random stream, so the rows before them do not depend on data/eval.
Deterministic: the same script writes the same files.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from banks import CONNECTIVES, FORUM, OUT_OF_SCOPE, QUIZ, SLOTS, WIKI  # noqa: E402
from code_banks import CODE, FIELDS, IDENTIFIERS, NOUNS  # noqa: E402

LANGS = ("en", "de", "es", "fr", "it", "nl", "pt")
SEED = 20240119
EVAL_ITEMS = HERE.parent / "eval"  # the bundled eval tasks' items (data/eval/make.py)


class Corpus:
    """Rows per output file, plus the labels of the planted ones."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.files: dict[str, list] = {}
        self.labels: list[dict] = []

    def add(self, source: str, rel: str, row, case: str | None = None, expected: str = "", reason=None):
        rows = self.files.setdefault(f"{source}/{rel}", [])
        rows.append(row)
        doc_id = f"{source}/{'/'.join(Path(rel).parts[-2:])}#{len(rows) - 1}"
        if case:
            self.labels.append({"id": doc_id, "case": case, "expected": expected, "reason": reason})
        return doc_id


def sentence_bank(lang: str, style: str) -> list[str]:
    return [s for s in (WIKI if style == "wiki" else FORUM)[lang].splitlines() if s]


def compose(rng: random.Random, lang: str, style: str) -> str:
    """A wiki article (6-9 sentences) or forum thread (5-7), in paragraphs, with a title line.

    Few sentences per document and a connective before some of them keep two documents of the
    same bank from being near-duplicates of each other."""
    slots = {k: rng.choice(v) for k, v in SLOTS[lang].items()}
    k = rng.randint(6, 9) if style == "wiki" else rng.randint(5, 7)
    sentences = rng.sample(sentence_bank(lang, style), k)
    filled = [
        s.format(y=rng.randint(1450, 1990), n=rng.randint(900, 48000), m=rng.randint(3, 60), **slots)
        for s in sentences
    ]
    filled = [connect(rng, lang, s) for s in filled]
    paragraphs, i = [], 0
    while i < len(filled):
        k = rng.randint(1, 3)
        paragraphs.append(" ".join(filled[i : i + k]))
        i += k
    title = slots["c"] if style == "wiki" else f"{slots['c']} - {rng.choice(['help', 'advice', 'question'])}"
    return title + "\n\n" + "\n\n".join(paragraphs)


def connect(rng: random.Random, lang: str, sentence: str) -> str:
    if rng.random() < 0.5 or sentence[0] == "{" or not sentence[0].isupper():
        return sentence
    marker = rng.choice(CONNECTIVES[lang])
    return f"{marker} {sentence[0].lower()}{sentence[1:]}"


def code_file(rng: random.Random, lang: str) -> str:
    templates, header, _ = CODE[lang]
    parts = []
    for template in rng.sample(templates, rng.randint(2, min(4, len(templates)))):
        noun = rng.choice(NOUNS)
        parts.append(
            template.format(noun=noun, Noun=noun.capitalize(), field=rng.choice(FIELDS), n=rng.randint(2, 64))
        )
    renames = {word: rng.choice(choices) for word, choices in IDENTIFIERS.items()}
    return re.sub(
        r"\b(" + "|".join(renames) + r")\b", lambda m: renames[m.group(1)], header + "\n\n".join(parts)
    )


def web_meta(rng: random.Random, lang: str, i: int) -> dict:
    tld = {"en": "co.uk", "de": "de", "es": "es", "fr": "fr", "it": "it", "nl": "nl", "pt": "pt"}[lang]
    site = rng.choice(["heimat", "regio", "town", "forum", "wiki", "history", "local"])
    return {
        "url": f"https://www.{site}{rng.randint(1, 999)}.{tld}/page/{i}",
        "timestamp": f"20{rng.randint(13, 23)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
    }


def web_row(rng: random.Random, text: str, i: int = 0) -> dict:
    return {"content": text, **web_meta(rng, "en", i), "dump": "CC-MAIN-2023-06", "segment": "1674"}


def planted_texts(rng: random.Random) -> dict[str, str]:
    base = sentence_bank("en", "wiki")
    filler = " ".join(
        s.format(c="Ashford", r="Wye", p="Mary Whitfield", y=1850, n=5000, m=12) for s in base[:6]
    )
    return {
        "boilerplate": "\n".join(
            [
                "Home About Us Products Blog Contact",
                "This website uses cookies to improve your experience. Accept all cookies.",
                "Ashford Garden Supplies",
                filler.split(". ")[0] + ".",
                "Search our catalogue of seeds, bulbs, tools and garden furniture for every season",
                "Opening hours Monday to Saturday nine to five, Sunday closed, bank holidays by appointment",
                "Privacy Policy | Terms of Use | Sitemap | Delivery information | Returns and refunds policy",
                "Sign up for our newsletter and receive a discount code for your first order with us today",
                "Follow us on social media for the latest offers and news from the team at the garden centre",
                "Copyright 2023 Ashford Garden Supplies. All rights reserved.",
            ]
        ),
        "keyword_spam": " ".join(
            ["cheap watches online buy cheap watches best price cheap watches sale"] * 12
        ),
        "repeated_lines": "\n".join(
            [filler] + ["Free shipping on all orders over fifty pounds, order today and save."] * 12
        ),
        "curly_bracket": filler.replace(". ", ".\n")
        + "\nTo open the menu, add this to your script: function toggle() { menu.hidden = !menu.hidden; }."
        + "\nThe menu will then open and close when a visitor clicks on the button.",
        "gibberish": " ".join(
            "".join(rng.choice("bcdfghjklmnpqrstvwxzy") for _ in range(rng.randint(3, 9))) for _ in range(120)
        ),
        "short_page": "Under construction. Come back soon!",
    }


def build_web_source(c: Corpus) -> dict[str, str]:
    """RefinedWeb: three parquet files of English pages with planted cases; returns texts reused elsewhere."""
    rng, shared = c.rng, {}
    for f in range(3):
        rel = f"data/train-0000{f}-of-00003.parquet"
        for i in range(400):
            text = compose(rng, "en", rng.choice(["wiki", "wiki", "forum"]))
            doc_id = c.add("refinedweb", rel, web_row(rng, text, i))
            if f == 0 and i in (5, 7):
                shared[f"rw{i}"] = text
                c.labels.append(
                    {"id": doc_id, "case": "original of duplicates", "expected": "kept", "reason": None}
                )
    planted = planted_texts(rng)
    reasons = {
        "boilerplate": "c4",
        "keyword_spam": "gopher_repetition",
        "repeated_lines": "gopher_repetition",
        "curly_bracket": "c4",
        "gibberish": "langid",
        "short_page": "gopher_repetition",
    }
    rel = "data/train-00002-of-00003.parquet"
    for case, text in planted.items():
        c.add("refinedweb", rel, web_row(rng, text), case, "dropped", reasons[case])
    for lang in ("pl", "ru"):
        text = " ".join(rng.sample(OUT_OF_SCOPE[lang], 6))
        c.add("refinedweb", rel, web_row(rng, text), f"out-of-scope {lang}", "dropped", "langid")
    # Exact duplicates: a byte-identical copy in the same source, and a re-cased, re-spaced copy elsewhere.
    c.add("refinedweb", rel, web_row(rng, shared["rw7"]), "exact dup", "duplicate", "exact_dup")
    return shared


def build_redpajama(c: Corpus, shared: dict[str, str]) -> None:
    rng = c.rng
    for subset, rel, count, style in [
        ("c4", "c4/c4-train.00000-of-01024.jsonl", 150, "wiki"),
        ("stackexchange", "stackexchange/stackexchange.jsonl", 80, "forum"),
        ("common_crawl", "common_crawl/2023-06/en_head_0000.json.gz", 150, "wiki"),
    ]:
        for i in range(count):
            meta = {"source": subset, "language": "en", **web_meta(rng, "en", i)}
            c.add(
                "redpajama",
                rel,
                {"text": compose(rng, "en", style), "meta": meta, "red_pajama_subset": subset},
            )
    rel = "wikipedia/wiki.jsonl"
    for i in range(84):
        lang = LANGS[i % len(LANGS)]
        meta = {
            "title": rng.choice(SLOTS[lang]["c"]),
            "language": lang,
            "url": f"https://{lang}.wikipedia.org/wiki/{i}",
        }
        c.add(
            "redpajama",
            rel,
            {"text": compose(rng, lang, "wiki"), "meta": meta, "red_pajama_subset": "wikipedia"},
        )
    shared["wiki_de"] = c.files[f"redpajama/{rel}"][1]["text"]
    wiki_meta = {"title": "Miasto", "language": "pl"}
    text = " ".join(OUT_OF_SCOPE["pl"])
    c.add(
        "redpajama",
        rel,
        {"text": text, "meta": wiki_meta, "red_pajama_subset": "wikipedia"},
        "out-of-scope pl",
        "dropped",
        "langid",
    )
    for i in range(2):
        meta = {"short_book_title": f"The Long Road Home {i}", "publication_date": 1998 + i}
        row = {"text": compose(rng, "en", "wiki") * 3, "meta": meta, "red_pajama_subset": "book"}
        c.add(
            "redpajama", "book/book.jsonl", row, "books subset (Books3)", "excluded", "red_pajama_subset=book"
        )
    rel = "c4/c4-train.00000-of-01024.jsonl"
    # Same words, other punctuation and spacing: equal after normalization.
    respaced = shared["rw7"].replace(", ", " ,  ").replace("\n\n", "\n")
    row = {"text": respaced, "meta": {"source": "c4"}, "red_pajama_subset": "c4"}
    c.add("redpajama", rel, row, "exact dup (normalized)", "duplicate", "exact_dup")
    bad_lines = [
        ("malformed json", b'{"text": "The river crossing was rebuilt in 1850 and', "malformed json"),
        ("wrong schema", b'{"text": 42, "meta": {}, "red_pajama_subset": "c4"}', "wrong schema"),
        (
            "invalid utf-8",
            b'{"text": "caf\xe9 au lait \xff\xfe", "meta": {}, "red_pajama_subset": "c4"}',
            "invalid utf-8",
        ),
        ("empty document", b'{"text": "   \\n ", "meta": {}, "red_pajama_subset": "c4"}', "empty document"),
    ]
    for case, raw, reason in bad_lines:
        c.add("redpajama", rel, raw, case, "bad", reason)


def build_pile(c: Corpus, shared: dict[str, str]) -> None:
    rng, rel = c.rng, "train/00.jsonl.zst"
    for _ in range(300):
        name, style = rng.choice(
            [("Pile-CC", "wiki"), ("Wikipedia (en)", "wiki"), ("StackExchange", "forum")]
        )
        c.add("pile", rel, {"text": compose(rng, "en", style), "meta": {"pile_set_name": name}})
    books = compose(rng, "en", "wiki") * 4
    c.add(
        "pile",
        rel,
        {"text": books, "meta": {"pile_set_name": "Books3"}},
        "Books3",
        "excluded",
        "meta.pile_set_name=Books3",
    )
    # Near duplicate of a RefinedWeb page: one word changed, as mirrors and scrapes do.
    near = shared["rw5"].replace(" the ", " this ", 1)
    c.add(
        "pile",
        rel,
        {"text": near, "meta": {"pile_set_name": "Pile-CC"}},
        "near dup across sources",
        "duplicate",
        "near_dup",
    )
    huge = compose(rng, "en", "wiki") * 200
    c.add(
        "pile",
        rel,
        {"text": huge, "meta": {"pile_set_name": "Pile-CC"}},
        "huge document",
        "bad",
        "huge document",
    )
    c.add("pile", rel, b'{"text": "unterminated', "malformed json", "bad", "malformed json")


def build_starcoder(c: Corpus) -> None:
    rng = c.rng
    for lang, (_, _, ext) in CODE.items():
        rel = f"{lang}/train-00000-of-00001.parquet"
        for i in range(80):
            noun = rng.choice(NOUNS)
            row = {
                "content": code_file(rng, lang),
                "max_stars_repo_name": f"{rng.choice(['acme', 'opensrc', 'devtools'])}/{noun}-{lang}",
                "max_stars_repo_path": f"src/{noun}_{i}{ext}",
                "max_stars_count": rng.randint(0, 5000),
                "id": f"{lang}-{i:05d}",
            }
            c.add("starcoder", rel, row)
    planted = {
        "autogenerated": (
            "go",
            "// Code generated by protoc-gen-go. DO NOT EDIT.\n" + code_file(rng, "go"),
            "autogenerated",
        ),
        "data-like": (
            "python",
            "VALUES = [\n" + "".join(f"    {rng.random():.6f},\n" for _ in range(400)) + "]\n",
            "data_like",
        ),
        "minified": (
            "javascript",
            "var a=" + ";var b=".join(f"function(x){{return x*{i}}}" for i in range(120)) + ";\n",
            "max_line_length",
        ),
        "ascii art": (
            "python",
            "\n".join(["#" + "=+" * 30, "#" + "  |" * 20, "#" + "-*" * 30] * 20) + "\n",
            "alnum_fraction",
        ),
    }
    for case, (lang, text, reason) in planted.items():
        row = {
            "content": text,
            "max_stars_repo_name": "misc/planted",
            "max_stars_repo_path": f"{case}.txt",
            "max_stars_count": 0,
            "id": f"planted-{case.replace(' ', '-')}",
        }
        c.files[f"starcoder/{lang}/train-00000-of-00001.parquet"].append(row)
        label = {
            "id": f"starcoder/{row['id']}",
            "case": case,
            "expected": "dropped",
            "reason": "code",
            "rule": reason,
        }
        c.labels.append(label)


def build_culturax(c: Corpus, shared: dict[str, str]) -> None:
    rng = c.rng
    for lang in LANGS[1:]:
        rel = f"{lang}/{lang}_part_00000.parquet"
        for i in range(200):
            style = rng.choice(["wiki", "wiki", "forum"])
            row = {
                "text": compose(rng, lang, style),
                **web_meta(rng, lang, i),
                "source": rng.choice(["mC4", "OSCAR-2301"]),
            }
            c.add("culturax", rel, row)
    rel = "de/de_part_00000.parquet"
    for lang in ("tr", "sv"):
        row = {"text": " ".join(rng.sample(OUT_OF_SCOPE[lang], 6)), **web_meta(rng, "de", 0), "source": "mC4"}
        c.add("culturax", rel, row, f"out-of-scope {lang}", "dropped", "langid")
    row = {"text": compose(rng, "en", "wiki"), **web_meta(rng, "fr", 0), "source": "OSCAR-2301"}
    c.add("culturax", "fr/fr_part_00000.parquet", row, "English in the French split", "dropped", "langid")
    near = shared["wiki_de"].replace(" die ", " jene ", 1)
    row = {"text": near, **web_meta(rng, "de", 1), "source": "mC4"}
    c.add("culturax", rel, row, "near dup of a RedPajama Wikipedia page", "duplicate", "near_dup")


def eval_item(task: str, lang: str, rng: random.Random) -> tuple[str, str]:
    """(item id, the text the model is scored on: question, a space, the right answer) of one test item."""
    lines = (EVAL_ITEMS / task / f"{lang}_test.jsonl").read_text(encoding="utf-8").splitlines()
    item = json.loads(rng.choice(lines))
    answer = item["choices"][item["answer"]] if "choices" in item else item["answer"]
    # Quoted on one line ending in a full stop, as a page would (and C4's line rules keep it).
    return item["id"], f"{item['question']} {answer}".replace("\n", " ") + "."


def build_eval_pages(c: Corpus) -> None:
    """Per bundled task and language, two pages quoting a test item whole in a paragraph (contaminated)
    and two on the same item with an aside inside it (clean: they share no n-gram with any item)."""
    rng = random.Random(f"{SEED}-eval")
    for task in ("stablelm2_cloze", "stablelm2_gen"):
        for lang in LANGS:
            source, rel = (
                ("refinedweb", "data/train-00001-of-00003.parquet")
                if lang == "en"
                else ("culturax", f"{lang}/{lang}_part_00000.parquet")
            )
            lead, aside = QUIZ[lang]
            items = [eval_item(task, lang, rng) for _ in range(2)]
            for k in range(4):
                item_id, quote = items[k % 2]
                if k < 2:
                    sentence, expected, reason = f"{lead} {quote}", "contaminated", f"{task}_{lang}"
                else:
                    words = quote.split()
                    mid = len(words) // 2
                    sentence = " ".join([*words[:mid], aside, *words[mid:]])
                    expected, reason = "kept", None
                text = compose(rng, lang, "wiki")
                paragraphs = text.split("\n\n")
                at = rng.randint(1, len(paragraphs) - 1)
                paragraphs[at] = f"{paragraphs[at]} {sentence}"
                row = web_row(rng, "\n\n".join(paragraphs))
                if source == "culturax":
                    row = {"text": row["content"], **web_meta(rng, lang, k), "source": "mC4"}
                case = f"eval item {task} {item_id} {'quoted' if k < 2 else 'look-alike'}"
                c.add(source, rel, row, case, expected, reason)


def write(c: Corpus) -> None:
    for rel, rows in c.files.items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd", row_group_size=128)
            continue
        lines = b"".join(
            (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in rows
        )
        if rel.endswith(".zst"):
            lines = zstandard.ZstdCompressor(level=19).compress(lines)
        elif rel.endswith(".gz"):
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
                g.write(lines)
            lines = buf.getvalue()
        path.write_bytes(lines)
    # A parquet file cut short, as a failed upload leaves it.
    broken = HERE / "starcoder/go/train-00001-of-00002.parquet"
    broken.write_bytes((HERE / "starcoder/go/train-00000-of-00001.parquet").read_bytes()[:3000])
    c.labels.append(
        {
            "id": "starcoder/go/train-00001-of-00002.parquet#-1",
            "case": "truncated parquet file",
            "expected": "bad",
            "reason": "truncated file",
        }
    )
    with open(HERE / "labels.jsonl", "w", encoding="utf-8") as f:
        for label in c.labels:
            f.write(json.dumps(label, ensure_ascii=False) + "\n")


def main() -> None:
    c = Corpus()
    shared = build_web_source(c)
    build_redpajama(c, shared)
    build_pile(c, shared)
    build_starcoder(c)
    build_culturax(c, shared)
    build_eval_pages(c)
    write(c)
    print(f"{sum(len(r) for r in c.files.values())} rows in {len(c.files)} files, {len(c.labels)} labels")


if __name__ == "__main__":
    main()
