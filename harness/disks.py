"""Real small disks for the full-disk and read-only cases: tmpfs mounts, which need root (or
CAP_SYS_ADMIN); where mounting is not possible `CannotMount` says why, for the caller to skip."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CannotMount", "tmpfs"]


class CannotMount(Exception):
    """A tmpfs cannot be mounted here; the message is mount's own reason."""


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (read-only: empty and not writable), unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        raise CannotMount(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        # Lazy: a process a case killed may still hold a file there for a moment.
        subprocess.run(["umount", "-l", str(folder)], check=True)
