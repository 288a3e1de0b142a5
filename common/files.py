"""Atomic writes: every output file is written under a temporary name, fsynced, then renamed into place.

One temporary-name rule for the whole project: `.<name>.<pid>.tmp` beside the target (files and
folders alike). A killed process leaves at most such names, never a half-written target, and
`remove_temporaries` finds every one of them.

An output path is never something we delete: a command writes a folder only where nothing is (or an
empty folder is), or over a folder it recognizes as its own output (`check_output_folder`), and a
finished folder is published by rename (`publish_folder`), never over a file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OutputPathError",
    "atomic_write",
    "check_output_folder",
    "is_temporary",
    "publish",
    "publish_folder",
    "read_json",
    "remove_temporaries",
    "temporary_path",
    "write_bytes",
    "write_json",
    "write_text",
]

_SUFFIX = ".tmp"


class OutputPathError(ValueError):
    """An output path a command will not write: a file, or a folder holding what it did not write."""


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


def check_output_folder(folder: str | Path, is_ours: Callable[[Path], bool], ours: str) -> None:
    """Raise OutputPathError unless `folder` is absent, an empty folder, or a folder `is_ours` accepts
    (`ours` names that kind of folder in the message). A symbolic link is refused: replacing one
    would act on where it points."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return
    _check_is_folder(folder)
    if any(folder.iterdir()) and not is_ours(folder):
        raise OutputPathError(
            f"{folder} holds files that are not {ours}; choose another output path or empty it"
        )


def publish_folder(tmp: str | Path, folder: str | Path, *, replace: bool = False) -> Path:
    """Rename the finished folder `tmp` (see `temporary_path`) to `folder`. An existing `folder` is an
    OutputPathError unless `replace` is true and it is a folder (that the caller has checked it may
    replace): that one is renamed to a temporary name and deleted once the new one is in place.
    A file or a symbolic link at `folder` is never moved."""
    tmp, folder = Path(tmp), Path(folder)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    if os.path.lexists(folder):
        _check_is_folder(folder)
        if not replace:
            raise OutputPathError(f"{folder} exists; it is replaced only when asked to")
        _swap_in(tmp, folder)
    else:
        tmp.rename(folder)  # fails on a folder created since, unless an empty one: nothing is lost
    _fsync_dir(folder.parent)
    return folder


def _check_is_folder(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        raise OutputPathError(f"{path} exists and is not a folder; choose another output path")


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put `tmp` in place of the folder `folder`, which is deleted only once `tmp` is in place."""
    old = temporary_path(folder.with_name(folder.name + ".old"))
    folder.rename(old)
    try:
        tmp.rename(folder)
    except BaseException:
        old.rename(folder)
        raise
    shutil.rmtree(old)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
