"""One writer per directory: a job that writes a folder holds `<folder>/.lock` while it runs.

The lock is an `fcntl.flock` on that file, which the kernel drops with the process however it ends
(kill -9 included). The file holds the holder's host, pid, start time and command, so that a second job
is refused with one line naming the first. Where the filesystem has no flock (some network
filesystems), creating the file with O_EXCL is the lock, and a holder that died without releasing it
is known by its pid being gone on the same host. Either way a lock file left by a dead holder is taken
over with a message, and a released lock leaves no file behind.

Object storage has no flock and no rename: there the lock is an object `<url>/.lock` holding the same
record, created with a conditional put that fails when it exists (`ObjectLock`). A holder that died
without deleting it is known only on its own host (its pid gone); a lock object left on another host's
behalf refuses every job until it is deleted by hand, and the message names the object to delete.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from common.objectstore import filesystem, join, reporting

__all__ = ["LOCK_FILE", "DirectoryLock", "Holder", "LockError", "ObjectLock", "holder_of"]

LOCK_FILE = ".lock"
# What flock raises where the filesystem does not support it.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class LockError(ValueError):
    """Another job holds the folder: a one-line message naming it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file records it."""

    host: str
    pid: int
    started: str  # ISO 8601, UTC
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), started, _command())

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"

    def is_dead(self) -> bool:
        """True only when it is certain: the pid is gone on this host."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:  # it exists, another user's
            pass
        return False


class _Lock(abc.ABC):
    """A lock held for a `with` block: `acquire` on entry, `release` on exit, error or not."""

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @abc.abstractmethod
    def acquire(self) -> None: ...

    @abc.abstractmethod
    def release(self) -> None: ...


class DirectoryLock(_Lock):
    """The exclusive lock of `folder` (created if missing); `acquire` raises LockError while another
    job holds it. A context manager, or `acquire()` and `release()` for a lock held across calls."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._made_folder = False

    def acquire(self) -> None:
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = self._take()
        _write_holder(fd, Holder.this_process())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then close it (a job that opened this file meanwhile sees it unlinked
        and locks a new one), and the folder if `acquire` made it and the job left it empty. Nothing to
        do when the lock is not held."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if self._made_folder and not any(self.folder.iterdir()):
            with contextlib.suppress(OSError):  # another job's lock file came meanwhile
                self.folder.rmdir()

    def _take(self) -> int:
        """The lock file's descriptor, once this process holds it."""
        while True:
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._held_by(holder) from None
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise
                if created:
                    return fd  # no flock here: creating the file with O_EXCL was the lock
                self._remove_if_holder_dead(fd)
                continue
            if not _same_file(fd, self.path):
                os.close(fd)  # its holder released it (and unlinked it) meanwhile: lock the new file
                continue
            if (previous := _read_holder(fd)) is not None:
                _warn_taken_over(self.path, previous)  # flocked, so its holder is gone
            return fd

    def _open(self) -> tuple[int, bool]:
        """The lock file opened for writing, and whether this call created it."""
        while True:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                pass
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # released meanwhile

    def _remove_if_holder_dead(self, fd: int) -> None:
        """Without flock: remove the open lock file when its holder is dead on this host, else refuse.
        Two jobs taking over the same dead holder's file at the same instant could both succeed: a race
        only this fallback has, and only after a holder died."""
        holder = _read_holder(fd)
        os.close(fd)
        if holder is None or not holder.is_dead():
            raise self._held_by(holder)
        self.path.unlink(missing_ok=True)
        _warn_taken_over(self.path, holder)

    def _held_by(self, holder: Holder | None) -> LockError:
        who = str(holder) if holder is not None else f"holder unknown: {self.path} is empty or unreadable"
        return LockError(f"{self.folder} is in use by another job ({who}); wait for it to end or stop it")


class ObjectLock(_Lock):
    """The exclusive lock of the object-storage folder `url`: the object `<url>/.lock`, created only if
    absent (S3's conditional put, If-None-Match); `acquire` raises LockError while another job holds
    it. A context manager, like `DirectoryLock`."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.path = join(self.url, LOCK_FILE)
        self._fs, self._key = filesystem(self.path)
        self._held = False

    def acquire(self) -> None:
        record = (json.dumps(asdict(Holder.this_process())) + "\n").encode()
        with reporting(self.path):  # no bucket, no credentials, a denied put: one line
            self._take(record)
        self._held = True

    def _take(self, record: bytes) -> None:
        while True:
            try:
                self._fs.pipe_file(self._key, record, mode="create")
                break
            except FileExistsError:
                pass
            try:
                holder = self._holder()
            except FileNotFoundError:
                continue  # released meanwhile
            if holder is None or not holder.is_dead():
                who = str(holder) if holder is not None else "holder unknown: the lock object is unreadable"
                raise LockError(
                    f"{self.url} is in use by another job ({who}); wait for it to end or stop it, or, if it"
                    f" is gone, delete {self.path}"
                )
            _warn_taken_over(self.path, holder)
            self._fs.rm_file(self._key)

    def release(self) -> None:
        if self._held:
            self._fs.rm_file(self._key)
            self._held = False

    def _holder(self) -> Holder | None:
        """The holder the lock object records; None when it is unreadable."""
        data = self._fs.cat_file(self._key)
        try:
            return Holder(**json.loads(data))
        except (ValueError, TypeError):
            return None


def _command() -> str:
    """This process's command line as started (`python -m pipeline run ...`: sys.argv loses the `-m`)."""
    try:
        args = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:  # not Linux
        args = [sys.executable, *sys.argv]
    return shlex.join(args)


def _warn_taken_over(path: str | Path, holder: Holder) -> None:
    print(
        f"warning: {path}: taking over the lock of a job that ended without releasing it ({holder})",
        file=sys.stderr,
        flush=True,
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def holder_of(folder: str | Path) -> Holder | None:
    """Who holds `folder`'s lock, as its lock file records it; None when there is no lock file (or it is
    empty or unreadable)."""
    try:
        return _parse_holder((Path(folder) / LOCK_FILE).read_bytes())
    except FileNotFoundError:
        return None


def _read_holder(fd: int) -> Holder | None:
    """The holder the open lock file records; None when it is empty (new) or unreadable."""
    return _parse_holder(os.pread(fd, 65536, 0))


def _parse_holder(record: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(record))
    except (ValueError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(asdict(holder)) + "\n").encode(), 0)
    os.fsync(fd)
