"""Packed shards: the contract between the data pipeline and the trainer (see docs/design.md).

A shard folder holds Arrow IPC files `shard-00000.arrow`, ... with one column `input_ids` of type
`fixed_size_list<int32>[seq_len + 1]`, and a `manifest.json` that lists every shard with its rows,
tokens and sha256. Writers use `write_shard` and `write_manifest` (both atomic, through `common.files`);
readers use `ShardSet`, which verifies the manifest and the files and then serves rows from
memory-mapped files.

This module is deliberately light (pyarrow, numpy, pydantic, common.files): the trainer imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from common.files import atomic_write, write_text

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COLUMN = "input_ids"


class ShardError(ValueError):
    """A shard folder that is missing, corrupt, or does not match what the reader expects."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardInfo(_Model):
    file: str
    rows: int
    tokens: int
    sha256: str
    # The one source every row of the shard comes from (the validation split is packed per source);
    # None where rows mix sources (the training split, and validation splits packed before this field).
    source: str | None = None


class TokenizerInfo(_Model):
    name: str
    fingerprint: str
    n_vocab: int
    eot_id: int
    # The encoder that made the ids, its version, and the share of documents encoded again with
    # tiktoken and found equal (0 for tiktoken itself). Engines give the same ids (the fingerprint
    # names the vocabulary); this says which one to suspect if that ever fails. Manifests written
    # before these fields were all encoded by tiktoken, of a version not recorded.
    engine: str = "tiktoken"
    engine_version: str = ""
    verify_rate: float = 0.0


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    seq_len: int
    tokenizer: TokenizerInfo
    data_config: dict[str, Any] = {}
    data_config_hash: str = ""
    shards: list[ShardInfo]
    # Relative path of the validation split's shard folder (with its own manifest), if any.
    valid: str | None = None
    # Tokens lost to the at-most-one partial row per writer (dropped or padded).
    partial_row_tokens: int = 0
    # Per source, per counting step in pipeline order (`pipeline.counts.ALL_STEPS`: "read", "exclude",
    # each enabled filter, "dedup", "train", "decontam", "mixed", "tokenized", "empty", "packed"):
    # {"docs": n, "tokens": n}.
    sources: dict[str, dict[str, dict[str, int]]] = {}
    # Per source: {"target": share, "achieved": share} of output tokens.
    mixture: dict[str, dict[str, float]] = {}

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def schema(seq_len: int) -> pa.Schema:
    return pa.schema([pa.field(COLUMN, pa.list_(pa.int32(), seq_len + 1), nullable=False)])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_shard(path: str | Path, rows: np.ndarray) -> ShardInfo:
    """Write `rows` (int32 [n, seq_len + 1]) as one Arrow IPC shard, atomically."""
    path = Path(path)
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ShardError(f"{path}: a shard needs a non-empty 2-D array of rows, got shape {rows.shape}")
    width = rows.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), type=pa.int32()), width)
    batch = pa.record_batch([column], schema=schema(width - 1))

    def write(f: IO[bytes]) -> None:
        with pa.ipc.new_file(f, batch.schema) as writer:
            writer.write_batch(batch)

    atomic_write(path, write)
    return ShardInfo(file=path.name, rows=rows.shape[0], tokens=rows.size, sha256=file_sha256(path))


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return write_text(path, text)


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ShardError(f"{folder}: no {MANIFEST}; run `make data` first") from None
    except ValidationError as e:
        raise ShardError(f"{path}: not a valid manifest: {e}") from None


def manifest_hash(folder: str | Path) -> str:
    """sha256 of manifest.json: names the exact data a training run used."""
    return file_sha256(Path(folder) / MANIFEST)


class ShardSet:
    """All rows of a shard folder, memory-mapped and indexed globally (row 0 .. len-1).

    Opening verifies the manifest against the files: each listed shard exists, has the listed rows
    and row width, and (with `verify_checksums`) the listed sha256. `expect_seq_len`,
    `expect_tokenizer` (a fingerprint) and `expect_vocab` turn a mismatch with the model into an
    error here, before any training step. `source` opens the shards of that one source only.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        verify_checksums: bool = True,
        expect_seq_len: int | None = None,
        expect_tokenizer: str | None = None,
        expect_vocab: int | None = None,
        source: str | None = None,
    ):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        m = self.manifest
        if m.format_version != FORMAT_VERSION:
            raise ShardError(f"{self.folder}: shard format {m.format_version}, expected {FORMAT_VERSION}")
        if expect_seq_len is not None and m.seq_len != expect_seq_len:
            raise ShardError(
                f"{self.folder}: shards have seq_len {m.seq_len}, the model expects {expect_seq_len}"
            )
        if expect_tokenizer is not None and m.tokenizer.fingerprint != expect_tokenizer:
            raise ShardError(
                f"{self.folder}: shards were tokenized with {m.tokenizer.name} "
                f"({m.tokenizer.fingerprint[:12]}), not the expected tokenizer ({expect_tokenizer[:12]})"
            )
        if expect_vocab is not None and m.tokenizer.n_vocab > expect_vocab:
            raise ShardError(
                f"{self.folder}: tokenizer has {m.tokenizer.n_vocab} ids, the model's vocab is {expect_vocab}"
            )
        if not m.shards:
            raise ShardError(f"{self.folder}: the manifest lists no shards")
        # With `source`, the rows of that source's shards only (see ShardInfo.source).
        self.infos = [info for info in m.shards if source is None or info.source == source]
        if not self.infos:
            raise ShardError(f"{self.folder}: the manifest lists no shards of source {source!r}")
        self.seq_len = m.seq_len
        self._arrays: list[np.ndarray] = []
        for info in self.infos:
            self._arrays.append(self._open(info, verify_checksums))
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])

    def _open(self, info: ShardInfo, verify_checksum: bool) -> np.ndarray:
        path = self.folder / info.file
        if not path.is_file():
            raise ShardError(f"{path}: listed in the manifest but missing")
        if verify_checksum and (actual := file_sha256(path)) != info.sha256:
            raise ShardError(f"{path}: sha256 {actual[:12]} does not match the manifest ({info.sha256[:12]})")
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except pa.ArrowInvalid as e:
            raise ShardError(f"{path}: not a readable Arrow IPC file ({e})") from None
        expected = schema(self.seq_len)
        if not table.schema.equals(expected):
            raise ShardError(f"{path}: schema {table.schema} is not {expected}")
        column = table.column(COLUMN).combine_chunks()  # one batch per shard: no copy
        rows = column.values.to_numpy(zero_copy_only=True).reshape(-1, self.seq_len + 1)
        if len(rows) != info.rows:
            raise ShardError(f"{path}: {len(rows)} rows, the manifest says {info.rows}")
        return rows

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        """Row `index` as a read-only int32 array of seq_len + 1 tokens (a view of the mapped file)."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._arrays[shard][index - self._starts[shard]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for rows in self._arrays:
            yield from rows
