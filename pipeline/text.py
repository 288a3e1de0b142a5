"""Language-aware word and sentence splitting shared by the filters and dedup.

Words follow the spaCy tokenizer that datatrove uses closely enough for its thresholds: URLs and
e-mails stay whole, punctuation is its own token, numbers keep their separators, and elided
articles (l', dell', d') split from the next word.
"""

from __future__ import annotations

import unicodedata

import regex

_WORD_RE = regex.compile(
    r"""
    (?:https?://|www\.)\S+[^\s.,;:!?)\]'"]            # URL
    | [\w.+-]+@[\w-]+(?:\.[\w-]+)+                       # e-mail
    | \p{L}[\p{L}\p{M}]*['’](?=\p{L})                    # elided article: l', d', dell'
    | [\p{L}\p{M}\p{N}_]*\p{L}[\p{L}\p{M}\p{N}_]*         # word with at least one letter
    | \p{N}+(?:[.,:/]\p{N}+)*                            # number: 1,000  3.5  12:30
    | \.{2,} | …                                         # ellipsis
    | \S                                                 # any other symbol
    """,
    regex.VERBOSE,
)

# A line's sentences end at terminal punctuation followed by a space and more text.
_SENTENCE_END_RE = regex.compile(r"""[.!?…]+['"”’)\]]*\s+(?=\S)""")

_MARKS_RE = regex.compile(r"\p{Mn}+")
_DIGITS_RE = regex.compile(r"\p{N}+")
_PUNCT_RE = regex.compile(r"[\p{P}\p{S}]+")

# Gopher's eight English stop words; for the other languages, the most frequent function words.
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"the", "be", "to", "of", "and", "that", "have", "with"}),
    "de": frozenset({"der", "die", "das", "und", "ist", "zu", "den", "mit", "von", "nicht", "ein", "eine"}),
    "es": frozenset({"el", "la", "de", "que", "y", "en", "los", "con", "las", "por", "un", "una"}),
    "fr": frozenset({"le", "la", "de", "et", "les", "des", "que", "est", "du", "en", "un", "une"}),
    "it": frozenset({"il", "la", "di", "che", "e", "per", "con", "un", "una", "del", "della", "non"}),
    "nl": frozenset({"de", "het", "een", "en", "van", "is", "dat", "op", "te", "met", "voor", "niet"}),
    "pt": frozenset({"o", "a", "de", "que", "e", "do", "da", "em", "com", "os", "um", "uma", "não"}),
}

# Punctuation as datatrove counts it: a word made only of these is a "symbol word".
PUNCTUATION = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))
)


def split_words(text: str) -> list[str]:
    """Words and punctuation tokens of `text`, in order."""
    return _WORD_RE.findall(text)


def count_sentences(line: str) -> int:
    """Sentences in one line: terminal punctuation followed by more text starts a new one."""
    return len(_SENTENCE_END_RE.findall(line)) + 1 if line.strip() else 0


def stop_words(lang: str) -> frozenset[str]:
    return STOP_WORDS.get(lang, STOP_WORDS["en"])


def normalize_for_dedup(text: str) -> str:
    """Lowercased, accent-stripped, digits-collapsed, punctuation-free text, for exact dedup and shingles."""
    text = _MARKS_RE.sub("", unicodedata.normalize("NFKD", text.lower()))
    text = _DIGITS_RE.sub("0", text)
    return " ".join(_PUNCT_RE.sub(" ", text).split())
