"""How much of its device a run uses: the peak FLOP/s that MFU divides by, and peak memory."""

from __future__ import annotations

import resource
import sys

import torch

__all__ = ["PEAK_FLOPS", "memory_metrics", "peak_flops"]

# Dense bf16 peak FLOP/s per device (torchtitan's table); first match on the device name wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


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
