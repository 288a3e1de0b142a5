"""Atomic writes: every output file is written under a temporary name, fsynced, then renamed into place.

One temporary-name rule for the whole project: `.<name>.<pid>.tmp` beside the target (files and
folders alike). A killed process leaves at most such names, never a half-written target, and
`remove_temporaries` finds every one of them.

An output path is never something we delete: a command writes a folder only where nothing is (or an
empty folder is), or over a folder it recognizes as its own output (`check_output_folder`), and a
finished folder is published by rename (`publish_folder`), never over a file.

A write that fails for want of space or permission is told in one line (`disk_error`), whatever library
raised it and however it was wrapped; a command whose output comes after long work checks first that
it can write there at all (`check_writable`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OutputPathError",
    "atomic_write",
    "check_output_folder",
    "check_writable",
    "disk_error",
    "error_chain",
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
_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# What a full disk looks like where no errno survives: pyarrow's short write ("78260 requested and 20416
# written"), torch.save's stream errors ("unexpected pos 704 vs 598", "basic_ios::clear: iostream
# error", "PytorchStreamWriter failed writing"), and Rust's text of the errno (safetensors: "I/O error:
# No space left on device (os error 28)").
_FULL_MESSAGE = re.compile(
    r"\d+ requested and \d+ written|unexpected pos \d+|basic_ios::clear|PytorchStreamWriter failed writing"
    r"|No space left on device|Disk quota exceeded"
)
_READ_ONLY_MESSAGE = re.compile(r"Read-only file system")


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


def check_writable(folder: str | Path) -> None:
    """Raise the OSError (read-only file system, no permission) that a file created in `folder`, or in
    its nearest existing parent while it does not exist, meets; the file leaves no trace."""
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    with tempfile.TemporaryFile(dir=path):
        pass


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


def disk_error(error: BaseException, path: str | Path) -> str | None:
    """The one line telling that `error` is a full disk or a path that cannot be written, with the
    free space there, or None when it is something else. `error` may wrap the OSError (as a cause,
    a context, or a Ray task error's `cause`); the line names the file the OSError names, else `path`."""
    chain = error_chain(error)
    for e in chain:
        if isinstance(e, OSError) and (e.errno in _FULL or e.errno in _NOT_WRITABLE):
            where = Path(e.filename) if e.filename else Path(path)
            what = "no space left on device" if e.errno in _FULL else _NOT_WRITABLE[e.errno]
            return f"error: cannot write {where}: {what} ({_free_space(where)})"
    for pattern, what in (
        (_FULL_MESSAGE, "no space left on device"),
        (_READ_ONLY_MESSAGE, "read-only file system"),
    ):
        if any(pattern.search(str(e)) for e in chain):
            return f"error: cannot write {path}: {what} ({_free_space(Path(path))})"
    return None


def error_chain(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps (its cause, its context, a Ray task error's `cause`), each once."""
    chain: list[BaseException] = []
    todo: list[object] = [error]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseException) and not any(e is seen for seen in chain):
            chain.append(e)
            todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return chain


def _free_space(path: Path) -> str:
    """How much is free on the file system of `path` (or of its nearest existing folder)."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return f"{_size(usage.free)} free of {_size(usage.total)} on {folder}"


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:,.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:,.1f} {unit}"
    return f"{n / 1024:,.1f} GB"


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
