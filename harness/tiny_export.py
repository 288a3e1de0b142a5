"""A tiny random StableLM 2 export: the real architecture and tokenizer at small sizes, so a test or a
benchmark loads, serves and compares a model in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer
from tokenizer.hf import export_hf

__all__ = ["make_tiny_export"]


def make_tiny_export(folder: str | Path, seed: int = 0, max_position_embeddings: int = 2048) -> Path:
    """Write config.json, model.safetensors and the tokenizer files of a random model into `folder`."""
    torch.manual_seed(seed)
    config = StableLmConfig(
        vocab_size=tokenizer.PADDED_VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_position_embeddings,
        partial_rotary_factor=0.25,
        rope_theta=10_000,
        use_qkv_bias=True,
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.EOT_ID,
        eos_token_id=tokenizer.EOT_ID,
    )
    model = StableLmForCausalLM(config).eval()
    enc = tokenizer.load()
    with torch.no_grad():
        # A trained model never predicts the padding rows (they are never targets); zero logits keep
        # them below the best real token here too, so greedy decoding means the same with or without
        # the server's mask over ids that have no text.
        model.lm_head.weight[enc.n_vocab :] = 0
        model.lm_head.weight[len(enc.ranks)] = 0
    folder = Path(folder)
    model.save_pretrained(folder)
    export_hf(enc, folder)
    return folder
