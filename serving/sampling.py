"""Next-token choice for a batch of sequences with per-sequence parameters, and logprobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tokenizer import Arcade100k

# Dividing logits by a temperature this small overflows them; the distribution is one-hot by then anyway.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # below GREEDY_BELOW: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # alternatives per generated token; None: no logprobs
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (echo)


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the best alternatives, best first


def valid_token_mask(enc: Arcade100k, vocab_size: int, device: torch.device) -> torch.Tensor:
    """True for ids that are tokens. The embedding is padded past n_vocab and cl100k leaves 100256
    unused; such ids have no text, so they are never sampled nor offered as alternatives."""
    valid = torch.zeros(vocab_size, dtype=torch.bool)
    valid[: min(len(enc.ranks), vocab_size)] = True
    valid[[i for i in enc.special_tokens.values() if i < vocab_size]] = True
    return valid.to(device)


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    valid: torch.Tensor,
) -> torch.Tensor:
    """One token per row of the model's `logits` [B, V] (float32)."""
    tokens = _best_valid(logits, valid)
    rows = [i for i, p in enumerate(params) if p.temperature >= GREEDY_BELOW]
    if not rows:
        return tokens
    device = logits.device
    sub = logits[rows].masked_fill(~valid, -torch.inf)
    sub = sub / torch.tensor([[params[i].temperature] for i in rows], device=device)
    sub = _top_k(sub, torch.tensor([params[i].top_k for i in rows], device=device))
    sub = _top_p(sub, torch.tensor([params[i].top_p for i in rows], device=device))
    probs = sub.softmax(-1)
    unseeded = [j for j, i in enumerate(rows) if generators[i] is None]
    if unseeded:
        tokens[[rows[j] for j in unseeded]] = torch.multinomial(probs[unseeded], 1).squeeze(1)
    for j, i in enumerate(rows):
        if generators[i] is not None:  # its own stream, so a seeded request repeats whatever runs beside it
            tokens[i] = torch.multinomial(probs[j], 1, generator=generators[i])[0]
    return tokens


def _best_valid(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each row's greedy token among the valid ids. The plain argmax is that token unless it is an id
    that is no token (it returns the first of equal maxima, so masking cannot change a valid winner);
    only then is a masking pass over [B, V] paid, which otherwise costs as much as the argmax itself."""
    tokens = logits.argmax(-1)
    if bool(valid[tokens].all()):
        return tokens
    return logits.masked_fill(~valid, -torch.inf).argmax(-1)


def _top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    if not bool((top_k > 0).any()):
        return logits
    top_k = top_k.clamp(max=logits.shape[-1])
    kth = torch.topk(logits, int(top_k.max()), dim=-1).values.gather(1, (top_k.clamp(min=1) - 1)[:, None])
    kth[top_k == 0] = -torch.inf
    return logits.masked_fill(logits < kth, -torch.inf)


def _top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    if not bool((top_p < 1).any()):
        return logits
    sorted_logits, order = logits.sort(-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # Drop a token when the ones before it already reach top_p; the most likely one always stays.
    outside = probs.cumsum(-1) - probs > top_p[:, None]
    sorted_logits = sorted_logits.masked_fill(outside, -torch.inf)
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, n_top: int, valid: torch.Tensor
) -> list[TokenLogprob]:
    """Logprob of each target under the model's distribution (rows of raw `logits`), with the `n_top`
    best valid alternatives. The target's value and its entry among the alternatives are the same float."""
    logprobs = logits.float().log_softmax(-1)
    chosen = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
    top_values, top_ids = logprobs.masked_fill(~valid, -torch.inf).topk(n_top, dim=-1)
    return [
        TokenLogprob(token_id=t, logprob=lp, top=tuple(zip(ids, values, strict=True)))
        for t, lp, ids, values in zip(
            targets.tolist(), chosen, top_ids.tolist(), top_values.tolist(), strict=True
        )
    ]
