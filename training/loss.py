"""Next-token cross-entropy fused with the output projection: the [tokens, vocab] logits never exist
whole and never wait in memory for the backward pass.

`F.cross_entropy(lm_head(h).float(), targets)` keeps fp32 logits, their log-softmax and a gradient of
the same size (tokens x 100,352 x 4 bytes: 1.6 GiB per 4,096 tokens) and makes some five passes over
them. Here each chunk of tokens is projected, turned into its loss and its exact gradients
(softmax minus one-hot) at once, and freed; the backward pass only scales the saved gradients by the
incoming one. Fewer passes on every device, and memory bounded by the chunk. It is the idea of Liger
Kernel's fused linear cross-entropy, in plain PyTorch.
"""

from __future__ import annotations

import torch

__all__ = ["linear_cross_entropy"]

# Chunk size in logits (tokens x vocab): 2**28 fp32 logits are 1 GiB, about 2,700 tokens of Arcade100k.
CHUNK_LOGITS = 2**28


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of cross_entropy(hidden @ weight.T, targets), in fp32.

    hidden [N, C], weight [V, C], targets [N]. The matmuls run in the autocast dtype when autocast is
    on, else in hidden's dtype; softmax and the loss are fp32. One backward pass per call.
    """
    if hidden.ndim != 2 or hidden.shape[0] != targets.shape[0]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)}: want [N, C] and [N]"
        )
    # Grad mode is off inside Function.forward, and needs_input_grad ignores it: decide here.
    return _LinearCrossEntropy.apply(hidden, weight, targets, torch.is_grad_enabled())


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, grad_enabled: bool
    ) -> torch.Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        need_hidden, need_weight = (grad_enabled and need for need in ctx.needs_input_grad[:2])
        with torch.autocast(device, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            n = h.shape[0]
            chunk = max(1, CHUNK_LOGITS // w.shape[0])
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(h) if need_hidden else None
            grad_w = None
            for start in range(0, n, chunk):
                h_c, t_c = h[start : start + chunk], targets[start : start + chunk]
                logits = (h_c @ w.t()).float()
                target_logit = logits.gather(1, t_c[:, None]).squeeze(1)
                row_max = logits.amax(dim=1, keepdim=True)
                exp = logits.sub_(row_max).exp_()  # in place: one [chunk, V] buffer for the whole chunk
                row_sum = exp.sum(dim=1)
                loss += (row_max.squeeze(1) + row_sum.log() - target_logit).sum()
                if not (need_hidden or need_weight):
                    continue
                # d loss / d logits = (softmax - one_hot) / n = (exp - row_sum * one_hot) / (row_sum * n).
                # The row scale goes onto the [chunk, C] factors, not the [chunk, V] buffer.
                exp[torch.arange(len(t_c), device=exp.device), t_c] -= row_sum
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
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        ctx.spent = False
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
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
        return grad_h, grad_w, None, None
