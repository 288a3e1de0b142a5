"""A real MLflow tracking server (`mlflow server`) in a subprocess on a free loopback port, over a sqlite
store and an artifacts folder of its own: what a team's shared tracking server is, run locally."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from common.net import free_port
from harness.processes import stop

__all__ = ["MlflowServer", "running_mlflow_server"]


def _mlflow() -> str:
    """The `mlflow` script beside this interpreter (a venv's bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else (shutil.which("mlflow") or "mlflow")


class MlflowServer:
    """A started `mlflow server`; `url()` waits until it answers. It takes seconds to start (two imports
    of MLflow and the database's migrations): a caller may do other work before it waits."""

    def __init__(self, proc: subprocess.Popen, url: str, log: IO[str], timeout: float):
        self.proc, self._url, self.log = proc, url, log
        self.deadline = time.monotonic() + timeout

    def url(self) -> str:
        """Its URL (a tracking URI) once /health answers; RuntimeError with its log's tail if never."""
        while not _healthy(self._url):
            if self.proc.poll() is not None or time.monotonic() > self.deadline:
                self.log.seek(0)
                raise RuntimeError(f"mlflow server on {self._url} did not start: {self.log.read()[-2000:]}")
            time.sleep(0.2)
        return self._url


@contextlib.contextmanager
def running_mlflow_server(folder: Path, timeout: float = 180) -> Iterator[MlflowServer]:
    """Start `mlflow server` with its database and artifacts in `folder` (its log in server.log there);
    yield it without waiting for it to answer, and stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [_mlflow(), "server", "--backend-store-uri", f"sqlite:///{folder.resolve() / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder.resolve() / "artifacts")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No job runner (huey workers): nothing here queues jobs, and it takes seconds to start and stop.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (folder / "server.log").open("w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            yield MlflowServer(proc, f"http://127.0.0.1:{port}", log, timeout)
        finally:
            stop(proc)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
