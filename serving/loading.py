"""Loading an export for the batcher: its config, its tokenizer and the model itself."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer

__all__ = ["load_config", "load_model", "load_tokenizer"]


def load_config(folder: Path) -> StableLmConfig:
    return StableLmConfig.from_pretrained(folder)


def load_tokenizer(folder: Path) -> tokenizer.Arcade100k:
    """The export's own ranks file when it ships one (tokenizer.hf.export_hf writes it), else Arcade100k."""
    ranks = folder / tokenizer.RANKS_FILE
    return tokenizer.load(ranks) if ranks.is_file() else tokenizer.load()


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> StableLmForCausalLM:
    model = StableLmForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval()
