"""Loading an export for the engine: its config and tokenizer, the device and dtype to run it in, and
the model itself."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer
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


def pick_dtype(name: str, config: StableLmConfig) -> torch.dtype:
    """auto: the dtype the export was saved in, as transformers' `from_pretrained` picks by default."""
    if name != "auto":
        return DTYPES[name]
    return config.dtype if isinstance(config.dtype, torch.dtype) else torch.float32


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> StableLmForCausalLM:
    model = StableLmForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval()
