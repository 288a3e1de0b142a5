"""The micro model: the `model` section of a training config small enough to train a few steps in seconds
on a CPU, for the tests and the hostile-user probe."""

from __future__ import annotations

__all__ = ["MICRO_MODEL"]

MICRO_MODEL = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 176,
    "max_position_embeddings": 64,
}
