"""Tensor parallelism inside data parallelism (the model card's "2D parallelism with ZeRO-1"), with
DeepSpeed's AutoTP training.

`parallel.tensor: N` groups every N consecutive ranks into a tensor-parallel group: DeepSpeed's mesh
(data, tensor), whose data-parallel groups join the ranks that hold the same shard, and over which
ZeRO-1 partitions the optimizer state. AutoTP replaces the projections by its column-parallel
(`LinearLayer`) and row-parallel (`LinearAllreduce`) layers after the plan of
`training.model` (q/k/v, gate/up column, o/down row); the input embedding becomes DeepSpeed's
`VocabParallelEmbedding`; lm_head keeps its vocabulary rows, which the fused loss reads
(`training.loss.VocabShard`). Each rank of a tensor-parallel group reads the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from training.distributed import deepspeed
from training.loss import VocabShard
from training.model import COLUMN_PARALLEL, ROW_PARALLEL, VOCAB_PARALLEL, StableLM

__all__ = [
    "ParallelLayout",
    "autotp_config",
    "create_deepspeed_groups",
    "init_layout",
    "shard_embedding",
    "shard_vocab",
]

groups = deepspeed.utils.groups


@dataclass(frozen=True)
class ParallelLayout:
    """This rank's place in the (data, tensor) mesh."""

    tensor: int
    data: int
    tensor_rank: int = 0
    data_rank: int = 0

    @property
    def world_size(self) -> int:
        return self.tensor * self.data

    def __str__(self) -> str:
        return f"tp={self.tensor} x dp={self.data}"


def init_layout(tensor: int) -> ParallelLayout:
    """The layout of `tensor`-way tensor parallelism over this process group, its groups created
    (DeepSpeed's, which the engine and ZeRO-1 then use); the same layout on every call."""
    world = dist.get_world_size()
    if world % tensor:
        raise ValueError(f"parallel.tensor {tensor} does not divide the {world} ranks of this run")
    if tensor == 1:
        return ParallelLayout(1, world, 0, dist.get_rank())
    create_deepspeed_groups(tensor)
    return ParallelLayout(
        tensor, world // tensor, groups.get_tensor_model_parallel_rank(), groups.get_data_parallel_rank()
    )


def create_deepspeed_groups(tensor: int) -> None:
    """Create DeepSpeed's (data, tensor) mesh groups before `deepspeed.initialize`, which keeps them
    (it creates them only once): shard_embedding needs the tensor group first.

    DeepSpeed 0.19 has no public call for this: `deepspeed.initialize`, `tp_model_init` and its TP
    manager all reach the private one below. tests/test_deepspeed_groups.py fails if it changes."""
    groups._init_tp_mesh_device(tensor_model_parallel_size=tensor)


def autotp_config(tensor: int) -> dict[str, Any]:
    """The `tensor_parallel` section of DeepSpeed's config: AutoTP training with our split."""
    specs = [
        # lm_head's rows (VOCAB_PARALLEL's second) as a column split; the embedding is shard_embedding's
        {"patterns": [*COLUMN_PARALLEL, VOCAB_PARALLEL[1]], "partition_type": "column"},
        {"patterns": list(ROW_PARALLEL), "partition_type": "row"},
    ]
    return {"autotp_size": tensor, "partition_config": {"use_default_specs": False, "layer_specs": specs}}


def shard_embedding(model: StableLM) -> None:
    """Give `model` DeepSpeed's vocabulary-parallel embedding (each rank looks up its rows, an
    all-reduce adds them up); AutoTP's own only comes tied to an output head, and ours is untied."""
    from deepspeed.module_inject.layers import VocabParallelEmbedding, set_autotp_mode

    set_autotp_mode(training=True)  # what the engine sets later; in inference mode the weight is frozen
    group = groups.get_tensor_model_parallel_group()
    model.model.embed_tokens = VocabParallelEmbedding(model.model.embed_tokens, group)


def shard_vocab(model: StableLM) -> None:
    """Point the fused loss at this rank's rows of lm_head, which AutoTP has cut."""
    start = model.lm_head.weight.shape[0] * groups.get_tensor_model_parallel_rank()
    model.vocab_shard = VocabShard(groups.get_tensor_model_parallel_group(), start)
