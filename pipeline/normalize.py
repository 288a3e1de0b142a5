"""Text normalisation for matching: dedup's normalized text, and the punctuation that dedup and
decontamination strip."""

from __future__ import annotations

import re
import string
import unicodedata

import regex

_MARKS_RE = regex.compile(r"\p{Mn}+")
_DIGITS_RE = regex.compile(r"\p{N}+")
# Unicode punctuation and symbols: a superset of ASCII `string.punctuation` that covers the seven
# languages' own marks (« » ¿ ¡ „). Dedup and decontamination both strip it.
PUNCTUATION_RE = regex.compile(r"[\p{P}\p{S}]+")


# The same steps on ASCII text, where NFKD changes nothing, there are no marks, the digits are 0-9
# and the punctuation and symbols are exactly `string.punctuation`: 84% of the benchmark corpus's
# documents, at about half the cost.
_ASCII_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))
_DELETE_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_DIGITS_RE = re.compile(r"[0-9]+")


def delete_punctuation(text: str) -> str:
    """`PUNCTUATION_RE.sub("", text)`, by a translation table when the text is ASCII."""
    return text.translate(_DELETE_ASCII_PUNCTUATION) if text.isascii() else PUNCTUATION_RE.sub("", text)


def normalize_for_dedup(text: str) -> str:
    """Lowercased, accent-stripped, digits-collapsed, punctuation-free text, for exact dedup and shingles."""
    if text.isascii():
        return " ".join(_ASCII_DIGITS_RE.sub("0", text.lower().translate(_ASCII_PUNCTUATION)).split())
    return normalize_unicode(text)


def normalize_unicode(text: str) -> str:
    """normalize_for_dedup for any text."""
    text = _MARKS_RE.sub("", unicodedata.normalize("NFKD", text.lower()))
    text = _DIGITS_RE.sub("0", text)
    return " ".join(PUNCTUATION_RE.sub(" ", text).split())
