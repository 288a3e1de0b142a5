"""The MinHash-LSH keys of a document's normalized text: its exact key and one key per band.

A document's keys are scattered by the signature stage (`pipeline.dedup`); two documents that share a
key are duplicate candidates.
"""

from __future__ import annotations

import numpy as np
import xxhash

from pipeline.config import DedupConfig

# The kind of a key: a hash of the whole normalized text, or of one band of the MinHash signature.
EXACT, BAND = 0, 1


def minhash(normalized: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature (bands * rows values) of the word n-gram shingles of normalized text."""
    # Imported here, by the tasks that hash: numba and LLVM add about 150 MiB to a process (the driver's too).
    from pipeline.minhash import permutations, signature

    return signature(normalized, cfg.ngram, *permutations(cfg.bands * cfg.rows, cfg.seed))


def band_keys(sig: np.ndarray, cfg: DedupConfig) -> list[int]:
    r = cfg.rows
    return [
        _signed(xxhash.xxh64_intdigest(sig[i * r : (i + 1) * r].tobytes(), seed=i)) for i in range(cfg.bands)
    ]


def exact_key(normalized: str) -> int:
    return _signed(xxhash.xxh64_intdigest(normalized.encode("utf-8")))


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
