"""Validation on the held-out split: loss, perplexity and bits per byte, per source and overall.

The split is packed per source (`pipeline.pack_job.pack_valid`: each shard's manifest entry names its
source); a split packed before that counts as one source, `all`. Each source is scored on its first
`eval.batches` micro-batches per rank, and the sums over its scored tokens (nats, tokens, bytes) make
its numbers; the overall ones come from the sums over all sources, so they are the token-weighted
combination of the sources' (bits per byte: byte-weighted).

Bits per byte are the summed loss in bits over the UTF-8 bytes of the scored target tokens. Those
come from the tokenizer, not from the packer: a token is a byte string and a text's tokens concatenate
to its bytes, so a table of bytes per token id counts them exactly (special tokens and embedding
padding count none). Padding is not scored: packing pads only the last row of a window with
`<|endoftext|>`, and since documents are never empty, an `<|endoftext|>` predicted from an
`<|endoftext|>` is padding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

import tokenizer
from training.loss import linear_cross_entropy
from training.model import StableLM

__all__ = ["ALL", "TALLY", "score", "token_bytes", "validation_metrics"]

ALL = "all"
# The sums over scored tokens, in this order, that one validation batch adds up.
TALLY = ("nats", "tokens", "bytes")


def token_bytes(enc: tokenizer.Arcade100k, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes of each token id (int64 [vocab_size]); 0 for special tokens and unused ids."""
    table = np.zeros(vocab_size, dtype=np.int64)
    for piece, rank in enc.ranks.items():
        table[rank] = len(piece)
    return torch.from_numpy(table)


@torch.no_grad()
def score(model: StableLM, rows: torch.Tensor, eot_id: int | None, byte_table: torch.Tensor) -> torch.Tensor:
    """The TALLY sums (float64 [3]) of rows [B, T + 1] predicted by `model`, documents masked apart
    when `eot_id` is given; padding is not scored."""
    inputs, targets = rows[:, :-1], rows[:, 1:]
    scored = ~((inputs == tokenizer.EOT_ID) & (targets == tokenizer.EOT_ID))
    wanted = targets[scored]
    if wanted.numel() == 0:
        return torch.zeros(len(TALLY), dtype=torch.float64, device=rows.device)
    hidden = model.model.norm(model.hidden_states(inputs, eot_id))[scored]
    mean = linear_cross_entropy(hidden, model.lm_head.weight, wanted, model.vocab_shard).double()
    count = torch.tensor(float(wanted.numel()), dtype=torch.float64, device=rows.device)
    nbytes = byte_table.to(rows.device)[wanted].sum().double()
    return torch.stack([mean * count, count, nbytes])


def validation_metrics(sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """`val_loss`, `val_perplexity`, `val_bpb` over all sources and `val/<source>/{loss,perplexity,bpb}`
    for each, from each source's TALLY sums."""
    metrics = {}
    for source, tally in sums.items():
        metrics |= {f"val/{source}/{k}": v for k, v in _metrics(tally).items()}
    overall = _metrics(torch.stack(list(sums.values())).sum(0))
    return {f"val_{k}": v for k, v in overall.items()} | metrics


def _metrics(tally: torch.Tensor) -> dict[str, float]:
    nats, tokens, nbytes = tally.tolist()
    loss = nats / tokens if tokens else math.nan
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 80.0)),
        "bpb": nats / (math.log(2) * nbytes) if nbytes else math.nan,
    }
