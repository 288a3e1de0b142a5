"""The Ray cluster every job runs on: local Ray by default, the cluster named by RAY_ADDRESS when set."""

from __future__ import annotations

import os

import ray


def start_ray() -> None:
    """Connect (once per process) and print where the dashboard is and how to get in."""
    if ray.is_initialized():
        return
    context = ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    url = context.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", flush=True)
    if url:
        print(f"  {dashboard_access()}", flush=True)


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
