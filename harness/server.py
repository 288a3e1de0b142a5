"""The real server (`python -m serving`) in a subprocess, as a client sees it: on a free loopback port,
answering once /health says the model is loaded."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from common.net import free_port
from harness.processes import stop

__all__ = ["running_server"]


@contextlib.contextmanager
def running_server(
    export: Path,
    config: Path,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: IO | None = None,
    timeout: float = 180,
) -> Iterator[str]:
    """`python -m serving` on a free loopback port; yields its URL once /health answers 200, and stops
    it on exit. `args` go on its command line (`--dtype float32`); `log` (a file opened for reading and
    writing) receives its output, quoted on failure."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "--model", str(export), "--port", str(port)]
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*command, "--config", str(config), *args],
        env=env or os.environ.copy(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                what = "exited" if proc.poll() is not None else f"not healthy after {timeout:.0f} s"
                raise RuntimeError(f"the server {what}: {_tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        stop(proc, timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def _tail(log: IO | None) -> str:
    if log is None:
        return "(no log)"
    log.seek(0)
    return log.read()[-3000:]
