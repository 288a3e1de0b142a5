"""The export to serve for a --model path: the path itself when it is a Hugging Face
`StableLmForCausalLM` export, else the training checkpoint it names written as one into a temporary
folder (`training.trained`, what `python -m training export` runs)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from training.checkpoint import CheckpointError
from training.hf import HFFormatError, check_weights
from training.trained import NotAModelError, find_trained, load_checkpoint, write_export

__all__ = ["ModelError", "export_to_serve"]


class ModelError(ValueError):
    """A --model path that cannot be served; the message says why."""


def export_to_serve(path: Path) -> tuple[Path, Path | None]:
    """The export to serve, and a temporary folder to remove once it is loaded (None when there is none)."""
    try:
        kind, folder = find_trained(path)
        if kind == "export":
            check_weights(folder)  # a corrupt export is refused before the server starts
            return folder, None
        model, state_dict = load_checkpoint(folder)
    except (NotAModelError, CheckpointError, HFFormatError) as e:
        raise ModelError(str(e)) from None
    scratch = Path(tempfile.mkdtemp(prefix="serving-export-"))
    try:
        write_export(model, state_dict, scratch / "export")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch / "export", scratch
