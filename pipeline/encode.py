"""Encoding for pack: documents -> Arcade100k ids + `<|endoftext|>`, code optionally in fill-in-the-middle
form, each tagged with its seeded shuffle key and window.

`Encode` runs in the pack job's encode tasks (`pipeline.pack_job`), one or more parquet row groups at a
time, on the engine `tokenizer.load` picks (fastokens where it reproduces tiktoken's ids) with as many
threads as Ray gave the task CPUs. Arcade100k loads once per worker process (`tokenizer.load` caches
it), so an `Encode` is cheap to build and each task builds its own. It returns one table per pack
task, so that the windows' documents go straight to the task that packs them. `ExactnessCheck`
encodes a seeded sample of the documents again with tiktoken and stops the job at the first
difference. Token counts in the manifest include the EOT.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa

import tokenizer
from common.shards import TokenizerInfo
from pipeline.cluster import ray_cpus
from pipeline.workfiles import as_path, parquet_file
from tokenizer.engines import EngineChoice, flat

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
    """The EncodingMismatch that an encode task raised, from the error that Ray hands the driver."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, EncodingMismatch) else None


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


def exactness_check(enc: tokenizer.Arcade100k, seed: int, verify_rate: float) -> ExactnessCheck | None:
    """The check of what `enc` encodes, or None when there is nothing to check.

    The reference is the tiktoken encoding that `enc` holds for decoding: the one that
    `tokenizer.load(engine="tiktoken")` encodes with, without building it again in every actor.
    """
    if (rate := checked_rate(enc, verify_rate)) == 0:
        return None
    return ExactnessCheck(f"{enc.engine} {enc.engine_version}", enc.encoding, seed, rate)


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
    """The encoder of one pack task: Arcade100k, loaded once per process, and the job's settings.

    Windows in `skip_windows` are left out (done before, or another round's); the others, in order,
    are dealt in turn to `parts` pack tasks (`parts_windows`). `engine` is the engine to load (pack
    passes the one it records in the manifest, so that a worker without it fails rather than writing
    another engine's ids); `verify_rate` sets up the `ExactnessCheck` (0: none).
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
        parts: int = 1,
        engine: EngineChoice = "auto",
        verify_rate: float = 0.0,
    ):
        if (cpus := ray_cpus()) is not None:
            # Before the engine loads: fastokens sizes its pool once, by default to every core, and N
            # workers with a pool of every core each would oversubscribe the node N times.
            tokenizer.limit_threads(cpus)
        self.enc = tokenizer.load(engine=engine)
        self.seed = seed
        self.n_windows = n_windows
        self.code_sources = frozenset(code_sources)
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.parts = parts
        todo = todo_windows(n_windows, frozenset(skip_windows))
        self.part_of = {w: i for i, windows in enumerate(parts_windows(todo, parts)) for w in windows}
        self.check = exactness_check(self.enc, seed, verify_rate)

    def encode(self, batch: pa.Table) -> pa.Table:
        """Encode a table of documents (columns id, text, source), in its order, every part together."""
        return encoded_table(self._documents(batch))

    def encode_parts(self, batch: pa.Table) -> list[pa.Table]:
        """`encode`, its documents split by the part of their window."""
        parts: list[list[Encoded]] = [[] for _ in range(self.parts)]
        for doc in self._documents(batch):
            parts[self.part_of[doc.window]].append(doc)
        return [encoded_table(docs) for docs in parts]

    def _documents(self, batch: pa.Table) -> list[Encoded]:
        """The documents of the job's windows, encoded: every piece of every document in one call,
        which spares the engine and numpy a call per document."""
        docs, cuts = [], []
        columns = (batch.column(name).to_pylist() for name in ("id", "text", "source"))
        for doc_id, text, source in zip(*columns, strict=True):
            key = doc_key(self.seed, doc_id)
            if (window := window_of(key, self.n_windows)) in self.part_of:
                docs.append((doc_id, text or "", source, key, window))
                cuts.append(self._cut(text or "", source, key))
        texts = [
            doc[1][start:end] for doc, (spans, _) in zip(docs, cuts, strict=True) for start, end in spans
        ]
        ids, offsets = self.enc.encode_ordinary_flat(texts)
        encoded, n = [], 0  # n: the pieces of the documents before
        for (doc_id, text, source, key, window), (spans, spm) in zip(docs, cuts, strict=True):
            pieces = [(span, ids[offsets[n + j] : offsets[n + j + 1]]) for j, span in enumerate(spans)]
            n += len(spans)
            if self.check is not None:
                self.check.verify(doc_id, text, pieces)
            encoded.append(Encoded(doc_id, source, key, window, body([ids for _, ids in pieces], spm)))
        return encoded

    def _cut(self, text: str, source: str, key: int) -> tuple[list[Span], bool | None]:
        """The pieces of a document to encode and, in fill-in-the-middle form, whether in SPM order
        (None: as it is). An empty text has none: it is set aside (no tokens, not even
        <|endoftext|>) and counted."""
        if not text:
            return [], None
        if source in self.code_sources and self.fim_rate > 0:
            rng = random.Random(key)
            if rng.random() < self.fim_rate:
                spans = fim_spans(len(text), rng)
                return spans, rng.random() < self.fim_spm_rate
        return [(0, len(text))], None


def body(pieces: list[np.ndarray], spm: bool | None) -> np.ndarray | None:
    """A document's ids from its encoded pieces (`Encode._cut`); None for an empty document."""
    if not pieces:
        return None
    return pieces[0] if spm is None else fim_tokens(*pieces, spm=spm)


class Encoded(NamedTuple):
    """One document as a pack task receives it; `body` None for an empty document."""

    id: str
    source: str
    key: int
    window: int
    body: np.ndarray | None


def encoded_table(docs: Sequence[Encoded]) -> pa.Table:
    """Documents as one table of `ENCODED_SCHEMA`: each body and its <|endoftext|>, in one buffer."""
    eot = np.array([tokenizer.EOT_ID], dtype=np.int32)
    arrays = [a for d in docs if d.body is not None for a in (d.body, eot)]
    values, _ = flat(arrays)
    offsets = np.zeros(len(docs) + 1, dtype=np.int32)
    np.cumsum([0 if d.body is None else len(d.body) + 1 for d in docs], out=offsets[1:])
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    columns = [[d.id for d in docs], [d.source for d in docs], pa.array([d.key for d in docs], pa.uint64())]
    return pa.table([*columns, [d.window for d in docs], tokens], schema=ENCODED_SCHEMA)


def encode_row_groups(
    encoder: Callable[[], Encode], units: Sequence[tuple[str, int]]
) -> pa.Table | list[pa.Table]:
    """An encode task of `pipeline.pack_job`: the documents of parquet row groups, given as (path, row
    group), read here (text never passes through Ray's object store) and encoded by `encoder()`, a
    table per pack task; the table itself when there is one pack task, as Ray returns one value."""
    tables = [
        parquet_file(as_path(path)).read_row_group(group, columns=["id", "text", "source"])
        for path, group in units
    ]
    parts = encoder().encode_parts(pa.concat_tables(tables))
    return parts if len(parts) > 1 else parts[0]


def todo_windows(n_windows: int, skip: Collection[int]) -> list[int]:
    """The windows a job packs, in order: all but `skip`."""
    return [w for w in range(n_windows) if w not in skip]


def parts_windows(todo: Sequence[int], parts: int) -> list[list[int]]:
    """The windows of each of `parts` pack tasks, dealt in turn: the split of `Encode.encode_parts`."""
    return [list(todo[i::parts]) for i in range(parts)]
