"""Object storage (S3, GCS, R2, MinIO...): the one place that knows a URL from a local path.

A URL (`s3://bucket/key`, `gs://...`) is opened through fsspec with retries set, so a throttled or
reset connection is retried with backoff rather than failing a run. Where to reach the store and with
which credentials comes from the standard settings of its client (for S3: `AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, an instance role...), never from our configs.

A failure the user can fix (no credentials, an unknown bucket, a denied read or write, a missing object,
an object that changed while it was read) is told in one line naming the URL (`storage_error`), in the
style of `common.files.disk_error`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

from common.files import error_chain, temporary_path

__all__ = [
    "READ_BLOCK",
    "ObjectChangedError",
    "ObjectPath",
    "StorageError",
    "download",
    "filesystem",
    "is_url",
    "join",
    "open_stream",
    "read_bytes",
    "reporting",
    "storage_error",
    "upload",
]

RETRIES = 8  # attempts per request; botocore's standard mode backs off exponentially with jitter
# Bytes of an object fetched per ranged request (and read ahead of the reader): large enough for the
# store's throughput, small enough that the first rows never wait for a whole object.
READ_BLOCK = 8 << 20
_LOCAL_SCHEMES = {"", "file", "local"}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# What each protocol is opened with. For S3, botocore retries a request (throttling, 5xx, a reset
# before the response) and s3fs itself a body cut off mid-read (`S3FileSystem.retries`, 5 tries).
# Listings are never cached: the folders listed are written by other processes (Ray tasks, other nodes).
_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {"retries": {"max_attempts": RETRIES, "mode": "standard"}},
        "use_listings_cache": False,
    },
}
_NO_CREDENTIALS = re.compile(r"Unable to locate credentials|NoCredentialsError|PartialCredentials")
_REFUSED_CREDENTIALS = re.compile(r"InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken")
_NO_BUCKET = re.compile(r"NoSuchBucket|The specified bucket does not exist")
_DENIED = re.compile(r"AccessDenied|Forbidden|\(403\)")
_OPERATION = re.compile(r"when calling the (\w+) operation")


class ObjectChangedError(OSError):
    """An object whose ETag or size is not the one it had when it was listed: a writer replaced it."""


class StorageError(ValueError):
    """Object storage refused or lacked what a URL names, in the one line `storage_error` gives (without
    its "error: "); a ValueError, as bad input is, so that every rank learns it (`from_rank0`)."""


@contextlib.contextmanager
def reporting(url: str) -> Iterator[None]:
    """Turn an error that `storage_error` recognizes, raised inside, into a StorageError naming `url`."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        if (line := storage_error(e, url)) is None:
            raise
        raise StorageError(line.removeprefix("error: ")) from e


def is_url(path: str | Path) -> bool:
    """Whether `path` names object storage (`s3://...`) rather than the local file system
    (a plain path, or a `file://` URL)."""
    match = _URL.match(str(path))
    return bool(match) and match.group(1).lower() not in _LOCAL_SCHEMES


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec file system for `url` (with retries set) and the path within it."""
    match = _URL.match(url)
    return fsspec.core.url_to_fs(url, **_OPTIONS.get(match.group(1).lower() if match else "", {}))


@dataclass(frozen=True, order=True)
class ObjectPath:
    """A path in object storage, `scheme://bucket/key`, with the pure-path operations of a local `Path`
    (`/`, `name`, `stem`, `parent`, `relative_to`); what reads or writes it goes through fsspec. It has
    no `__fspath__`, so no local file operation can take it for a local path by mistake."""

    scheme: str
    key: PurePosixPath  # `bucket/key...`

    @classmethod
    def parse(cls, url: str) -> ObjectPath:
        scheme, rest = url.split("://", 1)
        return cls(scheme.lower(), PurePosixPath(rest.strip("/")))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __truediv__(self, part: str) -> ObjectPath:
        return ObjectPath(self.scheme, self.key / part)

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def stem(self) -> str:
        return self.key.stem

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.scheme, self.key.parent)

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        return self.key.relative_to(other.key)


def join(url: str, *parts: str) -> str:
    """`url` with `parts` appended, one slash between each."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(url: str) -> bytes:
    """The whole object at `url`; a StorageError tells what the user can fix."""
    fs, remote = filesystem(url)
    with reporting(url):
        return fs.cat_file(remote)


def open_stream(url: str) -> IO[bytes]:
    """The object at `url` for reading as a stream, in ranged requests of `READ_BLOCK` bytes, each
    fetched when the reader reaches it (a reader that seeks, as parquet's does, fetches what it reads)."""
    fs, remote = filesystem(url)
    with reporting(url):
        return fs.open(remote, "rb", block_size=READ_BLOCK, cache_type="readahead")


def upload(path: str | Path, url: str) -> None:
    """Copy the local file `path` to `url` (one object: it appears whole or not at all)."""
    fs, remote = filesystem(url)
    with reporting(url):
        fs.put_file(str(path), remote)


def download(url: str, path: str | Path) -> Path:
    """Copy the object at `url` to `path`, under a temporary name renamed into place once complete:
    a killed download leaves no file at `path`. A StorageError tells what the user can fix."""
    fs, remote = filesystem(url)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with reporting(url):
            fs.get_file(remote, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def storage_error(error: BaseException, url: str) -> str | None:
    """The one line telling what went wrong reaching `url` when the user can fix it (credentials, the
    bucket, permissions, a missing or changed object), or None when `error` is something else.
    `error` may wrap the client's exception as a cause or a context."""
    chain = error_chain(error)
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    if _NO_CREDENTIALS.search(text):
        return (
            f"error: cannot reach {url}: no credentials for object storage "
            "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the node a role)"
        )
    if _REFUSED_CREDENTIALS.search(text):
        return f"error: cannot reach {url}: the object storage refused the credentials"
    if _NO_BUCKET.search(text):
        return f"error: cannot reach {url}: bucket {_bucket(url)!r} does not exist"
    if any(isinstance(e, PermissionError) for e in chain) or _DENIED.search(text):
        operation = _OPERATION.search(text)
        denied = f" ({operation.group(1)})" if operation else ""
        return f"error: access to {url} denied{denied}; check the credentials' permissions on it"
    if any(isinstance(e, ObjectChangedError) or type(e).__name__ == "FileExpired" for e in chain):
        return (
            f"error: {url} changed while it was read (its ETag or size differs from when it was listed); "
            "read it again once its writer is done"
        )
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return f"error: {url} does not exist"
    return None


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]
