"""FlexAttention with a document block mask against SDPA's dense mask: fp32 forward on CPU (PyTorch
has no FlexAttention backward there), bf16 forward and backward on CUDA when there is a GPU."""

from __future__ import annotations

import pytest
import torch

from training.model import ModelConfig, StableLM

EOT = 3
CFG = ModelConfig(
    vocab_size=384,
    hidden_size=256,
    num_layers=2,
    num_heads=4,  # head_dim 64, as in the 1.6B model
    intermediate_size=384,
    max_position_embeddings=1024,
)


def packed_rows(lengths: list[list[int]], seed: int) -> torch.Tensor:
    """Rows of documents of the given lengths, each ended by EOT but the last (cut by the row end)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for row in lengths:
        docs = [torch.randint(EOT + 1, CFG.vocab_size, (n,), generator=generator) for n in row]
        rows.append(torch.cat([torch.cat([d, torch.tensor([EOT])]) for d in docs[:-1]] + [docs[-1]]))
    return torch.stack(rows)


def twin_models(seed: int, **update) -> tuple[StableLM, StableLM]:
    """(sdpa, flex): the same weights, far from their init, under each kernel."""
    torch.manual_seed(seed)
    sdpa = StableLM(CFG.model_copy(update={"attention": "sdpa", **update}))
    with torch.no_grad():
        for p in sdpa.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    flex = StableLM(CFG.model_copy(update={"attention": "flex", **update}))
    flex.load_state_dict(sdpa.state_dict())
    return sdpa, flex


@torch.no_grad()
def test_flex_equals_sdpa_over_documents_that_cross_mask_blocks():
    sdpa, flex = twin_models(seed=0)
    # 300 tokens: three 128-token mask blocks, the last one partial; documents that end inside a
    # block, span a block boundary, fill a row alone, and are one token long.
    ids = packed_rows([[37, 140, 1, 119], [300]], seed=1)
    assert ids.shape == (2, 300)
    expected = sdpa(ids, eot_id=EOT)
    assert expected.std() > 0.1
    torch.testing.assert_close(flex(ids, eot_id=EOT), expected, rtol=0, atol=2e-5)
    # The documents are masked apart: without the mask, the second document's logits change.
    unmasked = sdpa(ids)[0, 38:178]
    assert (unmasked - expected[0, 38:178]).abs().max() > 1e-2


def test_flex_refuses_to_train_on_cpu():
    _, flex = twin_models(seed=2)
    ids = packed_rows([[20, 11]], seed=3)
    with pytest.raises(RuntimeError, match="FlexAttention has no backward on CPU"):
        flex(ids[:, :-1], targets=ids[:, 1:], eot_id=EOT)


def test_auto_uses_sdpa_on_cpu():
    model = StableLM(CFG)
    assert model.attention_kernel(torch.zeros(1, device="cpu")) == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_flex_equals_sdpa_in_bf16_on_cuda(checkpointing):
    sdpa, flex = (m.cuda().to(torch.bfloat16) for m in twin_models(seed=4))
    assert StableLM(CFG).attention_kernel(torch.zeros(1, device="cuda", dtype=torch.bfloat16)) in (
        "flex",
        "flash",
    )
    ids = packed_rows([[500, 3, 300, 219], [1025]], seed=5).cuda()  # 1,024 inputs and their targets

    def loss_and_gradients(model: StableLM) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.activation_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        loss = model(ids[:, :-1], targets=ids[:, 1:], eot_id=EOT)
        loss.backward()
        return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}

    (loss_s, grads_s), (loss_f, grads_f) = loss_and_gradients(sdpa), loss_and_gradients(flex)
    torch.testing.assert_close(loss_f, loss_s, rtol=1e-2, atol=0)
    for name, grad in grads_s.items():
        if name.endswith("k_proj.bias"):
            continue  # its exact gradient is zero (softmax ignores a shift shared by all keys): only noise
        relative = (grads_f[name] - grad).norm() / grad.norm().clamp_min(1e-12)
        assert relative < 3e-2, f"{name}: relative gradient difference {relative:.3g}"
