"""Greedy decoding of a batch of prompts with a KV cache, as lm-eval's `generate_until` asks for it.

The batch decodes through serving's `PaddedCache`, left-padded as serving's batcher and transformers'
`generate` pad it, one token per row per step. A row ends at `<|endoftext|>` or at a stop string; the
batch ends when every row has, or after `max_new_tokens`. Special tokens other than `<|endoftext|>` add
no text, as with `decode(skip_special_tokens=True)`, which lm-eval's `hf` model uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StableLmForCausalLM

import tokenizer
from serving.padded_cache import PaddedCache
from tokenizer import TextStream

__all__ = ["greedy_generate"]


@torch.inference_mode()
def greedy_generate(
    model: StableLmForCausalLM,
    enc: tokenizer.Arcade100k,
    prompts: Sequence[Sequence[int]],
    stop: Sequence[str],
    max_new_tokens: int,
) -> list[str]:
    """The greedy continuation of each prompt (token ids), cut before the first stop string."""
    texts = [TextStream(enc, [s for s in stop if s]) for _ in prompts]
    finished = [False] * len(prompts)
    kv, hidden = PaddedCache.prefill(model, prompts, enc.eot_id)
    for step in range(max_new_tokens):
        tokens = model.lm_head(hidden[:, -1]).argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            finished[row] = finished[row] or _append(texts[row], token, enc)
        if all(finished) or step == max_new_tokens - 1:
            break
        hidden = kv.decode(model, tokens)
    return [text.take(final=True) for text in texts]


def _append(text: TextStream, token: int, enc: tokenizer.Arcade100k) -> bool:
    """Add `token` to a row's text; True when the row is finished (end of text, or a stop string)."""
    if token == enc.eot_id:
        return True
    if token >= len(enc.ranks):  # a special token, cl100k's unused id or embedding padding: no text
        return False
    return text.add(token)
