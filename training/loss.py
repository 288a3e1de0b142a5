"""Next-token cross-entropy fused with the output projection: the [tokens, vocab] logits never exist
whole and never wait in memory for the backward pass.

`F.cross_entropy(lm_head(h).float(), targets)` keeps fp32 logits, their log-softmax and a gradient of
the same size (tokens x 100,352 x 4 bytes: 1.6 GiB per 4,096 tokens) and makes some five passes over
them. Here each chunk of tokens is projected, turned into its loss and its exact gradients
(softmax minus one-hot) at once, and freed; the backward pass only scales the saved gradients by the
incoming one. Fewer passes on every device, and memory bounded by the chunk. It is the idea of Liger
Kernel's fused linear cross-entropy, in plain PyTorch.

Under tensor parallelism each rank holds a slice of the vocabulary (`VocabShard`): its logits are the
slice's columns, and three all-reduces over the tensor-parallel group per chunk (the row max, the sum
of exponentials, the target's logit, which only its owner knows) give every rank the exact loss;
the hidden states' gradient is the sum of every slice's part, one more all-reduce per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["VocabShard", "linear_cross_entropy"]

# Chunk size in logits (tokens x vocab): 2**28 fp32 logits are 1 GiB, about 2,700 tokens of Arcade100k.
CHUNK_LOGITS = 2**28


@dataclass(frozen=True)
class VocabShard:
    """The rows [start, start + weight rows) of the output layer that this rank of `group` holds."""

    group: Any  # the tensor-parallel torch.distributed process group
    start: int


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, shard: VocabShard | None = None
) -> torch.Tensor:
    """Mean over tokens of cross_entropy(hidden @ weight.T, targets), in fp32.

    hidden [N, C], weight [V, C], targets [N]; with `shard`, weight is this rank's slice of the
    vocabulary and every rank of the shard's group gets the loss over the whole vocabulary. The
    matmuls run in the autocast dtype when autocast is on, else in hidden's dtype; softmax and the
    loss are fp32. One backward pass per call.
    """
    if hidden.ndim != 2 or hidden.shape[0] != targets.shape[0]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)}: want [N, C] and [N]"
        )
    # Grad mode is off inside Function.forward, and needs_input_grad ignores it: decide here.
    return _LinearCrossEntropy.apply(hidden, weight, targets, shard, torch.is_grad_enabled())


def _all_reduce(tensor: torch.Tensor, shard: VocabShard | None, op: Any = dist.ReduceOp.SUM) -> None:
    if shard is not None:
        dist.all_reduce(tensor, op=op, group=shard.group)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        shard: VocabShard | None,
        grad_enabled: bool,
    ) -> torch.Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        need_hidden, need_weight = (grad_enabled and need for need in ctx.needs_input_grad[:2])
        with torch.autocast(device, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            n, rows = h.shape[0], w.shape[0]
            # Equal shards (the config checks the vocabulary divides): every rank runs as many chunks.
            chunk = max(1, CHUNK_LOGITS // rows)
            local_targets = targets - (shard.start if shard else 0)
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(h) if need_hidden else None
            grad_w = None
            for start in range(0, n, chunk):
                h_c, t_c = h[start : start + chunk], local_targets[start : start + chunk]
                mine = (t_c >= 0) & (t_c < rows)  # targets in this rank's rows: all of them unsharded
                logits = (h_c @ w.t()).float()
                column = t_c.clamp(0, rows - 1)[:, None]  # any column of this rank's for the others
                target_logit = torch.where(mine, logits.gather(1, column).squeeze(1), 0.0)
                row_max = logits.amax(dim=1, keepdim=True)
                _all_reduce(row_max, shard, dist.ReduceOp.MAX)
                _all_reduce(target_logit, shard)
                exp = logits.sub_(row_max).exp_()  # in place: one [chunk, V] buffer for the whole chunk
                row_sum = exp.sum(dim=1)
                _all_reduce(row_sum, shard)
                loss += (row_max.squeeze(1) + row_sum.log() - target_logit).sum()
                if not (need_hidden or need_weight):
                    continue
                # d loss / d logits = (softmax - one_hot) / n = (exp - row_sum * one_hot) / (row_sum * n).
                # The row scale goes onto the [chunk, C] factors, not the [chunk, V] buffer.
                exp.scatter_add_(1, column, -(row_sum * mine)[:, None])  # no-op where not mine
                grad_logits = exp.to(dtype)
                row_scale = (1.0 / (row_sum * n))[:, None]
                if need_hidden:
                    grad_h[start : start + chunk] = ((grad_logits @ w).float() * row_scale).to(dtype)
                if need_weight:
                    scaled_h = (h_c.float() * row_scale).to(dtype)
                    if grad_w is None:
                        grad_w = grad_logits.t() @ scaled_h
                    else:
                        grad_w.addmm_(grad_logits.t(), scaled_h)
            if need_hidden:
                _all_reduce(grad_h, shard)  # each shard's rows contribute to every hidden state
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        ctx.spent = False
        return loss / n

    @staticmethod
    def backward(
        ctx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        # The saved gradients are scaled in place (no second weight-sized buffer), so they serve once.
        if ctx.spent:
            raise RuntimeError("linear_cross_entropy supports one backward pass per call (no retain_graph)")
        ctx.spent = True
        grad_h, grad_w = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        if grad_h is not None:
            grad_h = grad_h.to(hidden_dtype).mul_(grad_loss)
        if grad_w is not None:
            grad_w = grad_w.to(weight_dtype).mul_(grad_loss)
        return grad_h, grad_w, None, None, None
