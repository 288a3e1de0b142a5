"""Atomic writes: every output file is written under a temporary name, fsynced, then renamed into place.

One temporary-name rule for the whole project: `.<name>.<pid>.tmp` beside the target (files and
folders alike). A killed process leaves at most such names, never a half-written target, and
`remove_temporaries` finds every one of them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "is_temporary",
    "publish",
    "read_json",
    "remove_temporaries",
    "replace_folder",
    "temporary_path",
    "write_bytes",
    "write_json",
    "write_text",
]

_SUFFIX = ".tmp"


def temporary_path(path: str | Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{_SUFFIX}")


def is_temporary(path: str | Path) -> bool:
    name = Path(path).name
    return name.startswith(".") and name.endswith(_SUFFIX)


def remove_temporaries(root: str | Path) -> int:
    """Delete what killed writers left under `root` (files and folders); returns how many."""
    stale = [p for p in Path(root).rglob(f".*{_SUFFIX}") if is_temporary(p)]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Create or replace `path` with what `write(file)` writes to a binary file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Rename a finished `temporary_path(path)` that a streaming writer filled into place."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    """`obj` as indented UTF-8 JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=sort_keys) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def replace_folder(tmp: str | Path, folder: str | Path) -> Path:
    """Put the finished folder `tmp` (see `temporary_path`) in place of `folder`, whose old content
    goes only once the new one is in place."""
    tmp, folder = Path(tmp), Path(folder)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    old = temporary_path(folder.with_name(folder.name + ".old"))
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
