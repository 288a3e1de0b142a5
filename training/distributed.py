"""Where this rank runs: DeepSpeed's accelerator, the process group, and this rank's device.

DeepSpeed fixes its accelerator when it is first imported, so it is imported here, after the choice is
made, and the rest of training takes `deepspeed` from this module.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402

from common.net import free_port  # noqa: E402

__all__ = ["deepspeed", "device", "init_distributed"]


def init_distributed() -> None:
    """Join the launcher's process group, or make a one-process group when started without one."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def device() -> torch.device:
    """This rank's device: its GPU (LOCAL_RANK) when there are GPUs, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda", torch.cuda.current_device())
