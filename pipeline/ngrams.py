"""Gopher repetition's n-gram measures, compiled with numba: the same values as datatrove's Python.

On a document's words (tokens without whitespace), datatrove measures:
- the top n-gram (n = 2, 3, 4): n-grams are the words joined by one space; the most frequent one (of
  equally frequent ones, the first to occur, as `Counter.most_common` picks it) times its count, in
  characters;
- duplicated n-grams (n = 5 to 10): a scan from the first word, where an n-gram (the words joined
  *without* spaces, so "ab c" and "a bc" are one n-gram) seen before adds its characters and moves the
  scan n words on, and any other is remembered and moves it one word on.

Here words and n-grams are spans of the code points of the words joined by spaces, numbered by a
polynomial hash of their code points and, where two hashes agree, compared code point by code point:
the numbers, and so the measures, are exact. tests/test_pipeline_filters.py holds both measures to
datatrove's definitions. (Hashes mod 2^64 can be made to collide on purpose, by Thue-Morse strings:
that costs time, never a wrong count.) Memory: about 24 bytes per character of the document, for
the duration of one filter call (a 10 MB document: +340 MiB, 3 s).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SPACE = 32
_BASE = np.uint64(0x100000001B3)  # odd: the powers never vanish mod 2^64
_MIX = np.uint64(0x9E3779B97F4A7C15)


class NGrams:
    """A document's words, ready for both measures (one pass over their code points)."""

    def __init__(self, words: list[str]):
        self.count = len(words)
        # surrogatepass: a lone surrogate (which JSON can carry) is one code point, as in the str.
        codepoints = np.frombuffer(" ".join(words).encode("utf-32-le", "surrogatepass"), np.uint32)
        self._chars, self._ends, self._prefix, self._powers = _spans(codepoints, self.count)
        self._word_ids = _span_ids(self._chars, self._prefix, self._powers, self._ends[:-1], self._ends[1:])

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram, spaces included, times its count (n <= word count)."""
        return int(_top_chars(self._word_ids, self._ends, n))

    def duplicated_chars(self, n: int) -> int:
        """Characters of the n-grams (joined without spaces) that the greedy scan finds seen before."""
        if self.count < n:
            return 0
        starts, stops = self._ends[: self.count - n + 1], self._ends[n:]
        ids = _span_ids(self._chars, self._prefix, self._powers, starts, stops)
        return int(_greedy_repeats(ids, stops - starts, n))


@njit(cache=True)
def _spans(codepoints, count):
    """The code points without the spaces; where each word ends in them (ends[0] = 0, count + 1
    entries); their prefix hashes and the powers of the base."""
    chars = np.empty(len(codepoints), np.uint32)
    ends = np.zeros(count + 1, np.int64)
    k = w = 0
    for c in codepoints:
        if c == _SPACE:
            w += 1
            ends[w] = k
        else:
            chars[k] = c
            k += 1
    ends[count] = k
    prefix = np.zeros(k + 1, np.uint64)
    powers = np.ones(k + 1, np.uint64)
    for j in range(k):
        prefix[j + 1] = prefix[j] * _BASE + np.uint64(chars[j])
        powers[j + 1] = powers[j] * _BASE
    return chars[:k], ends, prefix, powers


@njit(cache=True)
def _table_bits(n):
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


@njit(cache=True)
def _span_ids(chars, prefix, powers, starts, stops):
    """Per span chars[starts[i]:stops[i]], the number of its text in order of first occurrence."""
    bits = _table_bits(len(starts))
    mask = (1 << bits) - 1
    slot_span = np.full(1 << bits, -1, np.int64)  # the first span of each text, by hash slot
    slot_hash = np.zeros(1 << bits, np.uint64)
    slot_id = np.zeros(1 << bits, np.int64)
    ids = np.empty(len(starts), np.int64)
    next_id = 0
    for i in range(len(starts)):
        s, e = starts[i], stops[i]
        h = prefix[e] - prefix[s] * powers[e - s]
        slot = np.int64((h * _MIX) >> np.uint64(64 - bits))
        while True:
            j = slot_span[slot]
            if j < 0:
                slot_span[slot], slot_hash[slot], slot_id[slot] = i, h, next_id
                ids[i] = next_id
                next_id += 1
                break
            if slot_hash[slot] == h and _same(chars, starts[j], stops[j], s, e):
                ids[i] = slot_id[slot]
                break
            slot = (slot + 1) & mask
    return ids


@njit(cache=True, inline="always")
def _same(chars, s1, e1, s2, e2):
    if e1 - s1 != e2 - s2:
        return False
    for k in range(e1 - s1):
        if chars[s1 + k] != chars[s2 + k]:
            return False
    return True


@njit(cache=True)
def _key_ids(keys):
    """Per key, the number of its value in order of first occurrence."""
    bits = _table_bits(len(keys))
    mask = (1 << bits) - 1
    slot_key = np.full(1 << bits, -1, np.int64)  # keys are >= 0
    slot_id = np.zeros(1 << bits, np.int64)
    ids = np.empty(len(keys), np.int64)
    next_id = 0
    for i in range(len(keys)):
        slot = np.int64((np.uint64(keys[i]) * _MIX) >> np.uint64(64 - bits))
        while slot_key[slot] >= 0 and slot_key[slot] != keys[i]:
            slot = (slot + 1) & mask
        if slot_key[slot] < 0:
            slot_key[slot], slot_id[slot] = keys[i], next_id
            next_id += 1
        ids[i] = slot_id[slot]
    return ids


@njit(cache=True)
def _top_chars(word_ids, ends, n):
    count = len(word_ids)
    ids = word_ids
    for m in range(2, n + 1):  # the m-gram at i is the (m-1)-gram at i and the word at i + m - 1
        ids = _key_ids(ids[: count - m + 1] * count + word_ids[m - 1 :])
    counts = np.bincount(ids)
    best = counts.max()
    # Ids number the n-grams in order of first occurrence: the first most frequent has the lowest id.
    first_best = np.argmax(counts == best)
    start = np.argmax(ids == first_best)
    return (ends[start + n] - ends[start] + n - 1) * best


@njit(cache=True)
def _greedy_repeats(ids, lengths, n):
    seen = np.zeros(len(ids), np.bool_)
    chars = i = 0
    while i < len(ids):
        if seen[ids[i]]:
            chars += lengths[i]
            i += n
        else:
            seen[ids[i]] = True
            i += 1
    return chars
