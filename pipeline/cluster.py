"""The Ray cluster every job runs on: local Ray by default, the cluster named by RAY_ADDRESS when set.

Output is quiet by default: Ray's startup lines, Ray Data's INFO lines and progress bars stay in the
session's log files (`<session>/logs`), and each stage prints one progress line (`pipeline.stage`);
`verbose` brings Ray's own output back.

In the dashboard, a job started here is named on the Jobs page (`job_name` in its metadata, with the
data sources, work dir, shards folder and config hash it runs: `job_metadata`), and its tasks carry
their stage's name: `Map(<stage>)` for a stage's Ray Data tasks (`pipeline.stage`), `pack encode` and
`pack windows` for the pack job's (`pipeline.pack_job`).

A local Ray outlives a driver killed with SIGKILL: its agents (DashboardAgent, RuntimeEnvAgent) and at
times its raylet keep running. Each local start therefore records its driver in SESSIONS first, and
stops the processes of the sessions that the dead recorded drivers started. Only sessions that this
project started are touched (this user's, named by a recorded driver while it lived), never one whose
driver lives, and never a cluster's (RAY_ADDRESS set).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import ray

from common.config import fingerprint
from common.files import read_json, write_json

if TYPE_CHECKING:
    from pipeline.config import DataConfig

# One record per driver that started a local Ray: {"driver": pid, "started": its start time}.
SESSIONS = Path(tempfile.gettempdir()) / f"stablelm2-pipeline-ray-{os.getuid()}"
# Ray names a local session's folder `session_<local time to the microsecond>_<pid of its driver>`.
SESSION_NAME = re.compile(r"session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6})_(\d+)(?=/|$)")
# Loggers whose warnings repeat what the quiet output says: that token authentication is on (the
# dashboard line explains it), and that Ray Data's progress bars are off (the stage lines replace them).
REDUNDANT_WARNINGS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")
# Ray Data's logger of "An exception was raised from a task ... Dataset execution will now abort": when
# quiet, the driver's own report of that exception (one line for a full disk) says it alone.
TASK_ABORT_LOGGER = "ray.data._internal.execution.streaming_executor_state"
# How long a process of a stale session gets to exit after SIGTERM, and after SIGKILL.
STOP_GRACE_S = 3.0


def start_ray(verbose: bool = False, job: Mapping[str, str] | None = None) -> None:
    """Connect (once per process) and print where the dashboard is and how to get in; `job` is the
    metadata the dashboard shows for this job (`job_metadata`)."""
    if ray.is_initialized():
        return
    _configure_output(verbose)
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None:
        stop_stale_sessions()
        _record_driver()
    context = ray.init(
        address=address,
        log_to_driver=False,
        logging_level=logging.INFO if verbose else logging.WARNING,
        job_config=ray.job_config.JobConfig(metadata=dict(job or {})),
    )
    url = context.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", flush=True)
    if url:
        print(f"  {dashboard_access()}", flush=True)


def job_metadata(command: str, cfg: DataConfig) -> dict[str, str]:
    """The dashboard's record of a `python -m pipeline COMMAND` job: its name on the Jobs page (the
    page reads `job_name`), and the config it runs."""
    return {
        "job_name": f"pipeline {command}",
        "stage": command,
        "sources": ",".join(cfg.sources),
        "work_dir": cfg.work_dir,
        "out_dir": cfg.pack.out_dir,
        "config_sha256": fingerprint(cfg),
    }


def _configure_output(verbose: bool) -> None:
    """Ray Data's progress bars, and its INFO lines on the console (its log file keeps them), only when
    verbose; when quiet, also none of the warnings (or the abort line) that say what the quiet output
    already says."""
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; the session's log file is not one
            handler.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in REDUNDANT_WARNINGS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    logging.getLogger(TASK_ABORT_LOGGER).setLevel(logging.NOTSET if verbose else logging.CRITICAL)


def _record_driver() -> None:
    """Record this process as the driver of a local Ray, before it starts: a driver killed while Ray
    starts leaves processes behind too."""
    driver = psutil.Process()
    write_json(SESSIONS / f"{driver.pid}.json", {"driver": driver.pid, "started": driver.create_time()})


def stop_stale_sessions() -> None:
    """Stop the processes of the local Ray sessions of every recorded driver that is dead, and forget it."""
    stale, drivers = [], []  # drivers: (pid, start, end) of each dead one
    for path in sorted(SESSIONS.glob("*.json")):
        record = read_json(path)
        holder = _start_of(record["driver"])
        if holder != record["started"]:  # dead; if its pid was reused, before that process started
            stale.append(path)
            drivers.append((record["driver"], record["started"], math.inf if holder is None else holder))
    left = _session_processes(drivers) if drivers else []
    if left:
        print(f"[ray] stopping {len(left)} Ray processes left by a killed run", flush=True)
        _stop(left)
    for path in stale:
        path.unlink(missing_ok=True)


def _start_of(pid: int) -> float | None:
    """The start time of the process that has `pid` now, if one has."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def _session_processes(drivers: list[tuple[int, float, float]]) -> list[psutil.Process]:
    """This user's processes of a Ray session that one of `drivers` started, with their children: those
    naming the session folder on their command line (gcs_server, raylet, dashboard) or holding a file
    open in it (the agents rename themselves `ray::DashboardAgent` but keep their logs there)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["uids", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"].real != os.getuid():
                continue
            if _of_sessions(proc.info["cmdline"] or [], drivers) or _of_sessions(
                [f.path for f in proc.open_files()], drivers
            ):
                found |= {p.pid: p for p in [proc, *proc.children(recursive=True)]}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


def _of_sessions(texts: list[str], drivers: list[tuple[int, float, float]]) -> bool:
    """Whether `texts` name a session folder that one of `drivers` created while it lived."""
    for text in texts:
        for created, pid in SESSION_NAME.findall(text):
            at = datetime.datetime.strptime(created, "%Y-%m-%d_%H-%M-%S_%f").timestamp()
            if any(int(pid) == driver and start <= at < end for driver, start, end in drivers):
                return True
    return False


def _stop(procs: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL what still runs after STOP_GRACE_S (the agents ignore SIGTERM once their
    raylet is gone)."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    left = _wait_gone(procs, STOP_GRACE_S)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _wait_gone(left, STOP_GRACE_S)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if running(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(0.1)


def running(proc: psutil.Process) -> bool:
    """Whether the process runs: it exists, is the same one, and is not a zombie (stopped, but not
    yet reaped by its parent, which for an orphan may never happen in a container)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def dashboard_access() -> str:
    """How to get into the dashboard: Ray >= 2.59 turns token auth on for a local ray.init()."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return (
            "token authentication is on: paste the token that `ray get-auth-token` prints (default file "
            "~/.ray/auth_token) when the page asks; on a cluster, forward the head's port 8265 first "
            "(`ray dashboard cluster.yaml` or `ssh -L 8265:localhost:8265 HEAD`)"
        )
    return (
        "no authentication (anyone who can reach the port can submit jobs): it listens on this host only; "
        "on a cluster, forward the head's port 8265 (`ray dashboard cluster.yaml` or "
        "`ssh -L 8265:localhost:8265 HEAD`), or start Ray with RAY_AUTH_MODE=token"
    )


def ray_cpus() -> int | None:
    """The CPUs Ray gave the task or actor this runs in (Ray Data gives an actor 1), or None outside
    Ray's workers (in a driver, say)."""
    if not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
        return None  # (checked first: get_runtime_context() outside Ray would start one)
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
