"""The one private DeepSpeed call training makes (`groups._init_tp_mesh_device`, behind
`training.parallel.create_deepspeed_groups`): these tests fail on a DeepSpeed upgrade that changes it."""

from __future__ import annotations

import inspect
import os

import torch.distributed as dist
import torch.multiprocessing as mp

from common.net import free_port
from training.distributed import deepspeed, init_distributed
from training.parallel import ParallelLayout, init_layout

groups = deepspeed.utils.groups
UPGRADE = f"DeepSpeed {deepspeed.__version__} changed groups._init_tp_mesh_device, which "
UPGRADE += "training.parallel.create_deepspeed_groups calls: find its replacement and update both"


def test_the_private_call_keeps_its_name_and_parameter():
    create = getattr(groups, "_init_tp_mesh_device", None)
    assert create is not None, UPGRADE
    assert "tensor_model_parallel_size" in inspect.signature(create).parameters, UPGRADE


def tensor_parallel_rank(rank: int, port: int) -> None:
    """One of two ranks: its layout, its groups, and the groups kept when the engine asks again."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed()
    try:
        assert init_layout(2) == ParallelLayout(tensor=2, data=1, tensor_rank=rank, data_rank=0), UPGRADE
        tensor_group = groups.get_tensor_model_parallel_group()
        assert dist.get_process_group_ranks(tensor_group) == [0, 1], UPGRADE
        assert dist.get_process_group_ranks(groups.get_data_parallel_group()) == [rank], UPGRADE
        # deepspeed.initialize calls it again; the embedding that shard_embedding built holds this group.
        groups._init_tp_mesh_device(tensor_model_parallel_size=2)
        assert groups.get_tensor_model_parallel_group() is tensor_group, UPGRADE
    finally:
        dist.destroy_process_group()


def test_two_ranks_form_one_tensor_group_that_deepspeed_keeps():
    mp.spawn(tensor_parallel_rank, args=(free_port(),), nprocs=2)
