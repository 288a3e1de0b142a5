"""Encoding for pack: documents -> Arcade100k ids + `<|endoftext|>`, code optionally in fill-in-the-middle
form, each tagged with its seeded shuffle key and window.

`Encode` runs as a Ray Data actor (so Arcade100k loads once per worker) on one parquet row group at a
time. Token counts in the manifest include the EOT.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import tokenizer

ENCODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("key", pa.uint64()),
        ("window", pa.int64()),
        ("tokens", pa.list_(pa.int32())),
    ]
)
FIM_PREFIX = tokenizer.SPECIAL_TOKENS["<|fim_prefix|>"]
FIM_MIDDLE = tokenizer.SPECIAL_TOKENS["<|fim_middle|>"]
FIM_SUFFIX = tokenizer.SPECIAL_TOKENS["<|fim_suffix|>"]


def doc_key(seed: int, doc_id: str) -> int:
    """The seeded shuffle key of a document: the first 8 bytes of blake2b("{seed}:{id}"), big-endian."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def window_of(key: int, n_windows: int) -> int:
    return key % n_windows


def fim_tokens(enc: tokenizer.Arcade100k, text: str, rng: random.Random, spm_rate: float) -> np.ndarray:
    """StarCoder-style fill-in-the-middle: split at two random characters, emit PSM or SPM order.

    PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle (StarCoder's SPM variant, which
    keeps prefix and middle contiguous).
    """
    a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
    prefix, middle, suffix = (_encode(enc, part) for part in (text[:a], text[a:b], text[b:]))
    if rng.random() < spm_rate:
        parts = [[FIM_PREFIX, FIM_SUFFIX], suffix, [FIM_MIDDLE], prefix, middle]
    else:
        parts = [[FIM_PREFIX], prefix, [FIM_SUFFIX], suffix, [FIM_MIDDLE], middle]
    return np.concatenate([np.asarray(p, dtype=np.int32) for p in parts])


def _encode(enc: tokenizer.Arcade100k, text: str) -> np.ndarray:
    # encode_to_numpy with no special tokens allowed is encode_ordinary, without a Python list per doc.
    return enc.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).view(np.int32)


class Encode:
    """Ray Data callable class: one Arcade100k per worker, loaded once."""

    def __init__(
        self,
        seed: int,
        n_windows: int,
        code_sources: Iterable[str],
        fim_rate: float,
        fim_spm_rate: float,
        skip_windows: Iterable[int] = (),
    ):
        self.enc = tokenizer.load()
        self.seed = seed
        self.n_windows = n_windows
        self.code_sources = frozenset(code_sources)
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.skip_windows = frozenset(skip_windows)

    def __call__(self, units: pa.Table) -> pa.Table:
        """Encode the documents of the parquet row groups named in `units` (columns path, row_group)."""
        tables = [
            pq.ParquetFile(path).read_row_group(group, columns=["id", "text", "source"])
            for path, group in zip(
                units.column("path").to_pylist(), units.column("row_group").to_pylist(), strict=True
            )
        ]
        return self.encode(pa.concat_tables(tables))

    def encode(self, batch: pa.Table) -> pa.Table:
        """Encode a table of documents (columns id, text, source)."""
        ids = batch.column("id").to_pylist()
        keys = [doc_key(self.seed, i) for i in ids]
        windows = [window_of(k, self.n_windows) for k in keys]
        keep = [w not in self.skip_windows for w in windows]
        texts = batch.column("text").to_pylist()
        sources = batch.column("source").to_pylist()
        arrays, out_ids, out_sources, out_keys, out_windows = [], [], [], [], []
        for i, text in enumerate(texts):
            if not keep[i]:
                continue
            arrays.append(self._document(text, sources[i], keys[i]))
            out_ids.append(ids[i])
            out_sources.append(sources[i])
            out_keys.append(keys[i])
            out_windows.append(windows[i])
        offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        columns = [out_ids, out_sources, pa.array(out_keys, pa.uint64()), out_windows, tokens]
        return pa.table(columns, schema=ENCODED_SCHEMA)

    def _document(self, text: str | None, source: str, key: int) -> np.ndarray:
        # An empty or missing text is set aside (no tokens, not even <|endoftext|>) and counted.
        if not text:
            return np.zeros(0, dtype=np.int32)
        if source in self.code_sources and self.fim_rate > 0:
            rng = random.Random(key)
            if rng.random() < self.fim_rate:
                return np.append(
                    fim_tokens(self.enc, text, rng, self.fim_spm_rate), np.int32(self.enc.eot_id)
                )
        return np.append(_encode(self.enc, text), np.int32(self.enc.eot_id))
