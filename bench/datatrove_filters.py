"""datatrove's web filters on the documents `python -m bench.filters` hands it (it runs this file in the
datatrove environment, bench/.venv-datatrove: it imports nothing of this repository).

    python -P bench/datatrove_filters.py DOCS_JSONL STOP_WORDS_JSON

DOCS_JSONL holds one `[lang, text]` per line; STOP_WORDS_JSON maps a language to its stop words.
Prints one JSON line: `decisions` (per document, per filter `[kept, rule]`) and `seconds` (the CPU time
of the decisions, the tokenizers loaded before it).
"""

from __future__ import annotations

import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.text import split_into_words


def filter_chains(langs: set[str], stop_words: dict[str, list[str]]) -> dict[str, list]:
    return {
        lang: [
            GopherRepetitionFilter(language=lang),
            GopherQualityFilter(language=lang, stop_words=stop_words.get(lang)),
            C4QualityFilter(language=lang),
        ]
        for lang in langs
    }


def decide(chain: list, text: str) -> list[list]:
    """Each filter's `[kept, rule]` on `text` (every filter runs, as the bench compares each)."""
    out = []
    for step in chain:
        result = step.filter(Document(text=text, id="0"))
        rule = result[1] if isinstance(result, tuple) else None
        out.append([True, None] if result is True else [False, rule])
    return out


def main(docs_path: str, stop_words_json: str) -> None:
    with open(docs_path, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    chains = filter_chains({lang for lang, _ in docs}, json.loads(stop_words_json))
    for lang in chains:
        split_into_words("load the tokenizer", lang)  # outside the timing
    start = time.process_time()
    decisions = [decide(chains[lang], text) for lang, text in docs]
    print(json.dumps({"seconds": time.process_time() - start, "decisions": decisions}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
