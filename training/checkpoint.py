"""Checkpoints: DeepSpeed's own, plus what makes a resume exact and an export self-contained.

A checkpoint is `<dir>/step_00001000/` written by `engine.save_checkpoint`, with the trainer's
state as client state (step, loader position, MLflow run id, resolved config), one `rng-rank<r>.pt`
per rank and `config.json` (the resolved TrainConfig, readable without DeepSpeed). DeepSpeed writes
`<dir>/latest` last, so an interrupted save leaves `latest` on the previous, complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "CheckpointError",
    "latest_tag",
    "load",
    "model_state_dict",
    "prune",
    "read_config",
    "resolve",
    "save",
    "tag_for",
]

CLIENT_KEY = "trainer"
CONFIG_FILE = "config.json"
LATEST = "latest"
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name with no model parallelism
TAG = re.compile(r"step_(\d{8})")


class CheckpointError(ValueError):
    """A checkpoint folder that is missing or incomplete."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def latest_tag(root: Path) -> str | None:
    path = Path(root) / LATEST
    return path.read_text().strip() if path.is_file() else None


def save(engine: Any, root: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Save a checkpoint of `engine` after `step` steps with the trainer's `state`; all ranks call this."""
    root, tag = Path(root), tag_for(step)
    folder = root / tag
    folder.mkdir(parents=True, exist_ok=True)
    # Written before DeepSpeed moves `latest`, so a checkpoint that `latest` names is always whole.
    _atomic_torch_save(_rng_state(), folder / f"rng-rank{dist.get_rank()}.pt")
    if dist.get_rank() == 0:
        _atomic_write_text(folder / CONFIG_FILE, json.dumps(state["config"], indent=2) + "\n")
    # Under one key of our own: DeepSpeed reserves names such as `skipped_steps` for itself.
    engine.save_checkpoint(str(root), tag=tag, client_state={CLIENT_KEY: state})
    dist.barrier()
    if dist.get_rank() == 0:
        prune(root, keep_last)
    return folder


def load(engine: Any, root: Path) -> dict[str, Any] | None:
    """Restore the latest checkpoint under `root` into `engine`; the trainer's state, or None if none."""
    tag = latest_tag(root)
    if tag is None:
        return None
    path, client_state = engine.load_checkpoint(str(root), tag=tag)
    if path is None:
        raise CheckpointError(f"{root}/{tag}: DeepSpeed could not load this checkpoint")
    rng = Path(root) / tag / f"rng-rank{dist.get_rank()}.pt"
    if rng.is_file():  # absent when the resume adds ranks: those start from the seed
        _set_rng_state(torch.load(rng, weights_only=False))
    return client_state[CLIENT_KEY]


def prune(root: Path, keep_last: int) -> None:
    """Remove all but the newest `keep_last` checkpoints; never the one `latest` names."""
    tags = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and TAG.fullmatch(p.name))
    keep = set(tags[-keep_last:]) | {latest_tag(root)}
    for tag in tags:
        if tag not in keep:
            shutil.rmtree(Path(root) / tag)


def resolve(path: Path) -> tuple[Path, str]:
    """(root, tag) of a checkpoint given as a checkpoint folder or a root holding `latest`."""
    path = Path(path)
    if (tag := latest_tag(path)) is not None:
        return path, tag
    if (path / CONFIG_FILE).is_file():
        return path.parent, path.name
    raise CheckpointError(f"{path}: neither a checkpoint folder nor a folder with a `latest` checkpoint")


def read_config(path: Path) -> dict[str, Any]:
    """The resolved training config (as saved, a plain dict) of the checkpoint at `path`."""
    root, tag = resolve(path)
    return json.loads((root / tag / CONFIG_FILE).read_text(encoding="utf-8"))


def model_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The module weights of the checkpoint at `path`: the ones the forward pass used (bf16 in a bf16
    run, whose fp32 master weights are these before rounding), with the model's parameter names."""
    root, tag = resolve(path)
    states = torch.load(root / tag / MODEL_STATES, map_location="cpu", weights_only=False)
    return states["module"]


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
