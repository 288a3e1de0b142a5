"""Checkpoints: DeepSpeed's own, plus what makes a resume exact and an export self-contained.

A checkpoint is `<dir>/step_00001000/` written by `engine.save_checkpoint`, with the trainer's
state as client state (step, loader position, MLflow run id, resolved config), one `rng-rank<r>.pt`
per rank and `config.json` (the resolved TrainConfig, readable without DeepSpeed). DeepSpeed writes
`<dir>/latest` last, so an interrupted save leaves `latest` on the previous, complete checkpoint.

ZeRO partitions the optimizer state by data-parallel rank, so DeepSpeed loads a checkpoint only at the
world size that saved it. A resume on another number of ranks first converts the checkpoint to
DeepSpeed's universal format (one folder per parameter, `<dir>/universal/<tag>`), which any world
size loads; the conversion is removed once loaded.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common.files import atomic_write, remove_temporaries, replace_folder, temporary_path, write_json

__all__ = [
    "CheckpointError",
    "latest_tag",
    "load",
    "model_state_dict",
    "needs_reshard",
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
OPTIMIZER_STATES = "*zero_pp_rank_*_mp_rank_00_optim_states.pt"  # one per data-parallel rank
TAG = re.compile(r"step_(\d{8})")
UNIVERSAL = "universal"


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
    atomic_write(folder / f"rng-rank{dist.get_rank()}.pt", lambda f: torch.save(_rng_state(), f))
    if dist.get_rank() == 0:
        write_json(folder / CONFIG_FILE, state["config"])
    # Under one key of our own: DeepSpeed reserves names such as `skipped_steps` for itself.
    engine.save_checkpoint(str(root), tag=tag, client_state={CLIENT_KEY: state})
    dist.barrier()
    if dist.get_rank() == 0:
        prune(root, keep_last)
    return folder


def needs_reshard(root: Path, world_size: int) -> bool:
    """Whether the latest checkpoint under `root` was saved by another number of data-parallel ranks;
    its engine must then be built to load universal checkpoints (see `load`)."""
    tag = latest_tag(root)
    return tag is not None and _saved_world_size(root, tag) != world_size


def _saved_world_size(root: Path, tag: str) -> int:
    return len(list((Path(root) / tag).glob(OPTIMIZER_STATES)))


def load(engine: Any, root: Path) -> dict[str, Any] | None:
    """Restore the latest checkpoint under `root` into `engine`; the trainer's state, or None if none.

    An engine built with `load_universal` (because `needs_reshard`) gets the checkpoint converted to
    the universal format first.
    """
    root, tag = Path(root), latest_tag(root)
    if tag is None:
        return None
    reshard = engine.load_universal_checkpoint()
    source = _convert_to_universal(root, tag) if reshard else root
    path, client_state = engine.load_checkpoint(str(source), tag=tag)
    if path is None:
        raise CheckpointError(f"{root}/{tag}: DeepSpeed could not load this checkpoint")
    if reshard:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(source)
    rng = root / tag / f"rng-rank{dist.get_rank()}.pt"
    if rng.is_file():  # absent when the resume adds ranks: those start from the seed
        _set_rng_state(torch.load(rng, weights_only=False))
    return client_state[CLIENT_KEY]


def _convert_to_universal(root: Path, tag: str) -> Path:
    """Rank 0 converts `root/tag` with DeepSpeed's ds_to_universal into `root/universal/tag`; every
    rank returns that root once it is complete."""
    out = root / UNIVERSAL
    if dist.get_rank() == 0 and not (out / tag).is_dir():
        saved = _saved_world_size(root, tag)
        print(
            f"{root / tag} was saved by {saved} data-parallel ranks, this run has {dist.get_world_size()}: "
            f"converting it to DeepSpeed's universal checkpoint in {out / tag}",
            flush=True,
        )
        remove_temporaries(out)  # what a killed conversion left
        tmp = temporary_path(out / tag)
        workers = str(max(1, min(4, os.cpu_count() or 1)))
        convert = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal"]
        # inject_missing_state: our checkpoints carry no Megatron-style universal_checkpoint_info,
        # which plain data parallelism does not need.
        args = ["--input_folder", str(root / tag), "--output_folder", str(tmp), "--inject_missing_state"]
        args += ["--num_extract_workers", workers, "--num_merge_workers", workers]
        proc = subprocess.run([*convert, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckpointError(
                f"converting {root / tag} to a universal checkpoint failed:\n{proc.stderr[-3000:]}"
            )
        replace_folder(tmp, out / tag)
    dist.barrier()
    return out


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
