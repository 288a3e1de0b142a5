"""Loading an export for the engine: its config and tokenizer, the device and dtype to run it in, and
the model itself."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer
from common.precision import native_bf16, resolve_precision
from serving.config import Dtype
from serving.model_source import ModelError

__all__ = ["load_config", "load_model", "load_tokenizer", "pick_device", "pick_dtype"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_config(folder: Path) -> StableLmConfig:
    return StableLmConfig.from_pretrained(folder)


def load_tokenizer(folder: Path) -> tokenizer.Arcade100k:
    """The export's own ranks file when it ships one (tokenizer.export_hf writes it), else Arcade100k."""
    ranks = folder / "arcade100k.tiktoken"
    return tokenizer.load(ranks) if ranks.is_file() else tokenizer.load()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def pick_dtype(
    name: Dtype, device: torch.device, flags: frozenset[str] | None = None
) -> tuple[torch.dtype, str]:
    """The dtype to run the model in, and why. auto follows `common.precision`, training's rule: bf16
    where `device` computes it natively, else fp32, since emulated bf16 matmuls (a CPU without
    AVX512-BF16 or AMX) run many times slower. `flags` stands in for this CPU's flags in tests."""
    if name == "auto":
        precision = resolve_precision("auto", device, flags)
        return precision.dtype, precision.why
    if name == "bfloat16" and not native_bf16(device, flags):
        return torch.bfloat16, "bfloat16 as set, but this device has no native bf16: expect it to run slowly"
    return DTYPES[name], f"{name} as set"


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> StableLmForCausalLM:
    model = StableLmForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval()
