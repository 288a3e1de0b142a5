"""The export to serve: the --model path when it is a Hugging Face `StableLmForCausalLM` export, else a
training checkpoint converted into one by the trainer's own exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHITECTURE = "StableLmForCausalLM"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

__all__ = ["ModelError", "check_export", "resolve"]


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
