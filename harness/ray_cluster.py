"""A Ray cluster of a head and worker nodes started on this machine (`ray start --block`, one CPU each),
for the tests that run a job on several nodes.

Every node has a folder of its own, its Ray temp dir and its TMPDIR (the scratch of its tasks). With
`private_tmp`, a worker node runs in a mount namespace of its own (`unshare`) with an empty tmpfs over
/tmp: it sees none of the files the head, the driver or the test write there, and they see none of its
own, as on nodes that share no disk (the repository and its virtualenv stay shared, as an image would
be, bound back where they are under /tmp). Its folder then exists only inside that namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from common.net import free_port

__all__ = ["RayCluster", "private_tmp_problem", "ray_cluster"]

GRACE_S = 3.0
_RAY = str(Path(sys.executable).with_name("ray"))
_REPO = Path(__file__).resolve().parents[1]
_COMMON = ["--num-cpus=1", "--block", "--object-store-memory=100000000", "--disable-usage-stats"]
# A driver that waits for every node before it runs the pipeline, so that the stages spread over them
# (a node that did not start, e.g. where `unshare` is not permitted, fails it in 2 minutes).
_DRIVER = (
    "import ray, sys, time; ray.init(); deadline = time.monotonic() + 120\n"
    "while len([n for n in ray.nodes() if n['Alive']]) < {nodes}:\n"
    "    if time.monotonic() > deadline: sys.exit('error: {nodes} Ray nodes did not all start')\n"
    "    time.sleep(0.2)\n"
    "import json; from pipeline.__main__ import main\n"
    "for command in json.loads(sys.argv[1]): main(command)"
)


@dataclass(frozen=True)
class RayCluster:
    address: str
    nodes: int
    head: Path  # the head node's folder: `ray` (its temp dir) and `tmp` (its TMPDIR)
    env: Mapping[str, str]  # the nodes' environment

    @property
    def head_tmp(self) -> Path:
        return self.head / "tmp"

    def run_pipeline(
        self, commands: list[list[str]], cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python -m pipeline` commands, one after the other, in a driver on the head node (its TMPDIR),
        with the nodes' environment and `env`."""
        script = _DRIVER.format(nodes=self.nodes)
        return subprocess.run(
            [sys.executable, "-c", script, json.dumps(commands)],
            env={**self.env, **(env or {}), "RAY_ADDRESS": self.address, "TMPDIR": str(self.head_tmp)},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )


@contextlib.contextmanager
def ray_cluster(
    workers: int = 1, private_tmp: bool = False, env: Mapping[str, str] | None = None
) -> Iterator[RayCluster]:
    """Start a head and `workers` worker nodes with the environment `env` (default: this process's);
    stop them on exit. A throwaway cluster: no token authentication (which a local `ray.init` in this
    process turns on in its environment)."""
    env = {**(env or os.environ), "RAY_AUTH_MODE": "disabled"}
    # Short: Ray's socket paths have a length limit.
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    head = root / "h"
    (head / "tmp").mkdir(parents=True)
    procs = [
        subprocess.Popen(
            [
                _RAY,
                "start",
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={head / 'ray'}",
                *_COMMON,
            ],
            env={**env, "TMPDIR": str(head / "tmp")},
            start_new_session=True,
            **quiet,
        )
    ]
    try:
        deadline = time.monotonic() + 120
        while not (head / "ray" / "ray_current_cluster").exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head node did not start (exit code {procs[0].poll()})")
            time.sleep(0.2)
        for i in range(workers):
            procs.append(_start_worker(root / f"w{i}", f"127.0.0.1:{port}", private_tmp, env))
        yield RayCluster(f"127.0.0.1:{port}", 1 + workers, head, env)
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def private_tmp_problem() -> str | None:
    """Why a node cannot get a /tmp of its own here (no mount namespace: `unshare` or mounting a tmpfs
    is not permitted), or None when it can."""
    setup = ["sh", "-c", f"{_empty_tmp_but_the_code()} && test -x {shlex.quote(_RAY)}"]
    command = ["unshare", "--mount", "--map-root-user", "--propagation", "private", *setup]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "no `unshare` command"
    return None if done.returncode == 0 else f"cannot give a node a /tmp of its own: {done.stderr.strip()}"


def _start_worker(folder: Path, address: str, private_tmp: bool, env: Mapping[str, str]) -> subprocess.Popen:
    start = [_RAY, "start", f"--address={address}", f"--temp-dir={folder / 'ray'}", *_COMMON]
    setup = f"mkdir -p {shlex.quote(str(folder / 'tmp'))} && exec {shlex.join(start)}"
    if private_tmp:
        setup = f"{_empty_tmp_but_the_code()} && {setup}"
        command = ["unshare", "--mount", "--map-root-user", "--propagation", "private", "sh", "-c", setup]
    else:
        command = ["sh", "-c", setup]
    return subprocess.Popen(
        command,
        env={**env, "TMPDIR": str(folder / "tmp")},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _empty_tmp_but_the_code() -> str:
    """The shell commands that put an empty tmpfs over /tmp in the worker's mount namespace, with the
    repository and the virtualenv, where they are under /tmp (a CI clone), bound back at their paths:
    each is bound to a folder outside /tmp first, then back once the tmpfs is there."""
    code = sorted({_REPO, Path(sys.prefix).resolve()})
    kept = [path for path in code if path.is_relative_to("/tmp")]
    kept = [path for path in kept if not any(path != other and path.is_relative_to(other) for other in kept)]
    keep = [
        f'k{i}=$(mktemp -d /dev/shm/keep.XXXXXX) && mount --bind {shlex.quote(str(path))} "$k{i}"'
        for i, path in enumerate(kept)
    ]
    back = [
        f'mkdir -p {quoted} && mount --bind "$k{i}" {quoted} && umount "$k{i}" && rmdir "$k{i}"'
        for i, quoted in enumerate(shlex.quote(str(path)) for path in kept)
    ]
    return " && ".join([*keep, "mount -t tmpfs tmpfs /tmp", *back])


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop every node: SIGTERM (`ray start --block` then stops its Ray processes), and after a grace
    period SIGKILL to each node's process group, its own session: a head drains for ~30 s otherwise."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
