"""Finding and loading the model the operator named: a Hugging Face `StableLmForCausalLM` export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer

ARCHITECTURE = "StableLmForCausalLM"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A --model path that cannot be served; the message says why."""


def check_export(folder: Path) -> Path:
    """`folder` if it is an HF export of a StableLM model, else a ModelError naming what is missing."""
    config = folder / "config.json"
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder")
    if not config.is_file():
        raise ModelError(f"{folder}: no config.json; expected a Hugging Face {ARCHITECTURE} export")
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, AttributeError) as e:
        raise ModelError(f"{config}: not a JSON object ({e})") from e
    if ARCHITECTURE not in architectures:
        raise ModelError(f"{config}: architectures {architectures} do not include {ARCHITECTURE}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    return folder


def resolve(path: Path) -> tuple[Path, Path | None]:
    """The export to serve, and a temporary folder to remove once it is loaded (None when there is none).

    `path` itself when it is an HF export; otherwise it is taken for a training checkpoint and converted
    into a temporary folder by the trainer's own `python -m training export`."""
    try:
        return check_export(path), None
    except ModelError as not_export:
        if not path.is_dir():
            raise
        scratch = Path(tempfile.mkdtemp(prefix="serving-export-"))
        command = [sys.executable, "-m", "training", "export", str(path), str(scratch / "export")]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(
                f"{not_export}; nor a training checkpoint (`training export` says: {why})"
            ) from None
        return check_export(scratch / "export"), scratch


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
