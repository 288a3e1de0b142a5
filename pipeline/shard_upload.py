"""`pipeline pack` to object storage (`pack.out_dir: s3://...`): the shards are packed into a local
folder of the work dir (`WorkDir.staged_shards`) exactly as into a local out_dir, then copied to the
store object by object.

A store has no rename, so what keeps a local folder whole becomes an order of writes: the manifest
object is deleted first (the folder is unfinished from then on), each shard is put (a put is atomic: a
killed one leaves no object), then the validation split's manifests and the manifest last ("write the
object, then the marker that lists it"). A reader that finds the manifest finds every shard it lists,
with its sha256. A re-run puts only the shards whose object is missing or differs (read back and
hashed), and nothing when the store already holds this manifest and its shards.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath

from fsspec import AbstractFileSystem

from common.files import OutputPathError
from common.lock import LOCK_FILE
from common.objectstore import filesystem, join
from common.shards import HASH_BLOCK, MANIFEST, read_manifest, stream_sha256

_SHARD = "shard-*.arrow"


def is_pack_object(name: str) -> bool:
    """Whether an object's name is one that `pipeline pack` writes (a manifest, a shard, the lock)."""
    base = PurePosixPath(name).name
    return base in (MANIFEST, LOCK_FILE) or fnmatch.fnmatch(base, _SHARD)


def check_remote_output(url: str) -> None:
    """Raise OutputPathError unless `url` holds nothing, or only objects that pack writes."""
    fs, root = filesystem(url)
    if fs.isfile(root):
        raise OutputPathError(f"{url} is an object, not a folder; choose another out_dir")
    if foreign := [p for p in fs.find(root) if not is_pack_object(p)]:
        raise OutputPathError(
            f"{url} holds objects that are not shards that `pipeline pack` wrote ({foreign[0]}, ...);"
            " choose another output path or empty it"
        )


def upload(staged: Path, url: str) -> int:
    """Copy the finished pack in `staged` to `url`, manifest last; returns how many objects were put
    (0: `url` already held this exact pack)."""
    fs, root = filesystem(url)
    shards = _listed_shards(staged)
    manifests = sorted(staged.rglob(MANIFEST), key=lambda p: (-len(p.parts), str(p)))  # the top one last
    remote = {rel: join(root, rel) for rel in [*shards, *(str(m.relative_to(staged)) for m in manifests)]}
    if _holds(fs, remote[MANIFEST], staged / MANIFEST) and all(
        fs.exists(remote[rel]) and fs.size(remote[rel]) == (staged / rel).stat().st_size for rel in shards
    ):
        return 0
    for manifest in reversed(manifests):  # the top one first: from here the folder is unfinished
        key = remote[str(manifest.relative_to(staged))]
        if fs.exists(key):
            fs.rm_file(key)
    put = 0
    for rel, sha256 in shards.items():
        if not (fs.exists(remote[rel]) and _sha256(fs, remote[rel]) == sha256):
            fs.put_file(str(staged / rel), remote[rel])
            put += 1
    for manifest in manifests:
        fs.put_file(str(manifest), remote[str(manifest.relative_to(staged))])
        put += 1
    _remove_unlisted(fs, root, set(remote))
    return put


def _listed_shards(staged: Path) -> dict[str, str]:
    """Every shard the pack's manifests list (the training split's, then the validation split's), by
    its path relative to `staged`, with its sha256."""
    top = read_manifest(staged)
    shards = {info.file: info.sha256 for info in top.shards}
    if top.valid is not None:
        valid = read_manifest(staged / top.valid)
        shards |= {f"{top.valid}/{info.file}": info.sha256 for info in valid.shards}
    return shards


def _holds(fs: AbstractFileSystem, key: str, local: Path) -> bool:
    """Whether the object `key` exists with the bytes of the file `local`."""
    return fs.exists(key) and fs.cat_file(key) == local.read_bytes()


def _sha256(fs: AbstractFileSystem, key: str) -> str:
    with fs.open(key, "rb", block_size=HASH_BLOCK) as f:
        return stream_sha256(f)


def _remove_unlisted(fs: AbstractFileSystem, root: str, listed: set[str]) -> None:
    """Delete what an earlier pack put that this one does not list (fewer shards, a source gone), once
    the new manifest is in place; the lock stays."""
    for key in fs.find(root):
        rel = key[len(root) :].lstrip("/")
        if rel not in listed and is_pack_object(rel) and PurePosixPath(rel).name != LOCK_FILE:
            fs.rm_file(key)
