"""Where this rank runs: DeepSpeed's accelerator, the process group, this rank's device, and how much
DeepSpeed may say.

DeepSpeed fixes its accelerator when it is first imported, so it is imported here, after the choice is
made, and the rest of training takes `deepspeed` from this module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402

from common.net import free_port  # noqa: E402

__all__ = [
    "deepspeed",
    "deepspeed_output",
    "device",
    "from_node_leaders",
    "from_rank0",
    "init_distributed",
    "local_rank",
]

T = TypeVar("T")


def init_distributed() -> None:
    """Join the launcher's process group, or make a one-process group when started without one."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def local_rank() -> int:
    """This rank's number on its node, as the launcher sets it (0: the node's first rank)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def device() -> torch.device:
    """This rank's device: its GPU (LOCAL_RANK) when there are GPUs, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank())
    return torch.device("cuda", torch.cuda.current_device())


@contextlib.contextmanager
def deepspeed_output(verbose: bool) -> Iterator[None]:
    """Lets DeepSpeed's INFO logs and the lines it prints itself (the `MA ... GB` / `CPU Virtual Memory`
    pairs of each parameter group, "built successfully", ...) through only when `verbose`: they bury
    the one progress line per log interval. Its warnings always pass (its logger keeps the real stdout)."""
    level = logging.INFO if verbose else logging.WARNING
    for handler in [deepspeed.utils.logger, *deepspeed.utils.logger.handlers]:
        handler.setLevel(level)
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        yield


def from_rank0(compute: Callable[[], T]) -> T:
    """`compute()` run by rank 0 alone (it reads files every rank would otherwise read again), its
    result or the ValueError it raised given to every rank, so that no rank waits on one that failed."""
    shared: list[object] = [None]
    if dist.get_rank() == 0:
        try:
            shared[0] = compute()
        except ValueError as e:
            shared[0] = e
    dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], ValueError):
        raise shared[0]
    return shared[0]  # type: ignore[return-value]


def from_node_leaders(compute: Callable[[], T]) -> list[T]:
    """`compute()` run by each node's first rank (it reads or writes that node's own disk), the results
    in rank order given to every rank; a ValueError raised on any of them is raised on every rank."""
    mine: tuple[bool, object] | None = None
    if local_rank() == 0:
        try:
            mine = (True, compute())
        except ValueError as e:
            mine = (False, e)
    gathered: list[tuple[bool, object] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    results = [result for result in gathered if result is not None]
    for ok, value in results:
        if not ok:
            raise value  # type: ignore[misc]
    return [value for _, value in results]  # type: ignore[misc]
