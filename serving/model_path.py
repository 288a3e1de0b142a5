"""The export to serve for a --model: the path itself when it is a Hugging Face `StableLmForCausalLM`
export, else the training checkpoint it names written as one into a temporary folder
(`training.trained`, what `python -m training export` runs). A registered MLflow version
(`models:/NAME/VERSION`, `models:/NAME@ALIAS`) stands for the export its logged model references, or
its source's files downloaded into that temporary folder (`common.tracking.model_version_folder`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common.tracking import REGISTRY_PREFIX, TrackingError, model_version_folder
from training.checkpoint import CheckpointError
from training.hf import HFFormatError, check_weights
from training.trained import NotAModelError, find_trained, load_checkpoint, write_export

__all__ = ["ModelError", "export_to_serve"]


class ModelError(ValueError):
    """A --model that cannot be served; the message says why."""


def export_to_serve(model: str | Path) -> tuple[Path, Path | None]:
    """The export to serve, and a temporary folder to remove once it is loaded (None when there is none)."""
    scratch = Path(tempfile.mkdtemp(prefix="serving-export-"))
    try:
        folder = _export(str(model), scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if any(scratch.iterdir()):
        return folder, scratch
    scratch.rmdir()
    return folder, None


def _export(model: str, scratch: Path) -> Path:
    """The export `model` names, written or downloaded into `scratch` where it is not one already."""
    try:
        registered = model.startswith(REGISTRY_PREFIX)
        path = model_version_folder(model, scratch / "download") if registered else Path(model)
        kind, folder = find_trained(path)
        if kind == "export":
            check_weights(folder)  # a corrupt export is refused before the server starts
            return folder
        trained, state_dict = load_checkpoint(folder)
    except (NotAModelError, CheckpointError, HFFormatError, TrackingError) as e:
        raise ModelError(str(e)) from None
    write_export(trained, state_dict, scratch / "export")
    return scratch / "export"
