"""The StableLM model against transformers' StableLmForCausalLM, document masking, and the HF format."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, StableLmConfig, StableLmForCausalLM

import tokenizer
from common.files import OutputPathError, is_temporary
from training.hf import HFFormatError, hf_config, load_hf, model_config_from_hf, save_hf
from training.model import ModelConfig, StableLM, document_mask, document_positions, flops_per_token
from training.provenance import Provenance

EOT = 3  # inside the small vocabulary; real data uses tokenizer.EOT_ID
SMALL = ModelConfig(
    vocab_size=384,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=96,
    max_position_embeddings=128,
)
# The model card's figure is the count of a parallel-residual layout, one LayerNorm per block. The
# released config.json says use_parallel_residual false, for which transformers (like us) builds a
# second, post-attention LayerNorm (weight and bias) in each of the 24 blocks: 24 * 2 * 2048 more.
MODEL_CARD_PARAMS = 1_644_417_024
RELEASED_PARAMS = MODEL_CARD_PARAMS + 24 * 2 * 2048


def transformers_model(cfg: ModelConfig, **overrides) -> StableLmForCausalLM:
    config = StableLmConfig.from_dict(hf_config(cfg, eot_id=EOT) | overrides, attn_implementation="sdpa")
    return StableLmForCausalLM(config).eval()


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights far from their init (norms and biases included), so that a wrongly mapped tensor shows
    in the logits."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return model


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(EOT + 1, SMALL.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert theirs.std() > 0.5, "logits too flat for the comparison to mean anything"
    assert (ours - theirs).abs().max().item() <= 1e-4


def with_kernel(model: StableLM, kernel: str) -> StableLM:
    other = StableLM(model.cfg.model_copy(update={"attention": kernel})).eval()
    other.load_state_dict(model.state_dict())
    return other


@pytest.fixture(scope="module")
def hf_model() -> StableLmForCausalLM:
    return randomize(transformers_model(SMALL), seed=1)


@pytest.fixture(scope="module")
def our_model(hf_model) -> StableLM:
    model = StableLM(SMALL).eval()
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


@torch.no_grad()
def test_transformers_weights_load_into_ours_with_equal_logits(hf_model, our_model):
    ids = torch.stack([tokens(48, seed=2), tokens(48, seed=3)])
    assert_close(our_model(ids), hf_model(ids).logits)


@torch.no_grad()
def test_our_weights_load_into_transformers_with_equal_logits():
    ours = randomize(StableLM(SMALL), seed=4).eval()
    theirs = transformers_model(SMALL)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ids = tokens(40, seed=5)[None]
    assert_close(ours(ids), theirs(ids).logits)


def test_state_dict_names_are_transformers_names(hf_model):
    ours = {name: tuple(t.shape) for name, t in StableLM(SMALL).state_dict().items()}
    assert ours == {name: tuple(t.shape) for name, t in hf_model.state_dict().items()}


def test_positions_restart_after_each_end_of_text():
    ids = torch.tensor([[9, 9, EOT, 9, EOT, 9, 9, 9], [EOT, 9, 9, 9, 9, EOT, EOT, 9]])
    assert document_positions(ids, EOT).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 0, 1, 2, 3, 4, 0, 0]]


def test_flash_mask_marks_every_document_of_the_flattened_batch():
    ids = torch.tensor([[9, 9, EOT, 9, EOT, 9, 9, 9], [9, 9, 9, 9, 9, EOT, EOT, 9]])
    mask = document_mask(document_positions(ids, EOT), "flash")
    assert mask.cu_seqlens.tolist() == [0, 3, 5, 8, 14, 15, 16]
    assert mask.cu_seqlens.dtype == torch.int32 and mask.max_seqlen == 6


@torch.no_grad()
@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_document_masking_matches_each_document_alone(hf_model, our_model, kernel):
    our_model = with_kernel(our_model, kernel)
    a, b, c = tokens(7, seed=6), tokens(11, seed=7), tokens(5, seed=8)
    eot = torch.tensor([EOT])
    row = torch.cat([a, eot, b, eot, c])
    other_row = torch.cat([c, eot, b, eot, a])  # a second row with other boundaries in the same batch
    packed = our_model(torch.stack([row, other_row]), eot_id=EOT)
    alone = {name: hf_model(torch.cat([doc, eot])[None]).logits[0] for name, doc in dict(a=a, b=b).items()}
    assert_close(packed[0, :8], alone["a"])
    assert_close(packed[0, 8:20], alone["b"])
    assert_close(packed[0, 20:], hf_model(c[None]).logits[0])
    assert_close(packed[1, 6:18], alone["b"])
    # Without masking, B sees A: the comparison above would catch a mask that does nothing.
    assert (our_model(row[None])[0, 8:20] - alone["b"]).abs().max() > 1e-2


def test_activation_checkpointing_gives_identical_gradients():
    model = randomize(StableLM(SMALL), seed=9)
    ids = torch.cat([tokens(20, seed=10), torch.tensor([EOT]), tokens(12, seed=11)])[None]

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.activation_checkpointing = checkpointing
        model(ids[:, :-1], targets=ids[:, 1:], eot_id=EOT).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=1e-6, msg=name)


def test_loss_from_targets_equals_cross_entropy_of_the_logits():
    model = randomize(StableLM(SMALL), seed=12)
    ids = torch.stack(
        [tokens(30, seed=13), torch.cat([tokens(9, seed=14), torch.tensor([EOT]), tokens(20, seed=15)])]
    )
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def loss_and_gradients(loss_of) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    fused = loss_and_gradients(lambda: model(inputs, targets=targets, eot_id=EOT))
    plain = loss_and_gradients(
        lambda: F.cross_entropy(model(inputs, eot_id=EOT).flatten(0, 1), targets.flatten())
    )
    assert fused[0] > 1.0
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=0)
    for name, grad in plain[1].items():
        torch.testing.assert_close(fused[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_initialization():
    cfg = SMALL.model_copy(update={"hidden_size": 256, "intermediate_size": 512, "num_layers": 8})
    params = dict(StableLM(cfg).named_parameters())
    residual_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5  # GPT-NeoX scaled_normal
    for name, expected_std in [
        ("model.embed_tokens.weight", cfg.init_std),
        ("lm_head.weight", cfg.init_std),
        ("model.layers.0.self_attn.q_proj.weight", cfg.init_std),
        ("model.layers.0.mlp.gate_proj.weight", cfg.init_std),
        ("model.layers.0.self_attn.o_proj.weight", residual_std),
        ("model.layers.7.mlp.down_proj.weight", residual_std),
    ]:
        assert params[name].std().item() == pytest.approx(expected_std, rel=0.05), name
    for name, p in params.items():
        if name.endswith("bias"):
            assert not p.any(), name
        elif "norm" in name:
            assert (p == 1).all(), name


def test_flash_attention_refuses_a_cpu_run_clearly():
    model = StableLM(SMALL.model_copy(update={"attention": "flash"}))
    with pytest.raises(RuntimeError, match="flash-attn"):
        model(tokens(8, seed=12)[None])


def test_parameter_count_of_the_released_1_6b_model():
    cfg = ModelConfig()
    with torch.device("meta"):
        ours = StableLM(cfg)
        theirs = transformers_model(cfg)
        parallel_residual = transformers_model(cfg, use_parallel_residual=True)
    assert ours.num_params() == sum(p.numel() for p in theirs.parameters()) == RELEASED_PARAMS
    assert sum(p.numel() for p in parallel_residual.parameters()) == MODEL_CARD_PARAMS
    embedding = cfg.vocab_size * cfg.hidden_size
    assert ours.num_params(exclude_embeddings=True) == RELEASED_PARAMS - embedding
    # PaLM: 6N + 12 L H Q T, N without the input embedding (REFERENCE.md: 1.105e10 at T=4096).
    attention = 12 * 24 * 32 * 64 * 4096
    assert flops_per_token(cfg, 4096) == 6 * (RELEASED_PARAMS - embedding) + attention


@pytest.fixture(scope="module")
def export(tmp_path_factory, our_model):
    folder = tmp_path_factory.mktemp("export") / "hf"
    save_hf(our_model.state_dict(), SMALL, folder, dtype=torch.float32)
    return folder


@torch.no_grad()
def test_export_loads_in_transformers_with_equal_logits(export, our_model):
    assert not any(is_temporary(p) for p in export.parent.iterdir())
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["StableLmForCausalLM"]
    assert config["bos_token_id"] == config["eos_token_id"] == tokenizer.EOT_ID
    assert not config["tie_word_embeddings"] and not config["use_parallel_residual"]
    loaded = AutoModelForCausalLM.from_pretrained(export).eval()
    assert isinstance(loaded, StableLmForCausalLM)
    ids = tokens(30, seed=13)[None]
    assert_close(our_model(ids), loaded(ids).logits)
    enc = tokenizer.load()
    text = "Stable LM 2 was trained on 2000000000000 tokens."
    assert AutoTokenizer.from_pretrained(export).encode(text) == enc.encode_ordinary(text)


def test_load_hf_round_trips_an_export(export, our_model):
    cfg, state_dict = load_hf(export)
    assert cfg == SMALL.model_copy(update={"init_std": cfg.init_std})
    expected = our_model.state_dict()
    assert state_dict.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(state_dict[name], tensor), name


def test_save_hf_replaces_an_earlier_export_only_with_overwrite_in_bf16(tmp_path, our_model):
    folder = tmp_path / "hf"
    save_hf(our_model.state_dict(), SMALL, folder, dtype=torch.float32, provenance=Provenance(step=1))
    with pytest.raises(OutputPathError, match="--overwrite"):
        save_hf(our_model.state_dict(), SMALL, folder)
    (folder / "stale.txt").write_text("from an older export")
    save_hf(our_model.state_dict(), SMALL, folder, provenance=Provenance(step=2), overwrite=True)
    assert not (folder / "stale.txt").exists() and not any(is_temporary(p) for p in tmp_path.iterdir())
    _, state_dict = load_hf(folder)
    assert all(t.dtype == torch.bfloat16 for t in state_dict.values())
    weight = our_model.state_dict()["lm_head.weight"]
    assert torch.equal(state_dict["lm_head.weight"], weight.to(torch.bfloat16))


def test_load_hf_reads_a_sharded_transformers_folder(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    cfg, state_dict = load_hf(tmp_path)
    assert cfg.num_layers == SMALL.num_layers and cfg.partial_rotary_factor == SMALL.partial_rotary_factor
    model = StableLM(cfg)
    model.load_state_dict(state_dict, strict=True)
    ids = tokens(16, seed=14)[None]
    with torch.no_grad():
        assert_close(model(ids), hf_model(ids).logits)


def test_load_hf_refuses_weights_that_do_not_fit_the_config(tmp_path, export):
    config = json.loads((export / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((export / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config | {"vocab_size": 100352}))
    with pytest.raises(HFFormatError, match="wrong shape: model.embed_tokens.weight"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"qk_layernorm": True}, "qk_layernorm"),
        ({"use_parallel_residual": True}, "use_parallel_residual"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
        ({"num_key_value_heads": 2}, "grouped-query attention"),
        ({"model_type": "llama"}, "model_type"),
    ],
)
def test_unsupported_transformers_configs_are_refused_by_name(change, named):
    with pytest.raises(HFFormatError, match=named):
        model_config_from_hf(hf_config(SMALL) | change)


def test_model_config_reads_both_rope_layouts():
    flat = hf_config(SMALL.model_copy(update={"rope_theta": 5000.0, "partial_rotary_factor": 0.5}))
    nested = {k: v for k, v in flat.items() if k not in ("rope_theta", "partial_rotary_factor")}
    nested["rope_parameters"] = {"rope_type": "default", "rope_theta": 5000.0, "partial_rotary_factor": 0.5}
    assert model_config_from_hf(flat) == model_config_from_hf(nested)
    assert model_config_from_hf(nested).rotary_dims == 8
