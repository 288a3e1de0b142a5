"""Stable LM 2 training: model, shard loader, DeepSpeed trainer, checkpoints, HF export, MLflow."""
