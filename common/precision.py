"""Which device to run on and which floating-point format it computes fast: the one rule behind
`precision: auto` in training and `dtype: auto` in serving, evaluation and export.

bf16 is native on CUDA GPUs that support it and on CPUs with AVX512-BF16 or AMX, unless
ONEDNN_MAX_CPU_ISA caps PyTorch's CPU kernels below them. Elsewhere (an
AVX2-only CPU, most laptops) PyTorch emulates bf16 matmuls, which was measured 260x slower than fp32
for the tiny model's output projection, so `auto` picks fp32 there.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "BF16_CPU_FLAGS",
    "DeviceError",
    "Dtype",
    "Precision",
    "cpu_flags",
    "native_bf16",
    "pick_device",
    "pick_dtype",
    "resolve_precision",
]

# /proc/cpuinfo flags of x86 CPUs whose cores compute bf16 dot products in hardware.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN (PyTorch's CPU kernels) uses no instruction set above ONEDNN_MAX_CPU_ISA; these caps keep bf16.
_BF16_ISA_CAPS = ("BF16", "FP16", "AMX", "AVX10", "ALL", "DEFAULT")

Requested = Literal["auto", "bf16", "fp32"]
# What serving and evaluation run a model in, spelled as torch spells the dtype.
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DeviceError(ValueError):
    """A device that was asked for but that torch cannot use."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (empty where /proc/cpuinfo does not list them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether `device` computes bf16 natively (`flags` stands in for this CPU's flags in tests)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags)) and _isa_cap_allows_bf16()
    return False


def _isa_cap_allows_bf16() -> bool:
    """False when ONEDNN_MAX_CPU_ISA caps oneDNN below bf16 (e.g. AVX2): bf16 then runs emulated."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return any(name in cap for name in _BF16_ISA_CAPS)


@dataclass(frozen=True)
class Precision:
    """The resolved choice: `name` is "bf16" or "fp32", `why` says how it was chosen, `warning` is
    set when an explicit bf16 will run emulated (slowly)."""

    name: Literal["bf16", "fp32"]
    why: str
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32


def resolve_precision(
    requested: Requested, device: torch.device, flags: frozenset[str] | None = None
) -> Precision:
    """`auto` becomes bf16 where `device` computes it natively, else fp32; explicit choices stay."""
    native = native_bf16(device, flags)
    where = "this GPU" if device.type == "cuda" else "this CPU"
    if requested == "fp32":
        return Precision("fp32", "fp32 as configured")
    if requested == "bf16":
        if native:
            return Precision("bf16", "bf16 as configured")
        return Precision(
            "bf16",
            "bf16 as configured",
            warning=(
                f"bf16 requested, but {where} has no native bf16 (no AVX512-BF16 or AMX): matmuls are "
                "emulated and can run 10x-300x slower than fp32; set precision: auto or fp32"
            ),
        )
    if native:
        return Precision("bf16", f"auto: {where} computes bf16 natively")
    return Precision("fp32", f"auto: {where} has no native bf16 (no AVX512-BF16 or AMX), so fp32")


def pick_device(name: str) -> torch.device:
    """`name` ("cpu", "cuda" or "auto": CUDA when torch sees it, else the CPU) as a device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def pick_dtype(
    name: Dtype, device: torch.device, flags: frozenset[str] | None = None
) -> tuple[torch.dtype, str]:
    """The dtype to run a model in, and why. auto follows `resolve_precision`, training's rule: bf16
    where `device` computes it natively, else fp32, since emulated bf16 matmuls (a CPU without
    AVX512-BF16 or AMX) run many times slower. `flags` stands in for this CPU's flags in tests."""
    if name == "auto":
        precision = resolve_precision("auto", device, flags)
        return precision.dtype, precision.why
    if name == "bfloat16" and not native_bf16(device, flags):
        return torch.bfloat16, "bfloat16 as set, but this device has no native bf16: expect it to run slowly"
    return _DTYPES[name], f"{name} as set"
