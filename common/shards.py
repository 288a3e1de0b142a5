"""Packed shards: the contract between the data pipeline and the trainer (see docs/design.md).

A shard folder holds Arrow IPC files `shard-00000.arrow`, ... with one column `input_ids` of type
`fixed_size_list<int32>[seq_len + 1]`, and a `manifest.json` that lists every shard with its rows,
tokens and sha256. Writers use `write_shard` and `write_manifest` (both atomic, through `common.files`);
readers use `ShardSet`, which verifies the manifest and the files and then serves rows from
memory-mapped files.

A shard folder may be a URL (`s3://bucket/shards/name`, common.objectstore): its manifest is read from
there, and each shard is fetched when a reader first needs it into this node's `ShardCache`, verified
against the manifest's sha256 before use.

This module is deliberately light (pyarrow, numpy, pydantic, fsspec, common): the trainer imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from common.files import atomic_write, write_text
from common.objectstore import download, is_url, join, read_bytes

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


HASH_BLOCK = 8 << 20  # bytes read at a time to hash a file or an object


def stream_sha256(f: IO[bytes]) -> str:
    """The sha256 of what is left to read in `f` (a local file, or an object opened through fsspec)."""
    h = hashlib.sha256()
    while chunk := f.read(HASH_BLOCK):
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return stream_sha256(f)


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
    """The manifest of a shard folder, local or at a URL."""
    if is_url(folder):
        return _parse_manifest(read_bytes(join(str(folder), MANIFEST)), join(str(folder), MANIFEST))
    path = Path(folder) / MANIFEST
    try:
        return _parse_manifest(path.read_bytes(), path)
    except FileNotFoundError:
        raise ShardError(f"{folder}: no {MANIFEST}; run `make data` first") from None


def _parse_manifest(text: bytes, named: str | Path) -> Manifest:
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as e:
        problems = "; ".join(_problem(item) for item in e.errors())
        raise ShardError(f"{named}: not a valid manifest: {problems}") from None


def _problem(item: Any) -> str:
    """One of pydantic's errors as `key: why` (the JSON itself: `why` alone), on one line."""
    key = ".".join(str(part) for part in item["loc"])
    return f"{key}: {item['msg']}" if key else item["msg"]


def manifest_hash(folder: str | Path) -> str:
    """sha256 of manifest.json: names the exact data a training run used."""
    return file_sha256(Path(folder) / MANIFEST)


def default_cache_dir() -> Path:
    """Where a node keeps its copies of remote shards unless told otherwise."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stablelm2" / "shards"


class ShardCache:
    """This node's copies of remote shards under `root`, one folder per shard folder URL
    (`s3://bucket/a` in `root/s3/bucket/a`), shared by the node's ranks and by its runs.

    A copy is used only once its sha256 matches the manifest's: a cached copy that does is not fetched
    again, one that does not is fetched again, and a fetched one that still does not is a ShardError.
    A download is renamed into place once complete, so a killed fetch leaves nothing taken as a copy.
    Once the copies pass `max_bytes`, the least recently used ones that no reader here holds are
    deleted (one another process has memory-mapped stays readable to it). `downloads` counts the
    shards this process fetched.
    """

    def __init__(self, root: str | Path | None = None, max_bytes: int = 100 * 2**30):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.downloads = 0
        self._lock = threading.Lock()  # the prefetch thread and the reader share the copies
        self._held: dict[Path, int] = {}  # copies readers here have open: how many readers
        self._verified: dict[Path, tuple[int, int, int]] = {}  # copies hashed here: inode, size, mtime

    def local_folder(self, url: str) -> Path:
        return self.root.joinpath(*(part for part in url.replace("://", "/", 1).split("/") if part))

    def manifest(self, url: str) -> Path:
        """The local copy of the manifest of the shard folder `url`, fetched anew: it says what is current."""
        with self._lock:
            return download(join(url, MANIFEST), self.local_folder(url) / MANIFEST)

    def acquire(self, url: str, info: ShardInfo) -> Path:
        """The verified local copy of the shard `info` of the folder `url`, held until `release`."""
        with self._lock:
            path = self.local_folder(url) / info.file
            if not self._holds(path, info.sha256):
                self._fetch(join(url, info.file), path, info.sha256)
                self._make_room(keep=path)
            # The access time orders the copies by use; the mtime stays, with it the `_verified` stamp.
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
            self._held[path] = self._held.get(path, 0) + 1
            return path

    def release(self, path: Path) -> None:
        """A reader here is done with `path`: the copy may go when the cache needs room."""
        with self._lock:
            self._held[path] -= 1
            if not self._held[path]:
                del self._held[path]
                self._make_room(keep=None)

    def _holds(self, path: Path, sha256: str) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._verified.get(path) != stamp and file_sha256(path) == sha256:
            self._verified[path] = stamp
        return self._verified.get(path) == stamp

    def _fetch(self, url: str, path: Path, sha256: str) -> None:
        for _ in range(2):
            download(url, path)
            self.downloads += 1
            if self._holds(path, sha256):
                return
        actual = file_sha256(path)
        path.unlink()
        raise ShardError(
            f"{url}: sha256 {actual[:12]} does not match the manifest ({sha256[:12]}), downloaded twice; "
            "was it replaced after its manifest was written?"
        )

    def _make_room(self, keep: Path | None) -> None:
        """Delete the least recently used copies that no reader here holds until they fit `max_bytes`."""
        copies = []
        for path in self.root.rglob("*.arrow"):
            with contextlib.suppress(FileNotFoundError):  # another rank deleted it
                copies.append((path.stat().st_atime_ns, path.stat().st_size, path))
        total = sum(size for _, size, _ in copies)
        for _, size, path in sorted(copies):
            if total <= self.max_bytes:
                return
            if path != keep and path not in self._held:
                path.unlink(missing_ok=True)
                self._verified.pop(path, None)
                total -= size


class ShardSet:
    """All rows of a shard folder, memory-mapped and indexed globally (row 0 .. len-1).

    Opening verifies the manifest against the files: each listed shard exists, has the listed rows
    and row width, and (with `verify_checksums`) the listed sha256. `expect_seq_len`,
    `expect_tokenizer` (a fingerprint) and `expect_vocab` turn a mismatch with the model into an
    error here, before any training step. `source` opens the shards of that one source only.
    `check_rows(where, rows)` checks each shard's rows as it is opened.

    A folder at a URL opens its shards when first read, through `cache` (`prefetch` starts on the ones
    the next rows need), holding open at most the cache's `max_bytes` of them.
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
        cache: ShardCache | None = None,
        check_rows: Callable[[str | Path, np.ndarray], None] | None = None,
    ):
        self.remote = is_url(folder)
        self.folder: str | Path = str(folder).rstrip("/") if self.remote else Path(folder)
        self.cache = (cache or ShardCache()) if self.remote else None
        if self.cache is not None:
            self.manifest_file = self.cache.manifest(self.folder)
            self.manifest = _parse_manifest(self.manifest_file.read_bytes(), join(self.folder, MANIFEST))
        else:
            self.manifest_file = self.folder / MANIFEST
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
        self._check_rows = check_rows
        self._starts = np.cumsum([0] + [info.rows for info in self.infos])
        self._arrays: list[np.ndarray | None] = [None] * len(self.infos)
        # A remote folder's open shards, least recently used first: index -> (local copy, bytes).
        self._open_copies: dict[int, tuple[Path, int]] = {}
        self._prefetched: dict[int, Future[Path]] = {}
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="shard-fetch") if self.remote else None
        if not self.remote:
            for shard, info in enumerate(self.infos):
                path = self.folder / info.file
                self._arrays[shard] = self._open(path, path, info, verify_checksums)

    def _open(self, path: Path, where: str | Path, info: ShardInfo, verify_checksum: bool) -> np.ndarray:
        """The rows of the shard `info`, whose file is at `path` (`where` names it in errors)."""
        if not path.is_file():
            raise ShardError(f"{where}: listed in the manifest but missing")
        if verify_checksum and (actual := file_sha256(path)) != info.sha256:
            raise ShardError(
                f"{where}: sha256 {actual[:12]} does not match the manifest ({info.sha256[:12]})"
            )
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except pa.ArrowInvalid as e:
            raise ShardError(f"{where}: not a readable Arrow IPC file ({e})") from None
        expected = schema(self.seq_len)
        if not table.schema.equals(expected):
            raise ShardError(f"{where}: schema {table.schema} is not {expected}")
        column = table.column(COLUMN).combine_chunks()  # one batch per shard: no copy
        rows = column.values.to_numpy(zero_copy_only=True).reshape(-1, self.seq_len + 1)
        if len(rows) != info.rows:
            raise ShardError(f"{where}: {len(rows)} rows, the manifest says {info.rows}")
        if self._check_rows is not None:
            self._check_rows(where, rows)
        return rows

    @property
    def uri(self) -> str:
        """Where the shards are: the URL, or the local folder as a file:// URI."""
        return self.folder if isinstance(self.folder, str) else self.folder.resolve().as_uri()

    @property
    def manifest_sha256(self) -> str:
        """sha256 of the manifest read: names the exact data a training run used (`manifest_hash`)."""
        return file_sha256(self.manifest_file)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        """Row `index` as a read-only int32 array of seq_len + 1 tokens (a view of the mapped file)."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard = self._shard_of(index)
        return self._rows(shard)[index - self._starts[shard]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for shard in range(len(self.infos)):
            yield from self._rows(shard)

    def prefetch(self, rows: Iterable[int]) -> None:
        """Start fetching, in the background, the remote shards holding `rows` that are not open yet."""
        if self._fetcher is None:
            return
        for shard in sorted({self._shard_of(row) for row in rows}):
            if self._arrays[shard] is None and shard not in self._prefetched:
                self._prefetched[shard] = self._fetcher.submit(
                    self.cache.acquire, self.folder, self.infos[shard]
                )

    def _shard_of(self, index: int) -> int:
        return int(np.searchsorted(self._starts, index, side="right")) - 1

    def _rows(self, shard: int) -> np.ndarray:
        rows = self._arrays[shard]
        if rows is not None:
            if self.remote:
                self._open_copies[shard] = self._open_copies.pop(shard)  # now the most recently used
            return rows
        info = self.infos[shard]
        future = self._prefetched.pop(shard, None)
        path = future.result() if future else self.cache.acquire(self.folder, info)
        if not path.is_file():  # another rank of the node made room since it was fetched: fetch it again
            self.cache.release(path)
            path = self.cache.acquire(self.folder, info)
        rows = self._arrays[shard] = self._open(path, join(self.folder, info.file), info, False)
        self._open_copies[shard] = (path, path.stat().st_size)
        self._close_beyond(self.cache.max_bytes)
        return rows

    def _close_beyond(self, max_bytes: int) -> None:
        """Let go of the least recently used open shards (all but the newest) beyond `max_bytes`; rows
        already handed out stay valid (they keep their mapping)."""
        while len(self._open_copies) > 1 and sum(size for _, size in self._open_copies.values()) > max_bytes:
            shard = next(iter(self._open_copies))
            path, _ = self._open_copies.pop(shard)
            self._arrays[shard] = None
            self.cache.release(path)
