"""The DeepSpeed engine training runs in: its config, AdamW's parameter groups, and the loss of a batch.

Kept light (no MLflow, no shards) so that bench/ builds the very engine the trainer does.
"""

from __future__ import annotations

from typing import Any

import torch

from common.precision import Precision
from training.config import TrainConfig
from training.distributed import deepspeed
from training.model import StableLM
from training.parallel import autotp_config, init_layout, shard_embedding, shard_vocab
from training.schedule import lr_at

__all__ = ["build_engine", "deepspeed_config", "lm_loss", "param_groups"]


def deepspeed_config(
    cfg: TrainConfig,
    data_parallel: int,
    precision: Precision,
    load_universal: bool = False,
    node_local: bool = False,
) -> dict[str, Any]:
    """DeepSpeed's config for `cfg` over `data_parallel` replicas in the resolved `precision`: bf16
    runs DeepSpeed's BF16_Optimizer (bf16 weights, fp32 master copy); fp32 runs plain ZeRO-1 on fp32
    weights. `parallel.tensor` > 1 adds AutoTP (training.parallel). With `node_local` (nodes that share
    no checkpoint dir), every node's first rank saves the module weights, not only rank 0."""
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch,
        "gradient_accumulation_steps": cfg.batch.grad_accum,
        "train_batch_size": cfg.batch.micro_batch * cfg.batch.grad_accum * data_parallel,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": 1},
        # check_grad_overflow: skip (and report) a step whose gradients are not finite.
        "bf16": {"enabled": precision.name == "bf16", "check_grad_overflow": True},
        # Stability accumulated and all-reduced gradients in fp32.
        "data_types": {"grad_accum_dtype": "fp32"},
        "communication_data_type": "fp32",
        "steps_per_print": 2**62,
        # A checkpoint from another world size is loaded in DeepSpeed's universal format.
        "checkpoint": {"load_universal": load_universal, "use_node_local_storage": node_local},
    }
    if cfg.parallel.tensor > 1:
        config["tensor_parallel"] = autotp_config(cfg.parallel.tensor)
    return config


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and embeddings, none on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(
    model: StableLM,
    cfg: TrainConfig,
    precision: Precision,
    load_universal: bool = False,
    node_local: bool = False,
) -> tuple[Any, Any]:
    """(engine, optimizer): `model` under DeepSpeed in `precision` with AdamW at the schedule's first lr,
    split over `parallel.tensor` ranks; with `load_universal`, for loading a checkpoint saved at another
    world size (`checkpoint.load`); with `node_local`, saving for nodes that share no disk."""
    layout = init_layout(cfg.parallel.tensor)
    if layout.tensor > 1:
        shard_embedding(model)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay),
        lr=lr_at(0, cfg.optim, cfg.schedule),
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        fused=True,  # one kernel per step on CUDA and on CPU (7x faster there than foreach)
    )
    config = deepspeed_config(cfg, layout.data, precision, load_universal, node_local)
    # mpu: DeepSpeed's own groups of the mesh, so that the batch and ZeRO-1 count data-parallel ranks.
    mpu = deepspeed.utils.groups if layout.tensor > 1 else None
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config, mpu=mpu)
    if layout.tensor > 1:
        shard_vocab(model)
    return engine, optimizer


def lm_loss(engine: Any, batch: torch.Tensor, eot_id: int | None) -> torch.Tensor:
    """Next-token cross-entropy of rows [B, T + 1], computed in fp32 whatever the model's dtype."""
    return engine(batch[:, :-1], targets=batch[:, 1:], eot_id=eot_id)
