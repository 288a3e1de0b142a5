"""Checkpoints off the node: every complete checkpoint of `checkpoint.dir` copied to `checkpoint.mirror`
(a URL, common.objectstore) while training goes on, and a resume that finds a newer complete checkpoint
there than in `checkpoint.dir` (a fresh node's empty one, say) bringing it back first.

DeepSpeed writes its checkpoint to the local dir as ever (torch.save to paths: a local write, then the
upload off the training's path); the mirror trails it by one upload.

The upload order makes a checkpoint on the URL complete exactly when its `checksums.json` is there:
first the step's old `checksums.json` (an earlier upload of the same step) is deleted, then every file
the checksums list goes up, then `checksums.json`, then `latest`; checkpoints beyond `keep_last` are
removed there checksums first. A resume takes the newest step whose checksums are there and whose
files are there at the listed sizes, downloads it beside `checkpoint.dir`, checks every file's hash,
and renames it into place; any it passes over is named in one line.

Nodes that share no disk (training.checkpoint, `node_local`) each hold a part of every checkpoint, and
each node's first rank uploads its part (`Part`): the files no node before it holds. A node other than
the first then puts `<tag>/.part-<node>.json`, the sizes and hashes of what it uploaded; the first node,
once its own files are up and every other node's marker says what it was told to upload, puts the
checksums of the whole checkpoint, then `latest`. A marker from an earlier upload of the step either
lists other hashes (and is waited past) or the very bytes that are there.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import publish_folder, read_json, temporary_path, write_text
from common.objectstore import download, filesystem, join, read_bytes, reporting, upload
from training.checkpoint import CHECKSUMS, LATEST, TAG, why_incomplete

__all__ = ["Mirror", "Part", "complete_tags", "pull", "pull_newer", "split_by_node", "upload_checkpoint"]

_POLL_S = 0.2  # how often the first node looks for the other nodes' markers


@dataclass(frozen=True)
class Part:
    """What one node uploads of a checkpoint spread over nodes: `parts[node]`, each node's files (their
    sizes and hashes, as checksums.json lists them), the first node's first."""

    node: int
    parts: list[dict[str, Any]]

    @property
    def files(self) -> dict[str, Any]:
        return self.parts[self.node]

    def whole(self) -> dict[str, Any]:
        """The checksums of the whole checkpoint: every node's files."""
        return dict(sorted((name, info) for part in self.parts for name, info in part.items()))


def split_by_node(held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each node's share of the upload, from the files each node holds (`held`, the first node's first):
    a file goes up once, from the first node holding it."""
    taken: set[str] = set()
    parts = []
    for files in held:
        parts.append({name: info for name, info in files.items() if name not in taken})
        taken |= files.keys()
    return parts


class Mirror:
    """Uploads checkpoints to `url` in a background thread, one at a time (rank 0, or each node's first
    rank when the nodes share no disk)."""

    def __init__(self, url: str, keep_last: int):
        self.url, self.keep_last = url, keep_last
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()

    def upload(self, folder: Path, part: Part | None = None) -> None:
        """Start copying the complete checkpoint `folder` (this node's `part` of it, when the nodes
        share no disk), once the copy before it is done."""
        self.wait()
        self._abort.clear()
        self._thread = threading.Thread(
            target=self._copy, args=(folder, part), name="checkpoint-mirror", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Return once the copy in progress is done; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def abort(self) -> None:
        """Stop waiting for other nodes' parts (one of them failed): the checkpoint stays incomplete."""
        self._abort.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._error = None

    def _copy(self, folder: Path, part: Part | None) -> None:
        try:
            upload_checkpoint(folder, self.url, self.keep_last, part, self._abort)
        except BaseException as e:  # told on the training thread, by `wait`
            self._error = e


def upload_checkpoint(
    folder: Path, url: str, keep_last: int, part: Part | None = None, abort: threading.Event | None = None
) -> None:
    """Copy the complete checkpoint `folder` to `url`/<its tag>, in the order the module describes; with
    `part`, only this node's part (the first node then completes it). `abort` set stops the first node
    waiting for the others."""
    fs, base = filesystem(url)
    tag = folder.name
    with reporting(join(url, tag)):
        fs.rm_file(f"{base}/{tag}/{CHECKSUMS}")  # deleting what is not there succeeds
    files = read_json(folder / CHECKSUMS)["files"] if part is None else part.files
    for name in files:
        upload(folder / name, join(url, tag, name))
    if part is not None and part.node > 0:
        with reporting(join(url, tag)):
            fs.pipe_file(f"{base}/{tag}/{_marker(part.node)}", _marker_bytes(files))
        return
    if part is None:
        upload(folder / CHECKSUMS, join(url, tag, CHECKSUMS))
    else:
        if not _wait_for_parts(url, tag, part, abort or threading.Event()):
            return
        with reporting(join(url, tag)):
            checksums = json.dumps({"files": part.whole()}, indent=1, ensure_ascii=False) + "\n"
            fs.pipe_file(f"{base}/{tag}/{CHECKSUMS}", checksums.encode())
            fs.rm([f"{base}/{tag}/{_marker(node)}" for node in range(1, len(part.parts))])
    with reporting(join(url, LATEST)):
        fs.pipe_file(f"{base}/{LATEST}", tag.encode())
        for old in _remote_tags(url)[:-keep_last]:
            if old != tag:
                fs.rm_file(f"{base}/{old}/{CHECKSUMS}")
                fs.rm(f"{base}/{old}", recursive=True)


def _marker(node: int) -> str:
    return f".part-{node}.json"


def _marker_bytes(files: dict[str, Any]) -> bytes:
    return (json.dumps(files, sort_keys=True) + "\n").encode()


def _wait_for_parts(url: str, tag: str, part: Part, abort: threading.Event) -> bool:
    """Whether every other node's marker came, listing what it was to upload (False: `abort` was set)."""
    fs, base = filesystem(url)
    waiting = {node: _marker_bytes(files) for node, files in enumerate(part.parts) if node > 0}
    while waiting:
        for node, expected in list(waiting.items()):
            with reporting(join(url, tag, _marker(node))):
                try:
                    if fs.cat_file(f"{base}/{tag}/{_marker(node)}") == expected:
                        del waiting[node]
                except FileNotFoundError:
                    pass
        if waiting and abort.wait(_POLL_S):
            return False
    return True


def complete_tags(url: str) -> list[str]:
    """The tags at `url` whose checkpoints look complete (checksums there, every file at its size),
    oldest first."""
    return [tag for tag in _remote_tags(url) if _why_incomplete_remote(url, tag) is None]


def pull(url: str, tag: str, root: Path) -> Path | None:
    """Bring the checkpoint `tag` at `url` into `root` (and name it in `root`/latest), every file's hash
    checked; its folder, or None (with one line) when it changed while it was read."""
    tmp = temporary_path(root / tag)
    shutil.rmtree(tmp, ignore_errors=True)
    download(join(url, tag, CHECKSUMS), tmp / CHECKSUMS)
    for name in read_json(tmp / CHECKSUMS)["files"]:
        download(join(url, tag, name), tmp / name)
    if (why := why_incomplete(tmp)) is not None:
        shutil.rmtree(tmp)
        print(f"{join(url, tag)} changed while it was read ({why}); passed over", flush=True)
        return None
    if (root / tag).exists():  # an incomplete local copy of this step: the resume passed it over
        shutil.rmtree(root / tag)
    publish_folder(tmp, root / tag)
    write_text(root / LATEST, tag)
    print(f"{join(url, tag)}: copied to {root / tag}", flush=True)
    return root / tag


def pull_newer(url: str, root: Path, than: str | None) -> Path | None:
    """Bring the newest complete checkpoint at `url` whose tag sorts after `than` into `root` (and name
    it in `root`/latest); its folder, or None when `url` has none newer."""
    for tag in reversed(_remote_tags(url)):
        if than is not None and tag <= than:
            return None
        if (why := _why_incomplete_remote(url, tag)) is not None:
            print(f"{join(url, tag)} is incomplete: {why}; passed over", flush=True)
            continue
        if (folder := pull(url, tag, root)) is not None:
            return folder
    return None


def _remote_tags(url: str) -> list[str]:
    """The checkpoint tags under `url`, oldest first."""
    fs, base = filesystem(url)
    with reporting(url):
        fs.invalidate_cache()  # s3fs keeps listings: another node may have uploaded since
        names = fs.find(base, maxdepth=1, withdirs=True)
    return sorted(tag for name in names if TAG.fullmatch(tag := name.rstrip("/").rsplit("/", 1)[-1]))


def _why_incomplete_remote(url: str, tag: str) -> str | None:
    """Why the checkpoint `tag` at `url` is not complete (its checksums or a file of the listed size are
    not there), or None when it looks complete."""
    fs, base = filesystem(url)
    with reporting(join(url, tag)):
        sizes = {
            path.removeprefix(f"{base}/{tag}/"): info["size"]
            for path, info in fs.find(f"{base}/{tag}", detail=True).items()
        }
    if CHECKSUMS not in sizes:
        return f"no {CHECKSUMS}: its upload did not finish"
    for name, recorded in json.loads(read_bytes(join(url, tag, CHECKSUMS)))["files"].items():
        if name not in sizes:
            return f"{name} is missing"
        if sizes[name] != recorded["bytes"]:
            return f"{name} has {sizes[name]:,} bytes, {recorded['bytes']:,} were written"
    return None
