"""A local S3 endpoint over HTTP: moto's server (`moto_server`) in a subprocess on a free loopback port.

The code under test reaches it as it would reach AWS, through the standard settings
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) that boto3, s3fs and pyarrow's S3FileSystem all read;
nothing in-process is patched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from common.net import free_port
from harness.processes import stop

__all__ = ["running_s3"]


def _moto_server() -> str:
    """The `moto_server` script beside this interpreter (a venv's bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else (shutil.which("moto_server") or "moto_server")


@contextlib.contextmanager
def running_s3(timeout: float = 30) -> Iterator[dict[str, str]]:
    """Start an empty S3 endpoint; yield the environment a client needs to reach it (endpoint, region
    and throwaway credentials), and stop it on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server on {url} did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        yield {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False
