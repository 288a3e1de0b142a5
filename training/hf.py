"""Hugging Face format: export a state dict as a `StableLmForCausalLM` folder, and read one back.

The folder is what `save_pretrained` writes (config.json, model.safetensors, generation_config.json)
plus the Arcade100k tokenizer files, so `transformers.AutoModelForCausalLM`, `AutoTokenizer` and vLLM
load it. config.json uses the flat keys of the released stabilityai/stablelm-2-1_6b (`rope_theta`,
`partial_rotary_factor`), which current and older readers both understand. Parameter
names need no mapping: ours are Hugging Face's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

import tokenizer
from common.files import OutputPathError, check_output_folder, publish_folder, temporary_path, write_json
from tokenizer.hf import export_hf
from training.model import ModelConfig, StableLM
from training.provenance import Provenance

__all__ = [
    "ARCHITECTURE",
    "TRAINING_RUN",
    "HFFormatError",
    "check_export",
    "check_export_path",
    "check_weights",
    "hf_config",
    "is_our_export",
    "load_hf",
    "model_config_from_hf",
    "read_model_config",
    "save_hf",
]

ARCHITECTURE = "StableLmForCausalLM"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# What names the run an export comes from (its MLflow run, data and tokenizer, step); see save_hf. It
# also marks a folder as an export of ours, the one kind of folder an export may replace.
TRAINING_RUN = "training_run.json"
# Older exports saved the rotary frequencies, which we recompute; nothing else may be left over.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class HFFormatError(ValueError):
    """A Hugging Face folder or config that this model cannot represent or that is incomplete."""


def hf_config(cfg: ModelConfig, eot_id: int = tokenizer.EOT_ID, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The config.json content of `cfg` as a `StableLmForCausalLM`; bos and eos are `<|endoftext|>`."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "stablelm",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "partial_rotary_factor": cfg.partial_rotary_factor,
        "layer_norm_eps": cfg.layer_norm_eps,
        "use_qkv_bias": cfg.use_qkv_bias,
        "qk_layernorm": False,
        "use_parallel_residual": False,
        "tie_word_embeddings": False,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": True,
        # `dtype` is the name transformers reads now; older readers (vLLM, transformers 4) read `torch_dtype`.
        "dtype": str(dtype).removeprefix("torch."),
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def model_config_from_hf(config: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a StableLM config.json; raises HFFormatError for layouts this model lacks."""
    if config.get("model_type") != "stablelm":
        raise HFFormatError(f"model_type is {config.get('model_type')!r}, expected 'stablelm'")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    if missing := [key for key in required if key not in config]:
        raise HFFormatError(f"config lacks {', '.join(missing)}")
    rope = {**config, **(config.get("rope_parameters") or {})}  # transformers 5 nests the rope keys
    unsupported = {
        "qk_layernorm": config.get("qk_layernorm", False),
        "use_parallel_residual": config.get("use_parallel_residual", False),
        "tie_word_embeddings": config.get("tie_word_embeddings", False),
        "grouped-query attention": config.get("num_key_value_heads", config["num_attention_heads"])
        != config["num_attention_heads"],
        f"hidden_act {config.get('hidden_act', 'silu')!r}": config.get("hidden_act", "silu") != "silu",
        f"rope_type {rope.get('rope_type', 'default')!r}": rope.get("rope_type", "default") != "default",
    }
    if problems := [name for name, present in unsupported.items() if present]:
        raise HFFormatError(
            "unsupported StableLM variant (Stable LM 2 1.6B has none of these): " + ", ".join(problems)
        )
    return ModelConfig(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        max_position_embeddings=config.get("max_position_embeddings", 4096),
        rope_theta=rope.get("rope_theta", 10000.0),
        partial_rotary_factor=rope.get("partial_rotary_factor", 0.25),
        layer_norm_eps=config.get("layer_norm_eps", 1e-5),
        use_qkv_bias=config.get("use_qkv_bias", False),
        init_std=config.get("initializer_range", 0.02),
    )


def check_export(folder: Path) -> Path:
    """`folder` if it is an HF export of a StableLM model (config.json naming ARCHITECTURE, and weights),
    else an HFFormatError naming what is missing. Reads config.json only."""
    config = folder / "config.json"
    if not folder.is_dir():
        raise HFFormatError(f"{folder}: no such folder")
    if not config.is_file():
        raise HFFormatError(f"{folder}: no config.json; expected a Hugging Face {ARCHITECTURE} export")
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, AttributeError) as e:
        raise HFFormatError(f"{config}: not a JSON object ({e})") from e
    if ARCHITECTURE not in architectures:
        raise HFFormatError(f"{config}: architectures {architectures} do not include {ARCHITECTURE}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise HFFormatError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    return folder


def read_model_config(folder: Path) -> ModelConfig:
    """The ModelConfig of the Hugging Face folder `folder`, from its config.json alone (no weights read)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise HFFormatError(f"{folder}: no config.json")
    return model_config_from_hf(json.loads(config_path.read_text(encoding="utf-8")))


def is_our_export(folder: Path) -> bool:
    """Whether `folder` is an export that `python -m training export` wrote: a StableLM export with its
    TRAINING_RUN. A Hugging Face folder from elsewhere is not."""
    try:
        check_export(folder)
    except HFFormatError:
        return False
    return (folder / TRAINING_RUN).is_file()


def check_export_path(folder: Path, overwrite: bool = False) -> None:
    """Raise OutputPathError unless an export may be written at `folder`: nothing is there, or
    `overwrite` is set and it is an export of ours (`is_our_export`) or an empty folder."""
    if os.path.lexists(folder) and not overwrite:
        raise OutputPathError(f"{folder} exists; --overwrite replaces an earlier export there")
    check_output_folder(folder, is_our_export, f"an export of ours (with {TRAINING_RUN})")


def save_hf(
    state_dict: dict[str, torch.Tensor],
    cfg: ModelConfig,
    folder: Path,
    dtype: torch.dtype = torch.bfloat16,
    provenance: Provenance | None = None,
    overwrite: bool = False,
) -> None:
    """Write `state_dict` as a Hugging Face folder, atomically: built beside it under a temporary name,
    then renamed into place, so a reader never sees half an export. `provenance` goes in as TRAINING_RUN.
    Where `folder` exists, see `check_export_path`: only an earlier export is replaced, with `overwrite`."""
    folder = Path(folder)
    check_export_path(folder, overwrite)
    check_state_dict(state_dict, cfg)
    tmp = temporary_path(folder)
    tmp.mkdir(parents=True)
    try:
        _write_export(tmp, state_dict, cfg, dtype)
        if provenance is not None:
            write_json(tmp / TRAINING_RUN, provenance.training_run(), sort_keys=True)
        check_export_path(folder, overwrite)  # again: the export took a while, something may be there now
        publish_folder(tmp, folder, replace=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when writing failed


def _write_export(
    folder: Path, state_dict: dict[str, torch.Tensor], cfg: ModelConfig, dtype: torch.dtype
) -> None:
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in state_dict.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    write_json(folder / "config.json", hf_config(cfg, dtype=dtype), sort_keys=True)
    eot = tokenizer.EOT_ID
    write_json(folder / "generation_config.json", {"bos_token_id": eot, "eos_token_id": eot}, sort_keys=True)
    export_hf(tokenizer.load(), folder)


def load_hf(folder: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config and state dict of a Hugging Face StableLM folder, single-file or sharded safetensors."""
    folder = Path(folder)
    cfg = read_model_config(folder)
    state_dict: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        with _weights_read(path):
            state_dict.update(load_file(path))
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    check_state_dict(state_dict, cfg, source=str(folder))
    return cfg, state_dict


def check_weights(folder: Path) -> None:
    """Raise HFFormatError unless every weight file of the export has a complete safetensors header and
    is as long as that header says (what a truncated, empty or overwritten file fails). Reads headers only."""
    for path in _weight_files(Path(folder)):
        with _weights_read(path), safe_open(path, "pt"):
            pass


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a single-file or sharded export."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise HFFormatError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        return [folder / shard for shard in sorted(shards)]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    raise HFFormatError(f"{folder}: neither model.safetensors nor model.safetensors.index.json")


@contextlib.contextmanager
def _weights_read(path: Path) -> Iterator[None]:
    """safetensors' own errors (and a file that cannot be read) as one HFFormatError naming the file."""
    try:
        yield
    except SafetensorError as e:
        raise HFFormatError(f"{path}: not a complete safetensors file ({e})") from None
    except OSError as e:
        raise HFFormatError(f"{path}: cannot be read ({e.strerror or e})") from None


def check_state_dict(
    state_dict: dict[str, torch.Tensor], cfg: ModelConfig, source: str = "state dict"
) -> None:
    """Raise HFFormatError unless `state_dict` has exactly the parameter names and shapes of StableLM(cfg)."""
    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in StableLM(cfg).state_dict().items()}
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong = [
        f"{name} {tuple(state_dict[name].shape)} (expected {shape})"
        for name, shape in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if items
        ]
        raise HFFormatError(f"{source} does not match the model config; " + "; ".join(parts))
