"""Checkpoints: DeepSpeed's own, plus what makes a resume exact, checkable, and safe from a broken save.

A checkpoint is `<dir>/step_00001000/`:

- DeepSpeed's files (`engine.save_checkpoint`): the module weights (one file per tensor-parallel
  rank, `mp_rank_<t>`, each holding its shards) and one optimizer file per rank;
- `trainer.json`: the trainer's state (step, loader position, MLflow run id, the sha256 of the data's
  manifest, the tokenizer fingerprint, ...);
- `config.json`: the TrainConfig it trained with, precision resolved (bf16 or fp32), readable without
  DeepSpeed;
- `rng-rank<r>.pt`: each rank's RNG states;
- `checksums.json`, written last: every other file with its size and xxh3-128 hash.

Then `<dir>/latest` is written, so it names only checkpoints whose checksums exist. A resume does not
trust that alone (a later copy, a full disk or a killed `cp` truncates files): `newest_complete` checks
the files against their checksums and falls back to the newest checkpoint that matches. xxh3-128 rather
than sha256: it guards against truncation and corruption, not tampering, and runs at disk speed, while
sha256 at ~0.5 GB/s per core would add ~50 s to every save of the 1.6B run (23 GB with its optimizer).

ZeRO partitions the optimizer state by data-parallel rank, so DeepSpeed loads a checkpoint only at the
world size that saved it. A resume on another number of ranks first converts the checkpoint to
DeepSpeed's universal format (one folder per parameter, `<dir>/universal/<tag>`), which any world
size loads; the conversion is removed once loaded. A checkpoint saved under tensor parallelism
resumes under the same layout only (`saved_layout`); its weights are gathered whole for an export.

Nodes that share no disk each keep a checkpoint dir of their own (`node_local`): every node's first
rank (LOCAL_RANK 0) writes the folder's shared files (the config, the trainer state, and the module
weights, through DeepSpeed's `use_node_local_storage`) and the checksums of what its node holds, so that
each node's folder is complete for the ranks it runs. The whole checkpoint exists only spread over the
nodes, or gathered in a mirror (training.mirror).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import xxhash

from common.files import (
    atomic_write,
    is_temporary,
    publish_folder,
    read_json,
    remove_temporaries,
    temporary_path,
    write_json,
    write_text,
)
from training.distributed import local_rank
from training.model import tensor_parallel_dim

__all__ = [
    "CheckpointError",
    "Saved",
    "complete_tags",
    "latest_tag",
    "load",
    "model_state_dict",
    "newest_complete",
    "prune",
    "read",
    "record_files",
    "resolve",
    "save",
    "saved_layout",
    "saved_world_size",
    "tag_for",
    "why_incomplete",
]

CONFIG_FILE = "config.json"
STATE_FILE = "trainer.json"
CHECKSUMS = "checksums.json"
LATEST = "latest"
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name with no model parallelism
TENSOR_PARALLEL_STATES = "mp_rank_*_model_states.pt"  # one per tensor-parallel rank
OPTIMIZER_STATES = "*zero_pp_rank_*_mp_rank_00_optim_states.pt"  # one per data-parallel rank
TAG = re.compile(r"step_(\d{8})")
UNIVERSAL = "universal"
_CHUNK = 1 << 22


class CheckpointError(ValueError):
    """A checkpoint folder that is missing or incomplete."""


@dataclass(frozen=True)
class Saved:
    """A complete checkpoint as a resume reads it, before any engine exists."""

    folder: Path
    config: dict[str, Any]  # config.json: the TrainConfig, precision resolved
    state: dict[str, Any]  # trainer.json

    @property
    def step(self) -> int:
        return int(self.state["step"])


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def latest_tag(root: Path) -> str | None:
    path = Path(root) / LATEST
    return path.read_text().strip() if path.is_file() else None


def save(
    engine: Any,
    root: Path,
    step: int,
    config: dict[str, Any],
    state: dict[str, Any],
    keep_last: int,
    node_local: bool = False,
) -> Path:
    """Save a checkpoint of `engine` after `step` steps with the trainer's `state` and resolved `config`;
    all ranks call this. The checksums come after every other file, `latest` after the checksums. With
    `node_local`, `root` is each node's own folder, written by the node's first rank (see above).

    A write that fails on any rank (a full disk, a read-only dir) stops the save on every rank, none
    left waiting. The folder, without checksums, is then removed for the space it holds, and `latest`
    is left as it was."""
    root, tag = Path(root), tag_for(step)
    folder = root / tag
    writer = local_rank() == 0 if node_local else dist.get_rank() == 0
    try:
        with _written_by_every_rank(folder):
            if writer:
                # What an interrupted save of this step left (a resume fell back past it) must not mix in.
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
        with _written_by_every_rank(folder):
            atomic_write(folder / f"rng-rank{dist.get_rank()}.pt", lambda f: torch.save(_rng_state(), f))
            if writer:
                write_json(folder / CONFIG_FILE, config)
                write_json(folder / STATE_FILE, state)
        with _written_by_every_rank(folder):
            try:
                engine.save_checkpoint(str(root), tag=tag, save_latest=False)
            except (OSError, RuntimeError):
                # DeepSpeed's collectives all come before its writes but the barrier it ends with,
                # where the ranks whose writes succeeded wait: meet them there.
                dist.barrier()
                raise
    except (OSError, RuntimeError, CheckpointError):
        if writer:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    with _written_by_every_rank(folder):
        if writer:
            record_files(folder)
            write_text(root / LATEST, tag)
            prune(root, keep_last)
    return folder


@contextlib.contextmanager
def _written_by_every_rank(folder: Path) -> Iterator[None]:
    """Run one step of saving the checkpoint `folder` on every rank, then tell each whether all wrote
    their part: the rank whose write failed raises its error, the others a CheckpointError."""
    failed: BaseException | None = None
    try:
        yield
    except (OSError, RuntimeError) as e:  # torch.save reports a short write as a RuntimeError
        failed = e
    failures: list[bool] = [False] * dist.get_world_size()
    dist.all_gather_object(failures, failed is not None)
    if failed is not None:
        raise failed
    if any(failures):
        raise CheckpointError(f"{folder}: saving this checkpoint failed on rank {failures.index(True)}")


def record_files(folder: Path) -> Path:
    """Write `folder`'s checksums: each file (bar the checksums and temporaries) with its size and hash."""
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "xxh3_128": _digest(path)}
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.name != CHECKSUMS and not is_temporary(path)
    }
    return write_json(Path(folder) / CHECKSUMS, {"files": files})


def why_incomplete(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint (no checksums: the save did not finish; a file missing,
    of another size, unreadable or with another hash), or None when it is."""
    if not Path(folder).is_dir():
        return "no such folder"
    try:
        files = read_json(Path(folder) / CHECKSUMS)["files"]
    except FileNotFoundError:
        return f"no {CHECKSUMS}: its save did not finish, or an older version saved it"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its {CHECKSUMS} is unreadable ({e})"
    for name, recorded in files.items():
        path = Path(folder) / name
        try:
            if (size := path.stat().st_size) != recorded["bytes"]:
                return f"{name} has {size:,} bytes, {recorded['bytes']:,} were written"
            if _digest(path) != recorded["xxh3_128"]:
                return f"{name} is not what was written (its hash differs)"
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as e:
            return f"{name} is unreadable ({e.strerror or e})"
    return None


def complete_tags(root: Path) -> list[str]:
    """The tags of the complete checkpoints in `root`, oldest first."""
    return [tag for tag in _tags(root) if why_incomplete(Path(root) / tag) is None]


def newest_complete(root: Path) -> Path | None:
    """The checkpoint a resume starts from: the one `latest` names when it is complete, else the newest
    complete one before it, with one line printed per checkpoint passed over; None when `root` holds no
    checkpoint. Raises CheckpointError when every checkpoint in `root` is incomplete."""
    root = Path(root)
    tags = _tags(root)
    latest = latest_tag(root)
    if latest is None and not tags:
        return None
    passed_over = []
    if latest is not None and not TAG.fullmatch(latest):
        passed_over.append(f"{root / LATEST} holds {latest!r}, not a checkpoint tag")
    elif latest is not None:
        tags = [tag for tag in tags if tag <= latest]
        if latest not in tags:
            passed_over.append(f"{root / LATEST} names {latest}, which does not exist")
    for tag in reversed(tags):
        if (why := why_incomplete(root / tag)) is None:
            for line in passed_over:
                print(f"{line}; using {tag} instead", flush=True)
            return root / tag
        passed_over.append(f"{root / tag} is incomplete: {why}")
    raise CheckpointError(
        f"{root}: no complete checkpoint to resume from:\n  "
        + "\n  ".join(passed_over)
        + "\nmove this folder away (or set checkpoint.dir elsewhere) to start a new run"
    )


def resolve(path: Path) -> Path:
    """The complete checkpoint that `path` names: a `step_*` folder itself, or the newest complete one
    in a checkpoint dir (see `newest_complete`)."""
    path = Path(path)
    if TAG.fullmatch(path.name):
        if (why := why_incomplete(path)) is not None:
            raise CheckpointError(f"{path}: {why}")
        return path
    if (folder := newest_complete(path)) is None:
        raise CheckpointError(f"{path}: neither a checkpoint folder nor a folder holding checkpoints")
    return folder


def read(folder: Path) -> Saved:
    """The config and trainer state of the checkpoint `folder` (checked by `why_incomplete` beforehand)."""
    folder = Path(folder)
    return Saved(folder, read_json(folder / CONFIG_FILE), read_json(folder / STATE_FILE))


def saved_world_size(folder: Path) -> int:
    """How many data-parallel ranks saved the checkpoint `folder`."""
    return saved_layout(folder)[1]


def saved_layout(folder: Path) -> tuple[int, int]:
    """(tensor-parallel, data-parallel) ranks that saved the checkpoint `folder`: as its trainer state
    records them, or, in a checkpoint from before that record, by its files (one module file per
    tensor-parallel rank, one optimizer file per data-parallel rank)."""
    if (layout := read_json(Path(folder) / STATE_FILE).get("layout")) is not None:
        return layout["tensor"], layout["data"]
    return len(list(Path(folder).glob(TENSOR_PARALLEL_STATES))), len(
        list(Path(folder).glob(OPTIMIZER_STATES))
    )


def load(engine: Any, saved: Saved) -> None:
    """Restore the checkpoint `saved` into `engine`, and this rank's RNG states.

    An engine built with `load_universal` (another world size saved it) gets the checkpoint converted
    to the universal format first.
    """
    root, tag = saved.folder.parent, saved.folder.name
    reshard = engine.load_universal_checkpoint()
    source = _convert_to_universal(root, tag) if reshard else root
    path, _ = engine.load_checkpoint(str(source), tag=tag)
    if path is None:
        raise CheckpointError(f"{saved.folder}: DeepSpeed could not load this checkpoint")
    if reshard:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(source)
    rng = saved.folder / f"rng-rank{dist.get_rank()}.pt"
    if rng.is_file():  # absent when the resume adds ranks: those start from the seed
        _set_rng_state(torch.load(rng, weights_only=False))


def _convert_to_universal(root: Path, tag: str) -> Path:
    """Rank 0 converts `root/tag` with DeepSpeed's ds_to_universal into `root/universal/tag`; every
    rank returns that root once it is complete."""
    out = root / UNIVERSAL
    if dist.get_rank() == 0 and not (out / tag).is_dir():
        saved = saved_world_size(root / tag)
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
        publish_folder(tmp, out / tag)
    dist.barrier()
    return out


def prune(root: Path, keep_last: int) -> None:
    """Remove all but the newest `keep_last` checkpoints; never the one `latest` names."""
    tags = _tags(root)
    keep = set(tags[-keep_last:]) | {latest_tag(root)}
    for tag in tags:
        if tag not in keep:
            shutil.rmtree(Path(root) / tag)


def model_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The module weights of the checkpoint `folder`: the ones the forward pass used (bf16 in a bf16 run,
    whose fp32 master weights are these before rounding; fp32 in an fp32 run), with the model's names;
    the tensor-parallel ranks' shards joined."""
    files = sorted(Path(folder).glob(TENSOR_PARALLEL_STATES))  # mp_rank_00, 01, ...: in rank order
    if not files:
        raise CheckpointError(f"{folder}: no {MODEL_STATES}")
    shards = [torch.load(path, map_location="cpu", weights_only=False)["module"] for path in files]
    return {name: _join(name, [shard[name] for shard in shards]) for name in shards[0]}


def _join(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """The parameter `name` from its tensor-parallel shards (one, unsharded, is itself)."""
    dim = tensor_parallel_dim(name)
    return shards[0] if dim is None or len(shards) == 1 else torch.cat(shards, dim=dim)


def _tags(root: Path) -> list[str]:
    """The checkpoint folders in `root`, oldest first (the zero-padded steps sort as text)."""
    return sorted(p.name for p in Path(root).glob("step_*") if p.is_dir() and TAG.fullmatch(p.name))


def _digest(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
