"""The model to evaluate: a Hugging Face export or a training checkpoint, read into one state dict, plus
what names where it came from (its provenance: the training run, the data, the tokenizer).

An export is a `StableLmForCausalLM` folder (`python -m training export`); a checkpoint is a `step_*`
folder or a checkpoint dir, whose newest complete checkpoint is taken (`training.checkpoint.resolve`).
A checkpoint names its training run in its trainer state (the MLflow run id, the data's manifest
hash, the tokenizer fingerprint); an export written by `python -m training export` names it in its
training_run.json (`training.hf.TRAINING_RUN`), which adds the run's experiment and MLflow store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import StableLmConfig, StableLmForCausalLM
from transformers.models.stablelm.modeling_stablelm import StableLmRotaryEmbedding

import tokenizer
from common.files import read_json
from serving.loading import load_tokenizer
from serving.model_source import ModelError, check_export
from training import checkpoint
from training.hf import TRAINING_RUN, hf_config, load_hf
from training.model import ModelConfig, StableLM

__all__ = ["ModelSource", "SourceError", "Weights", "build_models", "generator_for", "load_source"]


class SourceError(ValueError):
    """A --model path that is neither an export nor a complete training checkpoint."""


@dataclass(frozen=True)
class ModelSource:
    """What was read besides the weights (which `load_source` hands out separately, so that they can go
    once the models are built)."""

    path: Path
    kind: Literal["export", "checkpoint"]
    config: ModelConfig
    enc: tokenizer.Arcade100k
    # MLflow tags: training_run_id, training_experiment, training_tracking_uri, checkpoint,
    # checkpoint_step, data_manifest_sha256, tokenizer_fingerprint (those known)
    provenance: dict[str, str]


Weights = dict[str, torch.Tensor]


def load_source(path: str | Path) -> tuple[ModelSource, Weights]:
    """The export at `path`, else the training checkpoint it names, and its state dict; SourceError
    saying why for neither."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    try:
        return _load_export(check_export(path))
    except ModelError as not_export:
        try:
            return _load_checkpoint(checkpoint.resolve(path))
        except checkpoint.CheckpointError as not_checkpoint:
            raise SourceError(f"{not_export}; nor a training checkpoint: {not_checkpoint}") from None


def _load_export(folder: Path) -> tuple[ModelSource, Weights]:
    config, state_dict = load_hf(folder)
    enc = load_tokenizer(folder)
    provenance = _training_run(folder) | {"tokenizer_fingerprint": enc.fingerprint}
    return ModelSource(folder.resolve(), "export", config, enc, provenance), state_dict


def _training_run(folder: Path) -> dict[str, str]:
    """The export's training run (its TRAINING_RUN file) as tags; none for an export without one."""
    path = folder / TRAINING_RUN
    if not path.is_file():
        return {}
    run = read_json(path)
    tags = {
        "training_run_id": run.get("mlflow_run_id"),
        "training_experiment": run.get("experiment"),
        "training_tracking_uri": run.get("tracking_uri"),
        "checkpoint": run.get("checkpoint"),
        "checkpoint_step": run.get("step"),
        "data_manifest_sha256": run.get("data_manifest_sha256"),
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def _load_checkpoint(folder: Path) -> tuple[ModelSource, Weights]:
    """A checkpoint's weights, with the tokenizer of the run; a run whose trainer state names another
    tokenizer fingerprint than Arcade100k's is refused, since its scores would mean nothing."""
    saved = checkpoint.read(folder)
    enc = tokenizer.load()
    trained_with = saved.state.get("tokenizer_fingerprint")
    if trained_with is not None and trained_with != enc.fingerprint:
        raise SourceError(
            f"{folder} was trained with tokenizer {trained_with[:12]}, "
            f"not Arcade100k ({enc.fingerprint[:12]})"
        )
    provenance = {
        "training_run_id": saved.state.get("mlflow_run_id"),
        "checkpoint": str(folder.resolve()),
        "checkpoint_step": str(saved.step),
        "data_manifest_sha256": saved.state.get("data_manifest_sha256"),
        "tokenizer_fingerprint": enc.fingerprint,
    }
    config = ModelConfig.model_validate(saved.config["model"])
    known = {key: value for key, value in provenance.items() if value is not None}
    source = ModelSource(folder.resolve(), "checkpoint", config, enc, known)
    return source, checkpoint.model_state_dict(folder)


def build_models(
    config: ModelConfig, state_dict: Weights, device: torch.device, dtype: torch.dtype
) -> tuple[StableLM, StableLmForCausalLM]:
    """This project's StableLM, which scores, and transformers' StableLmForCausalLM, which generates
    (`generator_for`)."""
    weights = {name: t.to(device=device, dtype=dtype) for name, t in state_dict.items()}
    with torch.device("meta"):  # no random init of weights that are replaced at once
        scorer = StableLM(config)
    scorer.load_state_dict(weights, assign=True)
    return scorer.eval(), generator_for(scorer)


def generator_for(scorer: StableLM) -> StableLmForCausalLM:
    """transformers' StableLmForCausalLM over the very weight tensors of `scorer`: ours has no KV cache
    (its forward is the training one), transformers' has, and the parameter names are equal, so it
    costs no memory."""
    weight = scorer.lm_head.weight
    with torch.device("meta"):
        generator = StableLmForCausalLM(StableLmConfig.from_dict(hf_config(scorer.cfg, dtype=weight.dtype)))
    generator.load_state_dict(scorer.state_dict(), assign=True)
    # The rotary frequencies are a buffer no state dict holds: built on meta above, so built again here.
    generator.model.rotary_emb = StableLmRotaryEmbedding(generator.config).to(weight.device)
    return generator.eval()
