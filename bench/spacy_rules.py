"""Regenerate `pipeline/spacy_rules.json.gz`: the word and sentence rules that datatrove 0.10.1 applies
through spaCy 3.8.18, as data that `pipeline.spacy_split` runs without spaCy.

    .venv/bin/python -m bench.spacy_rules

For each CulturaX language and English: the tokenizer's prefix, suffix and infix patterns, its URL and
token matchers and its special cases (`spacy.blank(lang).tokenizer`, the tokenizer datatrove assigns to
these languages); the sentencizer's punctuation; datatrove's punctuation set (what makes a "symbol word").
The rules are spaCy's (MIT licence) and datatrove's (Apache-2.0), exported from the pinned versions in
bench/.venv-datatrove, so the pipeline splits words exactly as the baseline does. French's token
matcher is exported factored (same matches, a tenth of the size) so that it compiles in about a second.
"""

from __future__ import annotations

import gzip
import json
import subprocess

from bench.filters import BASELINE_PINS, baseline_python
from common.files import write_bytes
from pipeline.spacy_split import LANGUAGES, RULES_PATH

EXPORT = r"""
import importlib, json, re, sys
import spacy
from spacy.pipeline.sentencizer import Sentencizer
from spacy.symbols import ORTH
from datatrove.utils.text import PUNCTUATION_SET

def pattern(fn):
    return None if fn is None else fn.__self__.pattern

def token_match(lang, fn):
    # French's token matcher is 266 anchored alternatives that repeat one 5 kB character class each:
    # `re` takes seconds per hundred copies to compile. Alternatives with the same tail (from their first
    # long class on) become one, `^(?:head|head...)tail`: the same language, the class compiled 15 times.
    if fn is None:
        return None
    module = importlib.import_module(f"spacy.lang.{lang}.tokenizer_exceptions")
    alts = module._regular_exp
    assert pattern(fn) == "(?iu)" + "|".join("(?:{})".format(m) for m in alts)
    tails = {}
    for alt in alts:
        assert alt.startswith("^") and alt.endswith("$")
        long_class = re.search(r"\[[^\]]{100,}\]", alt)
        cut = long_class.start() if long_class else len(alt) - 1
        tails.setdefault(alt[cut:], []).append(alt[1:cut])
    return "(?iu)" + "|".join(
        "(?:^(?:{}){})".format("|".join(f"(?:{h})" for h in heads), tail) for tail, heads in tails.items()
    )

languages = {}
for lang in sys.argv[1:]:
    tok = spacy.blank(lang).tokenizer
    languages[lang] = {
        "prefix": pattern(tok.prefix_search),
        "suffix": pattern(tok.suffix_search),
        "infix": pattern(tok.infix_finditer),
        "token_match": token_match(lang, tok.token_match),
        "url_match": pattern(tok.url_match),
        "specials": {key: [t[ORTH] for t in value] for key, value in sorted(tok.rules.items())},
    }
print(json.dumps({
    "spacy": spacy.__version__,
    "sentence_punct": sorted(Sentencizer.default_punct_chars),
    "punctuation": sorted(PUNCTUATION_SET),
    "languages": languages,
}))
"""


def main() -> None:
    out = subprocess.run(
        [str(baseline_python()), "-c", EXPORT, *LANGUAGES], capture_output=True, text=True, check=True
    ).stdout
    rules = json.loads(out)
    rules["pins"] = BASELINE_PINS
    write_bytes(RULES_PATH, gzip.compress(json.dumps(rules, ensure_ascii=False).encode(), mtime=0))
    print(f"wrote {RULES_PATH} ({RULES_PATH.stat().st_size / 1e3:.0f} kB) from spaCy {rules['spacy']}")


if __name__ == "__main__":
    main()
