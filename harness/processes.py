"""Stopping a server subprocess that a test or a bench started."""

from __future__ import annotations

import subprocess

__all__ = ["stop"]


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
