"""Decoding a batch of sequences together over one transformers `DynamicCache`, left-padded as `generate`
pads a batch: each row's real tokens sit at the right end, a 2-D attention mask hides the padding, and
explicit position ids count only real tokens. Between steps rows may leave (`select`) and two batches
may join (`merge`): what continuous batching needs. Serving's batcher and evaluation's greedy
generation both decode through it, so that they decode alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedConfig, StableLmForCausalLM

__all__ = ["PaddedCache", "layer_states"]


@dataclass
class PaddedCache:
    """The KV cache of a left-padded batch, with what the next forward needs beside it."""

    cache: DynamicCache
    mask: torch.Tensor  # [B, T] 1 where the cache holds a real token
    positions: torch.Tensor  # [B] the next token's position id = the number of real tokens in the cache
    config: PreTrainedConfig  # the model's, which a rebuilt cache is made for

    @classmethod
    def prefill(
        cls, model: StableLmForCausalLM, prompts: Sequence[Sequence[int]], pad_id: int
    ) -> tuple[PaddedCache, torch.Tensor]:
        """Run `prompts` (token ids), left-padded to one width, into a new cache. The hidden states
        [B, T, hidden]: row r's prompt is at its last len(prompts[r]) positions."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        cache = DynamicCache(config=model.config)
        hidden = _forward(model, ids, mask, (mask.cumsum(1) - 1).clamp(min=0), cache)
        return cls(cache, mask, mask.sum(1), model.config), hidden

    def decode(self, model: StableLmForCausalLM, ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (`ids`: [B]) and keep it in the cache; the hidden states [B, 1, hidden]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(ids), 1))], dim=1)
        hidden = _forward(model, ids[:, None], self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        return hidden

    def select(self, rows: list[int]) -> PaddedCache:
        """The cache of `rows` only, without the columns that are then padding in every row."""
        index = torch.tensor(rows, device=self.mask.device)
        positions = self.positions[index]
        trim = self.mask.shape[1] - int(positions.max())
        states = [
            (keys[index, :, trim:], values[index, :, trim:]) for keys, values in layer_states(self.cache)
        ]
        return PaddedCache(_cache_of(states, self.config), self.mask[index, trim:], positions, self.config)

    def merge(self, other: PaddedCache) -> PaddedCache:
        """One cache of this batch's rows then `other`'s, the narrower padded on the left to the wider."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        states = [
            (
                torch.cat([_pad_left(ka, width), _pad_left(kb, width)]),
                torch.cat([_pad_left(va, width), _pad_left(vb, width)]),
            )
            for (ka, va), (kb, vb) in zip(layer_states(self.cache), layer_states(other.cache), strict=True)
        ]
        mask = torch.cat(
            [
                F.pad(self.mask, (width - self.mask.shape[1], 0)),
                F.pad(other.mask, (width - other.mask.shape[1], 0)),
            ]
        )
        return PaddedCache(
            _cache_of(states, self.config), mask, torch.cat([self.positions, other.positions]), self.config
        )


def layer_states(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values), [B, heads, T, head_dim]. transformers has no public call that cuts or
    joins caches along the sequence, so this reads the layers' tensors (`tests/test_serving.py` checks
    their layout against `get_seq_length`, to fail loudly on an upgrade that changes it)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(states: Iterable[tuple[torch.Tensor, torch.Tensor]], config: PreTrainedConfig) -> DynamicCache:
    """A new cache holding `states`, layer by layer, written through the public `update`."""
    cache = DynamicCache(config=config)
    for layer, (keys, values) in enumerate(states):
        cache.update(keys, values, layer)
    return cache


def _forward(
    model: StableLmForCausalLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
) -> torch.Tensor:
    out = model.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
    )
    return out.last_hidden_state


def _pad_left(states: torch.Tensor, width: int) -> torch.Tensor:
    """[B, heads, T, dim] -> [B, heads, width, dim] with zeros in front."""
    return F.pad(states, (0, 0, width - states.shape[2], 0))
