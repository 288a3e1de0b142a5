"""The fused output projection + cross-entropy against PyTorch's plain two-step computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import training.loss
from training.loss import linear_cross_entropy

N, C, V = 37, 16, 300


def inputs(
    dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, C, generator=generator).to(dtype).requires_grad_()
    weight = (torch.randn(V, C, generator=generator) * 0.5).to(dtype).requires_grad_()
    return hidden, weight, torch.randint(0, V, (N,), generator=generator)


def loss_and_grads(loss_fn, hidden, weight, targets, scale: float = 1.0):
    hidden.grad = weight.grad = None
    loss = loss_fn(hidden, weight, targets)
    (loss * scale).backward()
    return loss.detach(), hidden.grad, weight.grad


def plain(hidden, weight, targets):
    return F.cross_entropy((hidden @ weight.t()).float(), targets)


@pytest.mark.parametrize("chunk_tokens", [N, 10, 1])  # one chunk; chunks with a remainder; one token each
def test_equals_plain_cross_entropy_in_fp32(monkeypatch, chunk_tokens):
    monkeypatch.setattr(training.loss, "CHUNK_LOGITS", chunk_tokens * V)
    hidden, weight, targets = inputs()
    expected = loss_and_grads(plain, hidden, weight, targets, scale=3.0)
    got = loss_and_grads(linear_cross_entropy, hidden, weight, targets, scale=3.0)
    assert got[0].dtype == torch.float32 and expected[0] > 1.0
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_bf16_is_as_accurate_as_the_plain_bf16_computation():
    hidden, weight, targets = inputs(torch.bfloat16)
    truth = loss_and_grads(
        plain, hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_(), targets
    )

    def error(result) -> list[float]:
        return [
            ((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(result, truth, strict=True)
        ]

    ours, theirs = (
        error(loss_and_grads(linear_cross_entropy, hidden, weight, targets)),
        error(loss_and_grads(plain, hidden, weight, targets)),
    )
    for our_error, their_error in zip(ours, theirs, strict=True):
        assert our_error < 2 * their_error + 1e-4
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16


def test_autocast_computes_in_bf16_and_returns_fp32_gradients():
    hidden, weight, targets = inputs()
    with torch.autocast("cpu", torch.bfloat16):
        ours = loss_and_grads(linear_cross_entropy, hidden, weight, targets)
        theirs = loss_and_grads(plain, hidden, weight, targets)
    assert ours[1].dtype == ours[2].dtype == torch.float32
    exact = loss_and_grads(linear_cross_entropy, hidden, weight, targets)
    # Close to autocast's plain result, and measurably not the fp32 result: bf16 matmuls really ran.
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
    assert (ours[2] - exact[2]).abs().max() > 1e-6


def matmuls(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key == "aten::mm")


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, targets = inputs()
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
        assert matmuls(lambda: linear_cross_entropy(hidden, weight, targets)) == 1
    torch.testing.assert_close(loss, plain(hidden, weight, targets).detach())
    assert not loss.requires_grad
    assert matmuls(lambda: linear_cross_entropy(hidden, weight, targets)) == 3  # logits, d hidden, d weight


def test_a_second_backward_pass_is_refused():
    hidden, weight, targets = inputs()
    loss = linear_cross_entropy(hidden, weight, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_mismatched_shapes_are_refused():
    hidden, weight, targets = inputs()
    with pytest.raises(ValueError, match="want"):
        linear_cross_entropy(hidden, weight, targets[:-1])
