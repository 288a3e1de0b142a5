"""Encoding for pack: documents -> Arcade100k ids + `<|endoftext|>`, code optionally in fill-in-the-middle
form, each tagged with its seeded shuffle key and window.

`Encode` runs as a Ray Data actor (so Arcade100k loads once per worker) on one parquet row group at a
time, on the engine `tokenizer.load` picks (fastokens where it reproduces tiktoken's ids) with as many
threads as Ray gave the actor CPUs. `ExactnessCheck` encodes a seeded sample of the documents again with
tiktoken and stops the job at the first difference. Token counts in the manifest include the EOT.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import tokenizer
from pipeline.cluster import ray_cpus
from pipeline.shards import TokenizerInfo
from tokenizer.engines import EngineChoice

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

Span = tuple[int, int]  # characters [start, end) of a document, encoded as one piece


def doc_key(seed: int, doc_id: str) -> int:
    """The seeded shuffle key of a document: the first 8 bytes of blake2b("{seed}:{id}"), big-endian."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def window_of(key: int, n_windows: int) -> int:
    return key % n_windows


def fim_spans(n_chars: int, rng: random.Random) -> list[Span]:
    """StarCoder-style fill-in-the-middle cuts at two random characters: prefix, middle, suffix."""
    a, b = sorted(rng.randint(0, n_chars) for _ in range(2))
    return [(0, a), (a, b), (b, n_chars)]


def fim_tokens(prefix: np.ndarray, middle: np.ndarray, suffix: np.ndarray, spm: bool) -> np.ndarray:
    """The three encoded pieces in PSM or SPM order.

    PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle (StarCoder's SPM variant, which
    keeps prefix and middle contiguous).
    """
    if spm:
        parts = [[FIM_PREFIX, FIM_SUFFIX], suffix, [FIM_MIDDLE], prefix, middle]
    else:
        parts = [[FIM_PREFIX], prefix, [FIM_SUFFIX], suffix, [FIM_MIDDLE], middle]
    return np.concatenate([np.asarray(p, dtype=np.int32) for p in parts])


class EncodingMismatch(ValueError):
    """The engine's ids for a document differ from tiktoken's: the shards would not be Arcade100k's.
    (A ValueError, as a ShardError is: `python -m pipeline pack` prints it as one line.)"""


def mismatch_in(error: Exception) -> EncodingMismatch | None:
    """The EncodingMismatch an encoder actor raised, read from the error that Ray hands the driver:
    Ray Data passes on the actor's traceback as text, without the exception object."""
    marker = f"{EncodingMismatch.__module__}.{EncodingMismatch.__qualname__}: "
    line = next((line for line in str(error).splitlines() if line.startswith(marker)), None)
    return None if line is None else EncodingMismatch(line.removeprefix(marker))


class Reference(Protocol):
    """What the check asks of its reference encoder (tiktoken's Arcade100k)."""

    def encode_ordinary(self, text: str) -> list[int]: ...


def verify_sampled(seed: int, doc_id: str, rate: float) -> bool:
    """Whether a document is encoded again: a hash of (seed, id) below `rate`, so the same documents
    are checked on every run and cluster. Personalized, so the sample is independent of `doc_key`."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8, person=b"verify").digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def first_difference(ids: np.ndarray, want: Sequence[int]) -> int | None:
    """The first position where `ids` and `want` differ (the shorter one's end if one is a prefix of
    the other), or None if they are equal."""
    reference = np.asarray(want, dtype=np.int32)
    n = min(len(ids), len(reference))
    differ = np.flatnonzero(ids[:n] != reference[:n])
    if differ.size:
        return int(differ[0])
    return None if len(ids) == len(reference) else n


@dataclass(frozen=True)
class ExactnessCheck:
    """Encodes a seeded sample of documents again with the reference: fastokens is checked against
    tiktoken at load, but only on chosen strings; this checks it on the corpus itself."""

    engine: str  # the name and version of the engine checked, for the error
    reference: Reference
    seed: int
    rate: float

    def verify(self, doc_id: str, text: str, pieces: Sequence[tuple[Span, np.ndarray]]) -> None:
        """Raise EncodingMismatch if a sampled document has a piece whose ids are not the reference's."""
        if not verify_sampled(self.seed, doc_id, self.rate):
            return
        for (start, end), ids in pieces:
            want = self.reference.encode_ordinary(text[start:end])
            if (i := first_difference(ids, want)) is not None:
                raise EncodingMismatch(
                    f"document {doc_id!r}: {self.engine} and tiktoken differ at token {i} of its characters "
                    f"{start}:{end} ({_id_at(ids, i)} vs {_id_at(want, i)}); the shards would not be "
                    "Arcade100k's. Pack with `--set pack.engine=tiktoken` and report the document."
                )


def _id_at(ids: Sequence[int] | np.ndarray, i: int) -> str:
    return str(int(ids[i])) if i < len(ids) else "the end"


def checked_rate(enc: tokenizer.Arcade100k, verify_rate: float) -> float:
    """The share of documents the check encodes again: none when tiktoken encodes (it is the reference)."""
    return 0.0 if enc.engine == "tiktoken" else verify_rate


def exactness_check(
    enc: tokenizer.Arcade100k, seed: int, verify_rate: float, reference: Reference | None = None
) -> ExactnessCheck | None:
    """The check of what `enc` encodes against `reference`, or None when there is nothing to check.

    The default reference is the tiktoken encoding that `enc` holds for decoding: the one that
    `tokenizer.load(engine="tiktoken")` encodes with, without building it again in every actor.
    """
    if (rate := checked_rate(enc, verify_rate)) == 0:
        return None
    return ExactnessCheck(f"{enc.engine} {enc.engine_version}", reference or enc.encoding, seed, rate)


def tokenizer_info(enc: tokenizer.Arcade100k, verify_rate: float) -> TokenizerInfo:
    """The manifest's record of the vocabulary, the engine that encoded and the share checked."""
    return TokenizerInfo(
        name=enc.name,
        fingerprint=enc.fingerprint,
        n_vocab=enc.n_vocab,
        eot_id=enc.eot_id,
        engine=enc.engine,
        engine_version=enc.engine_version,
        verify_rate=checked_rate(enc, verify_rate),
    )


class Encode:
    """Ray Data callable class: one Arcade100k per worker, loaded once.

    `engine` is the engine to load (pack passes the one it records in the manifest, so that a worker
    without it fails rather than writing another engine's ids); `verify_rate` and `reference` set up
    the `ExactnessCheck` (0: none).
    """

    def __init__(
        self,
        seed: int,
        n_windows: int,
        code_sources: Iterable[str],
        fim_rate: float,
        fim_spm_rate: float,
        skip_windows: Iterable[int] = (),
        *,
        engine: EngineChoice = "auto",
        verify_rate: float = 0.0,
        reference: Reference | None = None,
    ):
        if (cpus := ray_cpus()) is not None:
            # Before the engine loads: fastokens sizes its pool once, by default to every core, and N
            # actors with a pool of every core each would oversubscribe the node N times.
            tokenizer.limit_threads(cpus)
        self.enc = tokenizer.load(engine=engine)
        self.seed = seed
        self.n_windows = n_windows
        self.code_sources = frozenset(code_sources)
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.skip_windows = frozenset(skip_windows)
        self.check = exactness_check(self.enc, seed, verify_rate, reference)

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
            arrays.append(self._document(ids[i], text, sources[i], keys[i]))
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

    def _document(self, doc_id: str, text: str | None, source: str, key: int) -> np.ndarray:
        # An empty or missing text is set aside (no tokens, not even <|endoftext|>) and counted.
        if not text:
            return np.zeros(0, dtype=np.int32)
        rng = random.Random(key)
        fim = source in self.code_sources and self.fim_rate > 0 and rng.random() < self.fim_rate
        spans = fim_spans(len(text), rng) if fim else [(0, len(text))]
        pieces = [((start, end), self.enc.encode_ordinary_numpy(text[start:end])) for start, end in spans]
        if self.check is not None:
            self.check.verify(doc_id, text, pieces)
        encoded = [ids for _, ids in pieces]
        body = fim_tokens(*encoded, spm=rng.random() < self.fim_spm_rate) if fim else encoded[0]
        return np.append(body, np.int32(self.enc.eot_id))
