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
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from common.files import publish_folder, read_json, temporary_path, write_text
from common.objectstore import download, filesystem, join, read_bytes, reporting, upload
from training.checkpoint import CHECKSUMS, LATEST, TAG, why_incomplete

__all__ = ["Mirror", "pull_newer", "upload_checkpoint"]


class Mirror:
    """Uploads checkpoints to `url` in a background thread, one at a time (rank 0 only)."""

    def __init__(self, url: str, keep_last: int):
        self.url, self.keep_last = url, keep_last
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def upload(self, folder: Path) -> None:
        """Start copying the complete checkpoint `folder`, once the copy before it is done."""
        self.wait()
        self._thread = threading.Thread(
            target=self._copy, args=(folder,), name="checkpoint-mirror", daemon=True
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

    def _copy(self, folder: Path) -> None:
        try:
            upload_checkpoint(folder, self.url, self.keep_last)
        except BaseException as e:  # told on the training thread, by `wait`
            self._error = e


def upload_checkpoint(folder: Path, url: str, keep_last: int) -> None:
    """Copy the complete checkpoint `folder` to `url`/<its tag>, in the order the module describes."""
    fs, base = filesystem(url)
    tag = folder.name
    with reporting(join(url, tag)):
        fs.rm_file(f"{base}/{tag}/{CHECKSUMS}")  # deleting what is not there succeeds
    for name in read_json(folder / CHECKSUMS)["files"]:
        upload(folder / name, join(url, tag, name))
    upload(folder / CHECKSUMS, join(url, tag, CHECKSUMS))
    with reporting(join(url, LATEST)):
        fs.pipe_file(f"{base}/{LATEST}", tag.encode())
        for old in _remote_tags(url)[:-keep_last]:
            if old != tag:
                fs.rm_file(f"{base}/{old}/{CHECKSUMS}")
                fs.rm(f"{base}/{old}", recursive=True)


def pull_newer(url: str, root: Path, than: str | None) -> Path | None:
    """Bring the newest complete checkpoint at `url` whose tag sorts after `than` into `root` (and name
    it in `root`/latest); its folder, or None when `url` has none newer."""
    for tag in reversed(_remote_tags(url)):
        if than is not None and tag <= than:
            return None
        if (why := _why_incomplete_remote(url, tag)) is not None:
            print(f"{join(url, tag)} is incomplete: {why}; passed over", flush=True)
            continue
        tmp = temporary_path(root / tag)
        shutil.rmtree(tmp, ignore_errors=True)
        download(join(url, tag, CHECKSUMS), tmp / CHECKSUMS)
        for name in read_json(tmp / CHECKSUMS)["files"]:
            download(join(url, tag, name), tmp / name)
        if (why := why_incomplete(tmp)) is not None:
            shutil.rmtree(tmp)
            print(f"{join(url, tag)} changed while it was read ({why}); passed over", flush=True)
            continue
        if (root / tag).exists():  # an incomplete local copy of this step: the resume passed it over
            shutil.rmtree(root / tag)
        publish_folder(tmp, root / tag)
        write_text(root / LATEST, tag)
        print(f"{join(url, tag)}: copied to {root / tag}", flush=True)
        return root / tag
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
