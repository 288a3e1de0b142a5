"""A trained model on disk, whichever form it takes: a Hugging Face export (`python -m training export`,
or any `StableLmForCausalLM` folder) or a training checkpoint (a `step_*` folder, or a checkpoint dir
for its newest complete one). `load_trained` reads either into one state dict, its model config and
where it comes from; `write_export` writes what was read as an export, never over anything but an
earlier export (`check_export_target`). Serving and evaluation both take their --model path through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from common.files import OutputPathError, read_json
from common.precision import Precision, Requested, resolve_precision
from training import checkpoint
from training.config import TrainConfig
from training.hf import TRAINING_RUN, HFFormatError, check_export, check_export_path, load_hf, save_hf
from training.model import ModelConfig
from training.provenance import Provenance

__all__ = [
    "NotAModelError",
    "StateDict",
    "TrainedModel",
    "check_export_target",
    "find_trained",
    "load_checkpoint",
    "load_export",
    "load_trained",
    "write_export",
]

Kind = Literal["export", "checkpoint"]
StateDict = dict[str, torch.Tensor]


class NotAModelError(ValueError):
    """A path that is neither a Hugging Face export nor a complete training checkpoint; says why for both."""


@dataclass(frozen=True)
class TrainedModel:
    """What was read besides the weights (which the loaders hand out separately, so that a caller can
    let them go once it has built its model)."""

    path: Path  # the export folder or the step_* folder, resolved
    kind: Kind
    config: ModelConfig
    precision: Literal["bf16", "fp32"]  # what it trained in (an export: what its weights are stored in)
    provenance: Provenance


def find_trained(path: Path) -> tuple[Kind, Path]:
    """Which form `path` holds and its folder: `path` itself for an export, the complete checkpoint it
    names for a checkpoint. Reads no weights."""
    path = Path(path)
    if not path.exists():
        raise NotAModelError(f"{path}: no such file or folder")
    try:
        return "export", check_export(path)
    except HFFormatError as not_export:
        try:
            return "checkpoint", checkpoint.resolve(path)
        except checkpoint.CheckpointError as not_checkpoint:
            raise NotAModelError(f"{not_export}; nor a training checkpoint: {not_checkpoint}") from None


def load_trained(path: Path) -> tuple[TrainedModel, StateDict]:
    """The export at `path`, else the training checkpoint it names, and its state dict."""
    kind, folder = find_trained(path)
    return load_export(folder) if kind == "export" else load_checkpoint(folder)


def load_export(folder: Path) -> tuple[TrainedModel, StateDict]:
    """An export's weights; its provenance from its TRAINING_RUN file (none for an export without one)."""
    config, state_dict = load_hf(folder)
    run = folder / TRAINING_RUN
    provenance = Provenance.from_training_run(read_json(run)) if run.is_file() else Provenance()
    stored = "bf16" if next(iter(state_dict.values())).dtype == torch.bfloat16 else "fp32"
    return TrainedModel(folder.resolve(), "export", config, stored, provenance), state_dict


def load_checkpoint(folder: Path) -> tuple[TrainedModel, StateDict]:
    """A complete checkpoint's module weights (`checkpoint.model_state_dict`) and its training run."""
    saved = checkpoint.read(folder)
    cfg = TrainConfig.model_validate(saved.config)
    where = str(saved.folder.resolve())
    provenance = Provenance.from_trainer_state(
        saved.state, experiment=cfg.log.experiment, step=saved.step, checkpoint=where
    )
    trained = TrainedModel(Path(where), "checkpoint", cfg.model, cfg.precision, provenance)
    return trained, checkpoint.model_state_dict(folder)


def write_export(
    model: TrainedModel,
    state_dict: StateDict,
    folder: Path,
    dtype: Requested = "auto",
    overwrite: bool = False,
) -> Precision:
    """`state_dict` as the Hugging Face folder `folder`, its weights in `dtype` (auto: the precision the
    model trained in), with its provenance as TRAINING_RUN; the precision written. An existing `folder`
    is replaced only with `overwrite`, and only when it is an earlier export (`check_export_target`)."""
    if model.kind == "checkpoint":
        check_export_target(folder, model.path, overwrite)
    precision = resolve_precision(model.precision if dtype == "auto" else dtype, torch.device("cpu"))
    save_hf(
        state_dict,
        model.config,
        folder,
        dtype=precision.dtype,
        provenance=model.provenance,
        overwrite=overwrite,
    )
    return precision


def check_export_target(out: Path, source: Path, overwrite: bool = False) -> None:
    """Raise OutputPathError unless the export of the checkpoint `source` (a `step_*` folder) may go to
    `out`: never a checkpoint dir, a folder inside one or one holding the checkpoint exported;
    elsewhere as `training.hf.check_export_path` allows (nothing there, or an earlier export with
    `overwrite`)."""
    out_abs, root = Path(out).resolve(), Path(source).resolve().parent
    if out_abs == root or out_abs in root.parents:
        raise OutputPathError(f"{out} holds the checkpoint exported ({source}); an export goes elsewhere")
    if holder := next((p for p in (out_abs, *out_abs.parents) if _is_checkpoint_dir(p)), None):
        raise OutputPathError(f"{out}: {holder} is a checkpoint dir; an export goes elsewhere")
    check_export_path(Path(out), overwrite)


def _is_checkpoint_dir(folder: Path) -> bool:
    """Whether `folder` holds a `step_*` checkpoint folder, or a `latest` file naming one."""
    if (tag := checkpoint.latest_tag(folder)) is not None and checkpoint.TAG.fullmatch(tag):
        return True
    return any(p.is_dir() and checkpoint.TAG.fullmatch(p.name) for p in folder.glob("step_*"))
