"""What a regex's matches can start or end with, from its parse tree, so that a chunk of text whose edge
character no match can have skips the (slow) regex.

The spaCy tokenizer rules (`pipeline.spacy_split`) are long alternations of affix patterns; for most
characters only a few alternatives, or none, can match there. `EdgeIndex` splits a pattern into its
alternatives and indexes them by their edge characters, `edge_class` is one character class of them all,
and `suffix_reach` bounds how far from a chunk's end a suffix can start. The tree comes from
`pipeline.regex_parse`, the one module that reads CPython's private parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from pipeline import regex_parse as sre

_ZERO_WIDTH = (sre.AT, sre.ASSERT, sre.ASSERT_NOT)
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_Ranges = list[tuple[int, int]] | None


def _edge_ranges(items: Any, last: bool) -> tuple[_Ranges, bool]:
    """The code point ranges that a match of the parsed sequence `items` can start with (or end with,
    `last`), and whether it can match nothing; None where no bound is known (a category, any character,
    a case-insensitive group): an over-estimate is safe, it only skips fewer regex calls."""
    ranges: list[tuple[int, int]] = []
    for op, av in reversed(items) if last else items:
        if op in _ZERO_WIDTH:
            continue
        if op is sre.LITERAL:
            got, empty = [(av, av)], False
        elif op is sre.IN:
            if any(o not in (sre.LITERAL, sre.RANGE) for o, _ in av):
                return None, False
            got, empty = [(a, a) if o is sre.LITERAL else a for o, a in av], False
        elif op is sre.SUBPATTERN and not av[1] & re.IGNORECASE:
            got, empty = _edge_ranges(av[3], last)
        elif op is sre.BRANCH:
            alternatives = [_edge_ranges(alt, last) for alt in av[1]]
            if any(r is None for r, _ in alternatives):
                return None, False
            got = [x for r, _ in alternatives for x in r or ()]
            empty = any(e for _, e in alternatives)
        elif op in _REPEATS:
            got, empty = _edge_ranges(av[2], last)
            empty = empty or av[0] == 0
        else:
            return None, False
        if got is None:
            return None, False
        ranges += got
        if not empty:
            return ranges, False
    return ranges, True


def _alternatives(parsed: Any) -> list[Any]:
    """The top-level alternatives of a parsed pattern (itself, if it has none)."""
    return parsed[0][1][1] if len(parsed) == 1 and parsed[0][0] is sre.BRANCH else [parsed]


def alternative_texts(pattern: str) -> list[str]:
    """The text of each top-level alternative of `pattern` (split at each `|` outside groups and
    character classes); `[pattern]` where that split does not give the parser's alternatives."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # to the class's closing "]"; one right after "[" or "[^" is a member
            i += 2 if pattern.startswith("[^", i) else 1
            i += pattern.startswith("]", i)
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and not depth:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    parsed = sre.parse(pattern)
    if sre.global_flags(parsed) & ~re.UNICODE or len(parts) != len(_alternatives(parsed)):
        return [pattern]  # a global inline flag, or a split that is not the parser's
    try:
        for part in parts:
            re.compile(part)
    except re.error:
        return [pattern]
    return parts


def _anchored(parsed: Any, last: bool) -> bool:
    """Whether every alternative of the pattern starts with `^` (or ends with `$`, `last`), as spaCy
    builds its prefix (and suffix) patterns: then a match starts at the chunk's first character (or
    ends at its last)."""
    edge = -1 if last else 0
    at = sre.AT_END if last else sre.AT_BEGINNING
    return all(len(alt) and alt[edge] == (sre.AT, at) for alt in _alternatives(parsed))


def is_anchored(pattern: str, last: bool) -> bool:
    """Whether every alternative of `pattern` starts with `^` (or ends with `$`, `last`)."""
    return _anchored(sre.parse(pattern), last)


def suffix_reach(pattern: str) -> tuple[int | None, re.Pattern | None]:
    r"""For a suffix pattern anchored at the chunk's end: the most characters that its alternatives of
    bounded width match (a match of one starts that close to the end), and the class of the characters
    its unbounded alternatives (spaCy's `\.\.+$`) can end with (None if it has none). A reach of None:
    no bound is known, the whole chunk is searched."""
    parsed = sre.parse(pattern)
    if not _anchored(parsed, last=True) or sre.global_flags(parsed) & re.IGNORECASE:
        return None, None
    reach, ends = 0, []
    for alt in _alternatives(parsed):
        width = sre.max_width(parsed, alt)
        if width < sre.MAXREPEAT:
            reach = max(reach, width)
            continue
        ranges, empty = _edge_ranges(alt, last=True)
        if ranges is None or empty:
            return None, None
        ends += ranges
    return reach, _ranges_class(ends) if ends else None


def edge_class(pattern: str, last: bool, anchored: bool = False) -> re.Pattern | None:
    """One character class of every character a match of `pattern` can start (or end) with, so that a
    chunk whose character is outside it skips the pattern; None when the pattern gives no such bound.
    `anchored`: the pattern must be anchored at that edge (the class then tests the chunk's edge)."""
    return EdgeIndex(pattern, last, anchored).edge_class()


class EdgeIndex:
    """A pattern's alternatives by the characters their matches can start with (or end with, `last`):
    per character, one pattern of the alternatives that can, in their order. Where a match must start
    (end) at that character, it is the match the whole pattern finds there. An alternative gives no
    bound (and is in every character's pattern) where its edge is a category, any character, a
    case-insensitive group or nothing, or, `anchored`, where it is not anchored at that edge."""

    def __init__(self, pattern: str, last: bool, anchored: bool):
        self.parts = alternative_texts(pattern)
        self.edges: list[_Ranges] = []
        for part in self.parts:
            parsed = sre.parse(part)
            ranges, empty = _edge_ranges(parsed, last)
            bounded = ranges is not None and not empty and not sre.global_flags(parsed) & re.IGNORECASE
            self.edges.append(ranges if bounded and (not anchored or _anchored(parsed, last)) else None)

    def edge_class(self) -> re.Pattern | None:
        """One class of the characters that any alternative can start (end) with; None if one is unbounded."""
        if any(edge is None for edge in self.edges):
            return None
        return _ranges_class([r for edge in self.edges for r in edge])

    def pattern(self, char: str) -> str | None:
        code = ord(char)
        parts = [
            part
            for part, edge in zip(self.parts, self.edges, strict=True)
            if edge is None or any(lo <= code <= hi for lo, hi in edge)
        ]
        return "|".join(parts) if parts else None


# Suffix alternatives compiled: the search, and `suffix_reach` of their pattern.
SuffixRule = tuple[Callable[..., re.Match | None], int | None, re.Pattern | None]


@functools.cache
def compiled_suffixes(pattern: str) -> SuffixRule:
    return re.compile(pattern).search, *suffix_reach(pattern)


def _ranges_class(ranges: list[tuple[int, int]]) -> re.Pattern:
    return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges) + "]")
