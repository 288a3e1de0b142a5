"""The DeepSpeed side of training, kept light (no MLflow, no shards) so that bench/ can use it too:
process group, engine config, optimizer groups, and what a device can do (peak FLOP/s, memory)."""

from __future__ import annotations

import os
import resource
import socket
import sys
from typing import Any

import torch
import torch.distributed as dist

if not torch.cuda.is_available():  # DeepSpeed picks its accelerator when first imported
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402

from training.config import TrainConfig  # noqa: E402
from training.model import StableLM  # noqa: E402
from training.schedule import lr_at  # noqa: E402

__all__ = [
    "PEAK_FLOPS",
    "build_engine",
    "lm_loss",
    "deepspeed_config",
    "device",
    "init_distributed",
    "memory_metrics",
    "param_groups",
    "peak_flops",
]

# Dense bf16 peak FLOP/s per device (torchtitan's table); first match on the device name wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def deepspeed_config(cfg: TrainConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch,
        "gradient_accumulation_steps": cfg.batch.grad_accum,
        "train_batch_size": cfg.batch.micro_batch * cfg.batch.grad_accum * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": 1},
        # check_grad_overflow: skip (and report) a step whose gradients are not finite.
        "bf16": {"enabled": cfg.bf16, "check_grad_overflow": True},
        # Stability accumulated and all-reduced gradients in fp32.
        "data_types": {"grad_accum_dtype": "fp32"},
        "communication_data_type": "fp32",
        "steps_per_print": 2**62,
        # A checkpoint from another world size is loaded in DeepSpeed's universal format.
        "checkpoint": {"load_universal": load_universal},
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and embeddings, none on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def init_distributed() -> None:
    """Join the launcher's process group, or make a one-process group when started without one."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device() -> torch.device:
    """This rank's device: its GPU (LOCAL_RANK) when there are GPUs, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda", torch.cuda.current_device())


def build_engine(model: StableLM, cfg: TrainConfig, load_universal: bool = False) -> tuple[Any, Any]:
    """(engine, optimizer): `model` under DeepSpeed with AdamW at the schedule's first lr; with
    `load_universal`, for loading a checkpoint saved at another world size (`checkpoint.load`)."""
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay),
        lr=lr_at(0, cfg.optim, cfg.schedule),
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        fused=True,  # one kernel per step on CUDA and on CPU (7x faster there than foreach)
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, dist.get_world_size(), load_universal)
    )
    return engine, optimizer


def lm_loss(engine: Any, batch: torch.Tensor, eot_id: int | None) -> torch.Tensor:
    """Next-token cross-entropy of rows [B, T + 1], computed in fp32 whatever the model's dtype."""
    return engine(batch[:, :-1], targets=batch[:, 1:], eot_id=eot_id)


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of one `device` for MFU: `override` if given, else the table; None if unknown (CPU)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak memory in GiB: allocated by torch on a GPU, resident set size of the process on CPU."""
    if device.type == "cuda":
        return {"memory_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"memory_gib": rss_kib / (2**30 if sys.platform == "darwin" else 2**20)}
