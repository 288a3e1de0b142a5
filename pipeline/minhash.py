"""MinHash signatures of word 5-grams, compiled with numba: the same values as the definition in Python.

The definition (datatrove's): every word n-gram of the normalized text, its words joined by one space,
is hashed with xxHash64 (seed 0); permutation j maps a hash x to (a_j * x + b_j) mod 2^61-1, the
product wrapping at 2^64; the signature is the minimum over the n-grams of each permutation. Here the
n-grams are hashed in place in the UTF-8 bytes (no string per n-gram) and the minima are taken over
all permutations of one n-gram at a time (a loop that vectorizes). tests/test_pipeline_filters.py
holds both to the definition computed with the `xxhash` package and Python integers.

The kernels compile once per machine: numba caches them beside this file (or, where that is read-only,
in the user's cache folder), so a worker process loads them in a fraction of a second.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

MERSENNE = np.uint64((1 << 61) - 1)
# xxHash64's primes.
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SPACE = 32


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # (a*x + b) mod p with the product wrapping at 2^64, as datatrove does: exact arithmetic would keep
    # the order of small x for every permutation, and the signatures would be correlated.
    a = rng.integers(1, int(MERSENNE), num_perm, dtype=np.uint64)
    b = rng.integers(0, int(MERSENNE), num_perm, dtype=np.uint64)
    return a, b


def signature(normalized: str, ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature (len(a) values) of the word n-grams of `normalized`: words separated by
    single spaces, as `normalize_for_dedup` returns them. Text of fewer than `ngram` words is one n-gram."""
    return _signature(_ngram_hashes(np.frombuffer(normalized.encode(), np.uint8), ngram), a, b)


@njit(cache=True, inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(cache=True, inline="always")
def _read(buf, i, width):
    """The little-endian unsigned integer of `width` bytes at buf[i]."""
    value = np.uint64(0)
    for k in range(width):
        value |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return value


@njit(cache=True, inline="always")
def _round(acc, lane):
    return _rotl(acc + lane * _P2, 31) * _P1


@njit(cache=True)
def _xxh64(buf, start, end):
    """xxHash64, seed 0, of buf[start:end] (the reference's steps: stripes of 32 bytes, then 8, 4, 1)."""
    i = start
    if end - start >= 32:
        v1, v2, v3, v4 = _P1 + _P2, _P2, np.uint64(0), np.uint64(0) - _P1
        while i + 32 <= end:
            v1 = _round(v1, _read(buf, i, 8))
            v2 = _round(v2, _read(buf, i + 8, 8))
            v3 = _round(v3, _read(buf, i + 16, 8))
            v4 = _round(v4, _read(buf, i + 24, 8))
            i += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        for v in (v1, v2, v3, v4):
            h = (h ^ _round(np.uint64(0), v)) * _P1 + _P4
    else:
        h = _P5
    h += np.uint64(end - start)
    while i + 8 <= end:
        h = _rotl(h ^ _round(np.uint64(0), _read(buf, i, 8)), 27) * _P1 + _P4
        i += 8
    if i + 4 <= end:
        h = _rotl(h ^ (_read(buf, i, 4) * _P1), 23) * _P2 + _P3
        i += 4
    while i < end:
        h = _rotl(h ^ (np.uint64(buf[i]) * _P5), 11) * _P1
        i += 1
    h = (h ^ (h >> np.uint64(33))) * _P2
    h = (h ^ (h >> np.uint64(29))) * _P3
    return h ^ (h >> np.uint64(32))


@njit(cache=True)
def _ngram_hashes(buf, n):
    """xxHash64 of each window of n space-separated words of `buf`, or of all of it when shorter."""
    spaces = np.flatnonzero(buf == _SPACE)
    words = len(spaces) + 1 if len(buf) else 0
    if words < n:
        whole = np.empty(1, np.uint64)
        whole[0] = _xxh64(buf, 0, len(buf))
        return whole
    starts = np.empty(words, np.int64)
    ends = np.empty(words, np.int64)
    starts[0] = 0
    starts[1:] = spaces + 1
    ends[:-1] = spaces
    ends[-1] = len(buf)
    hashes = np.empty(words - n + 1, np.uint64)
    for k in range(len(hashes)):
        hashes[k] = _xxh64(buf, starts[k], ends[k + n - 1])
    return hashes


@njit(cache=True)
def _signature(hashes, a, b):
    sig = np.full(len(a), MERSENNE, np.uint64)
    for x in hashes:
        for j in range(len(a)):
            h = x * a[j] + b[j]
            # mod 2^61-1 without a division: 2^61 = 1 (mod 2^61-1), so high * 2^61 + low is high + low.
            h = (h & MERSENNE) + (h >> np.uint64(61))
            h = h - MERSENNE if h >= MERSENNE else h
            sig[j] = min(sig[j], h)
    return sig
