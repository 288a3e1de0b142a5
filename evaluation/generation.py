"""Greedy decoding of a batch of prompts with a KV cache, as lm-eval's `generate_until` asks for it.

The batch is left-padded the way serving's engine and transformers' `generate` pad it: each prompt's
tokens sit at the right end, a 2-D attention mask hides the padding, and explicit position ids count
only real tokens. Each step feeds one token per row through the shared `DynamicCache`. A row ends at
`<|endoftext|>` or at a stop string; the batch ends when every row has, or after `max_new_tokens`.
Special tokens other than `<|endoftext|>` add no text, as with `decode(skip_special_tokens=True)`, which
lm-eval's `hf` model uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, StableLmForCausalLM

import tokenizer
from serving.text import TextStream

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
    device = model.device
    ids, mask = _left_padded(prompts, enc.eot_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    texts = [TextStream(enc, [s for s in stop if s]) for _ in prompts]
    finished = [False] * len(prompts)
    for _ in range(max_new_tokens):
        out = model.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        tokens = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            finished[row] = finished[row] or _append(texts[row], token, enc)
        if all(finished):
            break
        ids, positions = tokens[:, None], positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
    return [text.take(final=True) for text in texts]


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids with each prompt at the right end, and the mask of its real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _append(text: TextStream, token: int, enc: tokenizer.Arcade100k) -> bool:
    """Add `token` to a row's text; True when the row is finished (end of text, or a stop string)."""
    if token == enc.eot_id:
        return True
    if token >= len(enc.ranks):  # a special token, cl100k's unused id or embedding padding: no text
        return False
    return text.add(token)
