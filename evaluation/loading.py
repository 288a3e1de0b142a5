"""The model to evaluate, read by `training.trained` from an export or a training checkpoint, with the
tokenizer it is scored with; and the two models lm-eval's requests run on, built from its weights.

An export brings its own tokenizer files (`serving.loading.load_tokenizer`); a checkpoint is scored with
Arcade100k, and one whose trainer state names another tokenizer fingerprint is refused, since its scores
would mean nothing. The provenance names that tokenizer either way. An export also brings its chat
template (in `tokenizer_config.json`, as `tokenizer.hf.export_hf` writes it), which lm-eval's
`--apply_chat_template` formats prompts with; a checkpoint has none.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, StableLmConfig, StableLmForCausalLM
from transformers.models.stablelm.modeling_stablelm import StableLmRotaryEmbedding

import tokenizer
from common.files import read_json
from serving.loading import load_tokenizer
from tokenizer.hf import TOKENIZER_CONFIG
from training.hf import hf_config
from training.model import ModelConfig, StableLM
from training.trained import StateDict, TrainedModel, find_trained, load_trained

__all__ = [
    "TokenizerMismatchError",
    "build_models",
    "chat_tokenizer",
    "check_chat_template",
    "generator_for",
    "load_evaluated",
]


class TokenizerMismatchError(ValueError):
    """A checkpoint trained with another tokenizer than the one it would be scored with."""


def load_evaluated(path: str | Path) -> tuple[TrainedModel, tokenizer.Arcade100k, StateDict]:
    """The export at `path`, else the training checkpoint it names (`training.trained.NotAModelError`
    saying why for neither), its tokenizer and its state dict."""
    model, state_dict = load_trained(Path(path))
    if model.kind == "export":
        enc = load_tokenizer(model.path)
    else:
        enc = tokenizer.load()
        trained_with = model.provenance.tokenizer_fingerprint
        if trained_with is not None and trained_with != enc.fingerprint:
            raise TokenizerMismatchError(
                f"{model.path} was trained with tokenizer {trained_with[:12]}, "
                f"not Arcade100k ({enc.fingerprint[:12]})"
            )
    provenance = replace(model.provenance, tokenizer_fingerprint=enc.fingerprint)
    return replace(model, provenance=provenance), enc, state_dict


def check_chat_template(path: str | Path) -> Path:
    """The export folder of the model at `path` when it has a chat template; ValueError naming the model
    otherwise (a checkpoint, or an export without one). Reads no weights."""
    kind, folder = find_trained(Path(path))
    config = folder / TOKENIZER_CONFIG
    if kind != "export" or not config.is_file() or not read_json(config).get("chat_template"):
        raise ValueError(
            f"{path} has no chat template (the `chat_template` of an export's {TOKENIZER_CONFIG}) "
            "to apply; evaluate an export of it, or leave out --apply-chat-template"
        )
    return folder


def chat_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The Hugging Face tokenizer of the export at `path`, whose `apply_chat_template` renders its chat
    template as lm-eval's `hf` model renders one; ValueError as `check_chat_template`."""
    return AutoTokenizer.from_pretrained(check_chat_template(path))


def build_models(
    config: ModelConfig, state_dict: StateDict, device: torch.device, dtype: torch.dtype
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
