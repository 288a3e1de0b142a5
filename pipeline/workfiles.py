"""The few file operations of the data job on its work dir, a local folder or a prefix in object storage
(`work_dir: s3://bucket/prefix`): the one place that tells them apart. A path under the work dir is a
local `Path` or an `ObjectPath`, and the stages hand it to these functions only.

A local file is written as `common.files` writes it: under a temporary name beside it, renamed into
place. A store has no rename, but a put is atomic (an object appears whole or not at all): an object is
written to a node-local scratch file (`tempfile`), then put. Either way the rule of the stages holds:
write the outputs, then the marker (a stats or `_DONE.json` file) that says they are finished. Reads
from the store are ranged (`common.objectstore.open_stream`), never a whole object fetched first, but
for the memory-mapped signatures (`LocalCopies`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from common import files
from common.lock import DirectoryLock, ObjectLock
from common.objectstore import (
    ObjectPath,
    download,
    filesystem,
    is_url,
    open_stream,
    read_bytes,
    reporting,
    upload,
)

WorkPath = Path | ObjectPath
# In a folder of object storage published by `publish_folder`: written last, lists its files.
PUBLISHED = "_DONE.json"


def as_path(path: str | WorkPath) -> WorkPath:
    """`path` as a local Path, or as an ObjectPath when it is a URL."""
    if isinstance(path, Path | ObjectPath):
        return path
    return ObjectPath.parse(path) if is_url(path) else Path(path)


def exists(path: WorkPath) -> bool:
    """Whether `path` is a file, or a folder (in a store: a prefix holding an object)."""
    if isinstance(path, Path):
        return path.exists()
    fs, key = filesystem(str(path))
    with reporting(str(path)):
        return fs.exists(key)


def glob(folder: WorkPath, pattern: str) -> list[WorkPath]:
    """The paths under `folder` that match `pattern` (`**` for any depth), sorted."""
    if isinstance(folder, Path):
        return sorted(folder.glob(pattern))
    fs, key = filesystem(str(folder))
    with reporting(str(folder)):
        found = fs.glob(f"{key}/{pattern}")
    return sorted(ObjectPath(folder.scheme, folder.key / PurePosixPath(f).relative_to(key)) for f in found)


def stamp(path: WorkPath) -> list[Any]:
    """What changes when the file is written again: its size and mtime, or its size and ETag."""
    if isinstance(path, Path):
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    fs, key = filesystem(str(path))
    with reporting(str(path)):
        info = fs.info(key)
    return [info["size"], info.get("ETag", "")]


def open_input(path: WorkPath) -> IO[bytes]:
    return open(path, "rb") if isinstance(path, Path) else open_stream(str(path))


def parquet_file(path: WorkPath) -> pq.ParquetFile:
    """A parquet file read as needed: its footer, then the row groups asked for."""
    return pq.ParquetFile(path if isinstance(path, Path) else open_input(path))


def read_table(path: WorkPath, **options: Any) -> pa.Table:
    """`pq.read_table` of a file or a folder of files (`options`: its columns, filters...)."""
    if isinstance(path, Path):
        return pq.read_table(path, **options)
    fs, key = filesystem(str(path))
    with reporting(str(path)):
        return pq.read_table(key, filesystem=fs, **options)


def read_json(path: WorkPath) -> Any:
    return files.read_json(path) if isinstance(path, Path) else json.loads(read_bytes(str(path)))


def write_json(path: WorkPath, obj: Any, *, sort_keys: bool = False) -> None:
    _written(path, lambda local: files.write_json(local, obj, sort_keys=sort_keys))


def write_text(path: WorkPath, text: str) -> None:
    _written(path, lambda local: files.write_text(local, text))


def atomic_write(path: WorkPath, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace `path` with what `write(file)` writes to a binary file object."""
    _written(path, lambda local: files.atomic_write(local, write))


def staging_file(path: WorkPath) -> Path:
    """The local file a streaming writer fills before `publish(it, path)`: `path`'s temporary name
    beside it, or a new node-local scratch file for an object."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return files.temporary_path(path)
    with tempfile.NamedTemporaryFile(prefix="pipeline-", suffix=f"-{path.name}", delete=False) as f:
        return Path(f.name)


def publish(staged: Path, path: WorkPath) -> None:
    """Put the finished `staging_file(path)` in place: renamed, or put and then deleted."""
    if isinstance(path, Path):
        files.publish(staged, path)
        return
    try:
        upload(staged, str(path))
    finally:
        staged.unlink(missing_ok=True)


def make_folder(folder: WorkPath) -> None:
    """Create a local folder; a store has none to create (a prefix exists through its objects)."""
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)


def remove(path: WorkPath) -> None:
    """Remove a file, or a folder whole, if it is there."""
    if isinstance(path, Path):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    fs, key = filesystem(str(path))
    with reporting(str(path)):
        if fs.exists(key):
            fs.rm(key, recursive=True)


def remove_temporaries(root: WorkPath) -> int:
    """Delete what killed writers left under `root`; a store holds none (a put is atomic)."""
    return files.remove_temporaries(root) if isinstance(root, Path) else 0


def lock(root: WorkPath) -> DirectoryLock | ObjectLock:
    """The lock of the work dir: its `.lock` file, or its `.lock` object."""
    return DirectoryLock(root) if isinstance(root, Path) else ObjectLock(str(root))


def publish_folder(finished: WorkPath, folder: WorkPath) -> None:
    """Put the finished folder in place of `folder`, complete or not at all for `is_published`: a local
    folder by one rename; in a store, its objects copied (any earlier copy removed first), then the
    `PUBLISHED` marker that lists them written last."""
    if isinstance(finished, Path) and isinstance(folder, Path):
        shutil.rmtree(folder, ignore_errors=True)
        finished.replace(folder)
        return
    remove(folder)
    fs, source = filesystem(str(finished))
    names = [str(PurePosixPath(key).relative_to(source)) for key in sorted(fs.find(source))]
    for name in names:
        fs.copy(f"{source}/{name}", filesystem(str(folder / name))[1])
    write_json(folder / PUBLISHED, {"files": names})


def is_published(folder: WorkPath) -> bool:
    return exists(folder if isinstance(folder, Path) else folder / PUBLISHED)


class LocalCopies:
    """Local files for paths, as memory-mapping or a local API needs them: a local path itself, an object
    fetched once into a node-local scratch folder, removed on `close` (or exit, or when collected)."""

    def __init__(self) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def __call__(self, path: WorkPath) -> Path:
        if isinstance(path, Path):
            return path
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pipeline-copies-")
        copy = Path(self._scratch.name) / hashlib.sha256(str(path).encode()).hexdigest()[:16] / path.name
        return copy if copy.exists() else download(str(path), copy)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> LocalCopies:
        return self

    def __exit__(self, *error: object) -> None:
        self.close()


def node_folder(path: WorkPath) -> Path:
    """A local folder standing for `path` on this node: the folder itself, or for an object-storage path
    one named by its URL in this node's temporary folder (so that a re-run on the node finds it)."""
    if isinstance(path, Path):
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "pipeline-staged" / f"{path.name}-{digest}"


def _written(path: WorkPath, write_local: Callable[[Path], Any]) -> None:
    """Write `path` with `write_local(a local path)`: in place, or into scratch and then put."""
    if isinstance(path, Path):
        write_local(path)
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-") as scratch:
        local = Path(scratch) / path.name
        write_local(local)
        upload(local, str(path))
