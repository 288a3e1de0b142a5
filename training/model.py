"""The Stable LM 2 model: a decoder-only transformer, written to read like the model card.

LayerNorm with bias, bias only on the q/k/v projections, rotary embeddings on the first 25% of each
head (NeoX rotate-half layout), a SwiGLU MLP, sequential residuals and untied input/output
embeddings. Parameter names equal those of Hugging Face `StableLmForCausalLM`, so a state dict moves
between the two unchanged.

With `eot_id` given, each `<|endoftext|>` ends a document: position ids restart after it and no
token attends across it (Stability's `reset_position_ids` and `reset_attention_mask`). Three kernels
compute that masked attention: flash-attn's varlen kernel, PyTorch's FlexAttention with a document
block mask (compiled on CUDA, so blocks that cross documents are skipped), and SDPA with a dense
[T, T] mask (any device; on CUDA it falls back to a kernel that reads the whole mask).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

from common.config import Config
from training.loss import VocabShard, linear_cross_entropy

try:  # flash-attn exists only on CUDA machines that installed the `gpu` extra
    from flash_attn import flash_attn_func, flash_attn_varlen_func
except ImportError:
    flash_attn_func = flash_attn_varlen_func = None

__all__ = ["ModelConfig", "StableLM", "flops_per_token", "tensor_parallel_dim"]

FLASH_DTYPES = (torch.float16, torch.bfloat16)
Kernel = Literal["sdpa", "flash", "flex"]

# Megatron's split of this architecture over a tensor-parallel group, by parameter name: whole heads
# of q/k/v (with their biases) and of the SwiGLU's gate/up are column-parallel (dim 0, the outputs),
# o_proj and down_proj row-parallel (dim 1, the inputs), so each block needs one all-reduce in
# attention and one in the MLP; the embedding and lm_head split their vocabulary rows (dim 0).
# Norms are replicated.
COLUMN_PARALLEL = (r".*\.[qkv]_proj\.(weight|bias)$", r".*\.(gate|up)_proj\.weight$")
ROW_PARALLEL = (r".*\.(o|down)_proj\.weight$",)
VOCAB_PARALLEL = (r"^model\.embed_tokens\.weight$", r"^lm_head\.weight$")


class ModelConfig(Config):
    """Shape of the model; the defaults are the released Stable LM 2 1.6B."""

    vocab_size: int = Field(100352, gt=0)
    hidden_size: int = Field(2048, gt=0)
    num_layers: int = Field(24, gt=0)
    num_heads: int = Field(32, gt=0)
    intermediate_size: int = Field(5632, gt=0)
    max_position_embeddings: int = Field(4096, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    # The share of each head's dimensions that are rotated.
    partial_rotary_factor: float = Field(0.25, ge=0, le=1)
    layer_norm_eps: float = Field(1e-5, gt=0)
    use_qkv_bias: bool = True
    init_std: float = Field(0.02, gt=0)
    # auto: flash-attn's kernels when installed and running on CUDA in half precision, else
    # FlexAttention on CUDA, else SDPA. flex runs forward-only on CPU (PyTorch has no CPU backward).
    attention: Literal["auto", "sdpa", "flash", "flex"] = "auto"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class AttentionMask:
    """Which tokens each token may attend to, computed once per forward and shared by every layer.

    SDPA reads `dense` (a block-diagonal causal mask), FlexAttention `block_mask` (the same mask by
    128 x 128 blocks), flash-attn `cu_seqlens`/`max_seqlen` (document boundaries in the flattened
    batch); all None for plain causal attention, which the sdpa and flex kernels both leave to SDPA's
    own causal kernels.
    """

    kernel: Kernel
    dense: torch.Tensor | None = None
    block_mask: BlockMask | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` dims of each head of x [B, T, H, D]; the rest pass through."""
    rot = cos.shape[-1]
    # split, not two slices: its backward is one cat instead of two zero-filled full-size gradients
    x_rot, x_pass = x.split((rot, x.shape[-1] - rot), dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def rotary_cos_sin(positions: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles for positions [B, T], shaped [B, T, 1, rotary_dims].

    Computed in fp32 from the config rather than kept in a buffer, so a bf16 cast of the module
    never rounds the frequencies.
    """
    dims = cfg.rotary_dims
    inv_freq = 1.0 / cfg.rope_theta ** (
        torch.arange(0, dims, 2, device=positions.device, dtype=torch.float32) / dims
    )
    angles = positions[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)  # NeoX layout: the two halves share frequencies
    return angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]


def document_positions(input_ids: torch.Tensor, eot_id: int) -> torch.Tensor:
    """Position of each token within its document; a document ends with (and includes) its eot."""
    is_eot = input_ids == eot_id
    starts = torch.zeros_like(is_eot)
    starts[:, 1:] = is_eot[:, :-1]
    index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    start_of_doc = torch.where(starts, index, 0).cummax(dim=1).values
    return index - start_of_doc


def document_mask(positions: torch.Tensor, kernel: Kernel) -> AttentionMask:
    """Attention restricted to each document, from the document positions of each token."""
    if kernel == "flash":
        # Every position 0 starts a sequence of the flattened batch; row starts included.
        starts = torch.nonzero(positions.flatten() == 0).flatten()
        ends = torch.tensor([positions.numel()], device=positions.device)
        cu_seqlens = torch.cat((starts, ends)).to(torch.int32)
        return AttentionMask(kernel, cu_seqlens=cu_seqlens, max_seqlen=int(cu_seqlens.diff().max()))
    doc_ids = (positions == 0).cumsum(dim=1)
    B, T = positions.shape
    if kernel == "flex":

        def same_document_causal(b, h, q, kv):
            return (doc_ids[b, q] == doc_ids[b, kv]) & (q >= kv)

        # Compiled on CUDA: built eagerly, the mask costs about 6% of a 1.6B step at seq 4096.
        block_mask = create_block_mask(
            same_document_causal, B, None, T, T, device=positions.device, _compile=positions.is_cuda
        )
        return AttentionMask(kernel, block_mask=block_mask)
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=positions.device)
    return AttentionMask(kernel, dense=(same_doc & causal.tril())[:, None])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.use_qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.use_qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.use_qkv_bias)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism the projections hold this rank's heads only.
        q = self.q_proj(x).view(B, T, -1, self.head_dim)
        k = self.k_proj(x).view(B, T, -1, self.head_dim)
        v = self.v_proj(x).view(B, T, -1, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if mask.kernel == "flash":
            y = flash_attention(q, k, v, mask)
        else:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if mask.block_mask is not None:
                y = document_flex_attention(q, k, v, mask.block_mask)
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask.dense, is_causal=mask.dense is None
                )
            y = y.transpose(1, 2)
        return self.o_proj(y.reshape(B, T, -1))


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """Causal attention with flash-attn on [B, T, H, D]; varlen over documents when they are given."""
    if mask.cu_seqlens is None:
        return flash_attn_func(q, k, v, causal=True)
    B, T, H, D = q.shape
    y = flash_attn_varlen_func(
        q.reshape(B * T, H, D),
        k.reshape(B * T, H, D),
        v.reshape(B * T, H, D),
        cu_seqlens_q=mask.cu_seqlens,
        cu_seqlens_k=mask.cu_seqlens,
        max_seqlen_q=mask.max_seqlen,
        max_seqlen_k=mask.max_seqlen,
        causal=True,
    )
    return y.view(B, T, H, D)


@functools.cache
def compiled_flex_attention():
    # One compiled kernel per shape (dynamic=False): the training shape is fixed, so it compiles once.
    return torch.compile(flex_attention, dynamic=False)


def document_flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask
) -> torch.Tensor:
    """FlexAttention on [B, H, T, D]: compiled on CUDA; on CPU PyTorch's unfused reference, which
    computes the same values (there for the CPU parity tests and for inference)."""
    # Inside a compiled block (`compile: true`) the block's own graph compiles the kernel.
    eager = not q.is_cuda or torch.compiler.is_compiling()
    attend = flex_attention if eager else compiled_flex_attention()
    return attend(q, k, v, block_mask=block_mask)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm block with sequential residuals: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class StableLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.hidden_size % cfg.num_heads or cfg.rotary_dims % 2:
            raise ValueError(
                f"hidden_size {cfg.hidden_size} must split into {cfg.num_heads} heads whose rotary part "
                f"(partial_rotary_factor {cfg.partial_rotary_factor}) has an even number of dims"
            )
        self.cfg = cfg
        self.activation_checkpointing = False
        # Set by training.parallel when lm_head holds one tensor-parallel rank's vocabulary rows.
        self.vocab_shard: VocabShard | None = None
        # The ModuleDict under `model` gives the Hugging Face names: model.embed_tokens, model.layers.N, ...
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(cfg.vocab_size, cfg.hidden_size),
                layers=nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers)),
                norm=nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps),
            )
        )
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """normal(0, init_std) weights, zero biases, unit norms; the projections that write into the
        residual stream (o_proj, down_proj) get init_std / sqrt(2 * num_layers), GPT-NeoX's
        `scaled_normal` that Stability's config names."""
        std = self.cfg.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding | nn.Linear):
                scaled = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(
                    module.weight, 0.0, std / math.sqrt(2 * self.cfg.num_layers) if scaled else std
                )
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, eot_id: int | None = None
    ) -> torch.Tensor:
        """Logits [B, T, vocab_size] for input_ids [B, T]; with targets [B, T], the mean next-token loss
        (fp32) instead, computed without materializing the logits. Documents are masked apart when
        eot_id is given."""
        x = self.model.norm(self.hidden_states(input_ids, eot_id))
        if targets is None:
            if self.vocab_shard is not None:
                raise RuntimeError("a tensor-parallel model gives the loss only; export it for logits")
            return self.lm_head(x)
        return linear_cross_entropy(x.flatten(0, 1), self.lm_head.weight, targets.flatten(), self.vocab_shard)

    def hidden_states(self, input_ids: torch.Tensor, eot_id: int | None) -> torch.Tensor:
        """The last block's output [B, T, hidden_size], before the final norm."""
        B, T = input_ids.shape
        if T > self.cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings {self.cfg.max_position_embeddings}"
            )
        x = self.model.embed_tokens(input_ids)
        kernel = self.attention_kernel(x)
        if eot_id is None:
            positions = torch.arange(T, device=input_ids.device)[None]
            mask = AttentionMask(kernel)
        else:
            positions = document_positions(input_ids, eot_id)
            mask = document_mask(positions, kernel)
        cos, sin = rotary_cos_sin(positions, self.cfg)
        for block in self.model.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask)
        return x

    def attention_kernel(self, x: torch.Tensor) -> Kernel:
        """The kernel `cfg.attention` asks for, given where and in what dtype `x` is computed."""
        half = x.dtype in FLASH_DTYPES or (
            torch.is_autocast_enabled(x.device.type)
            and torch.get_autocast_dtype(x.device.type) in FLASH_DTYPES
        )
        flash_usable = flash_attn_varlen_func is not None and x.is_cuda and half
        wanted = self.cfg.attention
        if wanted == "flash" and not flash_usable:
            raise RuntimeError(
                "attention 'flash' needs the flash-attn package (the `gpu` extra) and CUDA tensors in "
                "fp16/bf16 or autocast to them; use attention 'auto' to fall back to FlexAttention or SDPA"
            )
        if wanted == "flex" and not x.is_cuda and torch.is_grad_enabled():
            raise RuntimeError(
                "attention 'flex' trains on CUDA only: PyTorch's FlexAttention has no backward on CPU; "
                "use attention 'auto' or 'sdpa'"
            )
        if wanted == "auto":
            return "flash" if flash_usable else "flex" if x.is_cuda else "sdpa"
        return wanted

    def compile_blocks(self) -> None:
        """torch.compile each block in place (parameter names unchanged), as torchtitan does: one
        graph per block compiles once and is reused by all of them, checkpointed or not."""
        for block in self.model.layers:
            block.compile()

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count; `exclude_embeddings` drops the input embedding (a lookup, no matmul) but keeps
        the untied lm_head, the N of the PaLM FLOPs formula."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.model.embed_tokens.weight.numel()
        return total


def tensor_parallel_dim(name: str) -> int | None:
    """The dim along which tensor parallelism splits the parameter `name`; None: every rank holds it whole."""
    if any(re.match(pattern, name) for pattern in COLUMN_PARALLEL + VOCAB_PARALLEL):
        return 0
    if any(re.match(pattern, name) for pattern in ROW_PARALLEL):
        return 1
    return None


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, PaLM appendix B: 6N + 12 * L * H * Q * T (no causal halving, no recompute).

    N counts the matmul parameters: everything but the input embedding.
    """
    n = num_matmul_params(cfg)
    return 6.0 * n + 12.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def num_matmul_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return StableLM(cfg).num_params(exclude_embeddings=True)
