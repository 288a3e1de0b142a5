"""Document filters: small steps that each keep or drop a document and say which rule fired.

Web text runs language ID, Gopher repetition, Gopher quality and C4 (FineWeb's order); code runs the
StarCoder filters. Rule names and thresholds follow datatrove's implementations of the same papers.
`run_chain` is the one code path for both the Ray job and `python -m pipeline explain`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline import langid
from pipeline.config import (
    C4Config,
    CodeConfig,
    FiltersConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LangIdConfig,
)
from pipeline.spacy_split import count_sentences, punctuation, split_words
from pipeline.stop_words import stop_words


@dataclass
class Doc:
    id: str
    text: str
    source: str
    lang: str = ""
    lang_score: float = 0.0
    meta: str = "{}"
    # The language whose word rules and stop words the filters use: set by language ID to the detected
    # language when the source keeps it, else to the source's first, so that a document dropped for its
    # language is still judged (by `explain`) as its source's text is. Unset: `lang`.
    rules_lang: str = ""
    # Words of the current text, shared by the filters that need them (reset when the text changes).
    _words: list[str] | None = field(default=None, repr=False)

    @property
    def text_lang(self) -> str:
        return self.rules_lang or self.lang

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = split_words(self.text, self.text_lang)
        return self._words

    def set_text(self, text: str) -> None:
        self.text, self._words = text, None


@dataclass(frozen=True)
class Decision:
    kept: bool
    rule: str | None = None
    # The document's new text when the filter rewrote it (C4 keeps only its good lines); `run_chain`
    # gives it to the document before the next filter runs.
    text: str | None = field(default=None, repr=False)


KEEP = Decision(True)


class Filter(Protocol):
    name: str

    def __call__(self, doc: Doc) -> Decision: ...


class LangIdFilter:
    """fastText lid.176; sets `doc.lang` and `doc.lang_score` whatever the decision."""

    name = "langid"

    def __init__(self, cfg: LangIdConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> Decision:
        doc.lang, doc.lang_score = langid.identify(doc.text)
        kept_as = self.cfg.languages[0] if self.cfg.languages else doc.lang
        doc.rules_lang = doc.lang if doc.lang in self.cfg.languages else kept_as
        if doc.lang not in self.cfg.languages:
            return Decision(False, "wrong_language")
        if doc.lang_score < self.cfg.threshold:
            return Decision(False, "low_score")
        return KEEP


_PARAGRAPH_RE = re.compile(r"\n{2,}")


def _lines(text: str) -> list[str]:
    """`re.split(r"\n+", text)`, the lines datatrove compares, at a third of its cost: a run of newlines
    leaves empty pieces between its newlines, never at the text's ends (where the regex keeps them)."""
    parts = text.split("\n")
    return parts if len(parts) < 3 else [parts[0], *filter(None, parts[1:-1]), parts[-1]]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


class GopherRepetitionFilter:
    """Gopher Table A1: duplicate lines, paragraphs and n-grams. A line or paragraph threshold of 0
    turns its rule off, as in datatrove (FineWeb-2 turns three of them off that way)."""

    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionConfig):
        # Imported here, by the processes that filter: numba adds about 150 MiB to a process.
        from pipeline.ngrams import NGrams

        self.cfg, self.ngrams = cfg, NGrams

    def __call__(self, doc: Doc) -> Decision:
        text, cfg = doc.text, self.cfg
        if not text:
            return Decision(False, "empty")
        paragraphs = _PARAGRAPH_RE.split(text.strip())
        dups, chars = _duplicates(paragraphs)
        if cfg.dup_para_frac and dups / len(paragraphs) > cfg.dup_para_frac:
            return Decision(False, "dup_para_frac")
        if cfg.dup_para_char_frac and chars / len(text) > cfg.dup_para_char_frac:
            return Decision(False, "dup_para_char_frac")
        lines = _lines(text)
        dups, chars = _duplicates(lines)
        if cfg.dup_line_frac and dups / len(lines) > cfg.dup_line_frac:
            return Decision(False, "dup_line_frac")
        if cfg.dup_line_char_frac and chars / len(text) > cfg.dup_line_char_frac:
            return Decision(False, "dup_line_char_frac")
        ngrams = self.ngrams(doc.words)
        for n, frac in cfg.top_n_grams:
            if ngrams.count >= n and ngrams.top_chars(n) / len(text) > frac:
                return Decision(False, f"top_{n}_gram")
        for n, frac in cfg.dup_n_grams:
            if ngrams.duplicated_chars(n) / len(text) > frac:
                return Decision(False, f"duplicated_{n}_n_grams")
        return KEEP


class GopherQualityFilter:
    """Gopher's quality rules: word counts and lengths, symbols, bullets, ellipses, alphabetic words,
    stop words. A threshold of 0 turns its rule off, as in datatrove."""

    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig):
        self.cfg = cfg
        self.custom_stop_words = frozenset(cfg.stop_words) if cfg.stop_words is not None else None

    def __call__(self, doc: Doc) -> Decision:
        text, cfg, words = doc.text, self.cfg, doc.words
        # Word statistics over distinct words, weighted by their counts (real text repeats its words).
        counts = Counter(words)
        symbols = punctuation()
        n_non_symbol = non_symbol_chars = alpha = 0
        for word, count in counts.items():
            if not symbols.issuperset(word):
                n_non_symbol += count
                non_symbol_chars += count * len(word)
            if word.isalpha() or any(c.isalpha() for c in word):
                alpha += count
        if cfg.min_doc_words and n_non_symbol < cfg.min_doc_words:
            return Decision(False, "gopher_short_doc")
        if cfg.max_doc_words and n_non_symbol > cfg.max_doc_words:
            return Decision(False, "gopher_long_doc")
        mean_len = non_symbol_chars / n_non_symbol if n_non_symbol else float("nan")
        if cfg.min_avg_word_length and mean_len < cfg.min_avg_word_length:
            return Decision(False, "gopher_below_avg_threshold")
        if cfg.max_avg_word_length and mean_len > cfg.max_avg_word_length:
            return Decision(False, "gopher_above_avg_threshold")
        if not words:  # only reachable with the word-count rule off; datatrove fails on it
            return Decision(False, "empty")
        if cfg.max_symbol_word_ratio and text.count("#") / len(words) > cfg.max_symbol_word_ratio:
            return Decision(False, "gopher_too_many_hashes")
        ellipses = text.count("...") + text.count("…")
        if cfg.max_symbol_word_ratio and ellipses / len(words) > cfg.max_symbol_word_ratio:
            return Decision(False, "gopher_too_many_ellipsis")
        lines = text.splitlines()
        bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
        if cfg.max_bullet_lines_ratio and bullets / len(lines) > cfg.max_bullet_lines_ratio:
            return Decision(False, "gopher_too_many_bullets")
        ellipsis_lines = sum(line.rstrip().endswith(("...", "…")) for line in lines)
        if cfg.max_ellipsis_lines_ratio and ellipsis_lines / len(lines) > cfg.max_ellipsis_lines_ratio:
            return Decision(False, "gopher_too_many_end_ellipsis")
        if cfg.min_alpha_words_ratio and alpha / len(words) < cfg.min_alpha_words_ratio:
            return Decision(False, "gopher_below_alpha_threshold")
        # Case-sensitive like Gopher and datatrove: "The" is not "the".
        stops = self.custom_stop_words if self.custom_stop_words is not None else stop_words(doc.text_lang)
        if cfg.min_stop_words and len(stops.intersection(counts)) < cfg.min_stop_words:
            return Decision(False, "gopher_enough_stop_words")
        return KEEP


_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY_RE = re.compile("terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies")


class C4QualityFilter:
    """C4's line and page rules. Keeps only the lines that pass: a kept document's decision carries them."""

    name = "c4"

    def __init__(self, cfg: C4Config):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> Decision:
        cfg = self.cfg
        kept: list[str] = []
        sentences = 0
        for stripped in map(str.strip, doc.text.splitlines()):
            # Most lines fail the punctuation rule: their words are split only when a rule needs them.
            words = None
            if len(stripped) > cfg.max_word_length >= 0:
                words = stripped.split()
                if any(len(w) > cfg.max_word_length for w in words):
                    continue
            line = stripped
            if cfg.remove_citations and "[" in line:  # every citation pattern starts with "["
                line = _CITATION_RE.sub("", line)
            if cfg.filter_no_terminal_punct and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
                continue
            if len(words if words is not None else stripped.split()) < cfg.min_words_per_line:
                continue
            lower = line.lower()
            if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
                return Decision(False, "lorem_ipsum")
            if cfg.filter_javascript and "javascript" in lower:
                continue
            if cfg.filter_curly_bracket and "{" in line:
                return Decision(False, "curly_bracket")
            if cfg.filter_policy and _POLICY_RE.search(lower):
                continue
            sentences += count_sentences(line, doc.text_lang)
            kept.append(line)
        if sentences < cfg.min_num_sentences:
            return Decision(False, "too_few_sentences")
        return Decision(True, text="\n".join(kept).strip())


_AUTOGEN_RE = re.compile(
    r"auto-?generated|automatically generated|generated by|do not edit|code generator", re.IGNORECASE
)
# Literal-looking tokens: numbers, hex, and quoted short strings, as in data dumps and lookup tables:
#   0[xX][0-9a-fA-F]+ | -?\d[\d.eE+-]* | "[^"\n]{0,20}"
# written to start with one character class (then a lookbehind picks the alternative), so that the
# regex engine skips ahead to the next candidate character instead of trying every position.
_DATA_TOKEN_RE = re.compile(
    r'[-\d"](?:(?<=0)[xX][0-9a-fA-F]+|(?<=-)\d[\d.eE+-]*|(?<=\d)[\d.eE+-]*|(?<=")[^"\n]{0,20}")'
)
_ASCII_NON_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())
_ASCII_RUN_RE = re.compile(r"[\x00-\x7f]+")


def _alnum_chars(text: str) -> int:
    """How many characters of `text` are alphanumeric (`str.isalnum`): ASCII ones counted in bytes."""
    ascii_bytes = text.encode("ascii", "ignore")
    count = len(ascii_bytes.translate(None, _ASCII_NON_ALNUM))
    if len(ascii_bytes) != len(text):
        count += sum(map(str.isalnum, _ASCII_RUN_RE.sub("", text)))
    return count


class CodeFilter:
    """StarCoder's filters: long lines, low alphanumeric fraction, auto-generated and data-like files."""

    name = "code"

    def __init__(self, cfg: CodeConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> Decision:
        text, cfg = doc.text, self.cfg
        if not text.strip():
            return Decision(False, "empty")
        lines = text.splitlines()
        lengths = [len(line) for line in lines]
        if max(lengths) > cfg.max_line_length:
            return Decision(False, "max_line_length")
        if sum(lengths) / len(lines) > cfg.max_mean_line_length:
            return Decision(False, "mean_line_length")
        if _alnum_chars(text) / len(text) < cfg.min_alnum_fraction:
            return Decision(False, "alnum_fraction")
        if cfg.filter_autogenerated and _AUTOGEN_RE.search("\n".join(lines[:5])):
            return Decision(False, "autogenerated")
        visible = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
        data_chars = sum(map(len, _DATA_TOKEN_RE.findall(text)))
        if data_chars / max(visible, 1) > cfg.max_data_char_fraction:
            return Decision(False, "data_like")
        return KEEP


# Every filter by the name of its config section (`FiltersConfig`, whose field order is the chain's).
FILTERS: dict[str, Callable[[Any], Filter]] = {
    f.name: f
    for f in (LangIdFilter, GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, CodeFilter)
}


def build_chain(cfg: FiltersConfig) -> list[Filter]:
    """The filters a source enables, in their fixed order."""
    return [FILTERS[name](getattr(cfg, name)) for name in cfg.enabled()]


@dataclass
class Outcome:
    kept: bool
    reason: str | None  # the first filter that dropped the document
    rule: str | None
    decisions: dict[str, Decision]


def run_chain(chain: list[Filter], doc: Doc, evaluate_all: bool = False) -> Outcome:
    """Run `chain` on `doc`, whose text becomes each rewriting filter's. Stops at the first drop unless
    `evaluate_all`, which also records what every later filter would decide; kept/reason are the same
    either way."""
    decisions: dict[str, Decision] = {}
    first: tuple[str, str | None] | None = None
    for step in chain:
        decision = step(doc)
        decisions[step.name] = decision
        if decision.text is not None:
            doc.set_text(decision.text)
        if not decision.kept and first is None:
            first = (step.name, decision.rule)
            if not evaluate_all:
                break
    if first is None:
        return Outcome(True, None, None, decisions)
    return Outcome(False, first[0], first[1], decisions)
