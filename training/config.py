"""The training config: one YAML file (configs/train/*.yaml) validated into `TrainConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from common.config import Config
from common.config import load as load_config
from common.objectstore import is_url
from common.precision import Requested
from training.model import ModelConfig

__all__ = [
    "BatchConfig",
    "CheckpointConfig",
    "ShardsConfig",
    "EvalConfig",
    "LogConfig",
    "OptimConfig",
    "ParallelConfig",
    "ScheduleConfig",
    "TrainConfig",
    "load",
]

# An Adam moment's decay rate.
Beta = Annotated[float, Field(ge=0, lt=1)]


class ShardsConfig(Config):
    """The `data:` section: which shard folder feeds the run, and how rows become samples."""

    # A local folder, or a URL (s3://bucket/shards/name, common.objectstore) whose shards each rank
    # fetches as it first reads them into the node's cache.
    shards: str = "data/shards/sample"
    # The node's copies of remote shards (None: $XDG_CACHE_HOME/stablelm2/shards, else
    # ~/.cache/stablelm2/shards), shared by its ranks and runs; past `cache_bytes` the least recently
    # used copies no reader holds are deleted.
    cache_dir: Path | None = None
    cache_bytes: int = Field(100 * 2**30, gt=0)
    # Tokens per packed row (+1 for the last target); must equal the shards' manifest.
    seq_len: int = Field(4096, gt=0)
    # Train on windows of this many tokens cut from each row (a divisor of seq_len), e.g. a small
    # model on the 4096-token sample shards; None trains on whole rows.
    window: int | None = Field(None, gt=0)
    # Seeds the global permutation of rows (one permutation per epoch; numpy takes no negative seed).
    seed: int = Field(1234, ge=0)
    # Stability's reset_attention_mask + reset_position_ids: no attention across <|endoftext|>.
    document_masking: bool = True
    verify_checksums: bool = True

    @property
    def train_len(self) -> int:
        """Tokens the model sees per sample."""
        return self.window or self.seq_len

    @model_validator(mode="after")
    def _window_divides_rows(self) -> ShardsConfig:
        if self.window is not None and self.seq_len % self.window:
            raise ValueError(f"window {self.window} does not divide seq_len {self.seq_len}")
        return self


class OptimConfig(Config):
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    # 0: no clipping (DeepSpeed's switch).
    grad_clip: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _floor_below_peak(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        return self


class ScheduleConfig(Config):
    """Linear warmup, cosine decay that hands over to an inverse square root, optional linear cooldown."""

    warmup_steps: int = Field(ge=0)
    total_steps: int = Field(gt=0)
    # Where, as a fraction of the decay phase, the inverse square root takes over from the cosine.
    # 0.65 puts step 420,000 of Stability's 540,000 at lr 2.51e-4; their cooldown started at 2.529e-4.
    switch_fraction: float = Field(0.65, gt=0, lt=1)
    # The last `cooldown_steps` steps go linearly from the scheduled lr to zero.
    cooldown_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _phases_fit(self) -> ScheduleConfig:
        if self.warmup_steps + self.cooldown_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} + cooldown_steps {self.cooldown_steps} "
                f"leave no decay phase in total_steps {self.total_steps}"
            )
        return self


class BatchConfig(Config):
    micro_batch: int = Field(2, gt=0)
    grad_accum: int = Field(1, gt=0)


class CheckpointConfig(Config):
    dir: Path = Path("runs/tiny/checkpoints")
    interval: int = Field(100, gt=0)
    keep_last: int = Field(3, gt=0)
    # A Hugging Face folder whose weights start the run (continued pre-training); ignored once the
    # run has a checkpoint of its own to resume from.
    init_from_hf: Path | None = None
    # A URL (s3://bucket/run/checkpoints) each complete checkpoint is copied to while training goes on,
    # and a resume takes a newer complete checkpoint from (training.mirror); None: local only.
    mirror: str | None = None

    @field_validator("mirror")
    @classmethod
    def _mirror_is_url(cls, value: str | None) -> str | None:
        if value is not None and not is_url(value):
            raise ValueError(f"{value!r} is not an object storage URL (s3://bucket/prefix, gs://...)")
        return value


class EvalConfig(Config):
    """Validation loss every `interval` steps, and lm-eval tasks every `tasks_interval` steps."""

    interval: int = Field(100, gt=0)
    # Micro-batches per data-parallel rank, source of the validation split and evaluation.
    batches: int = Field(8, gt=0)
    # lm-eval tasks run on the model in training (training.task_evaluator): a suite in configs/eval
    # (bundled, card) or a suite file; None runs none. Also run after the last step.
    suite: str | None = None
    tasks_interval: int = Field(1000, gt=0)
    # Documents per task and evaluation (None: all of them).
    limit: int | None = Field(None, gt=0)
    # Requests per forward of the tasks' model.
    tasks_batch_size: int = Field(16, gt=0)


class LogConfig(Config):
    interval: int = Field(10, gt=0)
    experiment: str = "stablelm2"
    run_name: str | None = None
    # Peak FLOP/s of one device for MFU; None means the table in training.utilization (no MFU on CPU).
    peak_flops: float | None = Field(None, gt=0)


class ParallelConfig(Config):
    """How the ranks split the work: `tensor` ranks (consecutive ones) share each replica of the
    model, Megatron-style (training.parallel); the world size over `tensor` is the data-parallel size,
    over which ZeRO-1 partitions the optimizer state."""

    tensor: int = Field(1, gt=0)


class TrainConfig(Config):
    model: ModelConfig = ModelConfig()
    data: ShardsConfig = ShardsConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig
    batch: BatchConfig = BatchConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()
    # Seeds the weight init and the torch/numpy/python RNGs (numpy's legacy seed is 32 bits); the data
    # order has its own seed.
    seed: int = Field(1234, ge=0, lt=2**32)
    # auto: bf16 where the training device computes it natively (CUDA GPUs with bf16, CPUs with
    # AVX512-BF16 or AMX), else fp32 (common.precision); a checkpoint's config.json holds the result.
    precision: Requested = "auto"
    # The key `precision` replaced; present only to say so (never part of a dumped config).
    bf16: Any = Field(None, exclude=True)
    activation_checkpointing: bool = False
    # torch.compile each transformer block (fuses the norms, rotary and SwiGLU's elementwise work). Pays
    # on CUDA; on CPU the compile takes longer than a short run saves.
    compile: bool = False
    parallel: ParallelConfig = ParallelConfig()
    # Non-finite steps in a row (each one skipped) before the run aborts.
    max_nonfinite_in_row: int = Field(5, gt=0)

    @field_validator("bf16", mode="before")
    @classmethod
    def _bf16_was_replaced(cls, value: Any) -> None:
        raise ValueError(
            f"bf16 was replaced by precision: auto|bf16|fp32 (auto picks bf16 where the hardware computes "
            f"it natively); write precision: {'bf16' if value else 'fp32'} or precision: auto instead"
        )

    @model_validator(mode="after")
    def _seq_fits_model(self) -> TrainConfig:
        if self.data.train_len > self.model.max_position_embeddings:
            raise ValueError(
                f"samples of {self.data.train_len} tokens exceed model.max_position_embeddings "
                f"{self.model.max_position_embeddings}"
            )
        return self

    @model_validator(mode="after")
    def _model_splits_over_tensor_ranks(self) -> TrainConfig:
        tp, m = self.parallel.tensor, self.model
        sizes = {"model.num_heads": m.num_heads, "model.intermediate_size": m.intermediate_size}
        sizes["model.vocab_size"] = m.vocab_size
        if uneven := [f"{key} {size}" for key, size in sizes.items() if size % tp]:
            raise ValueError(f"parallel.tensor {tp} must divide {', '.join(uneven)}")
        return self


def load(path: str | Path, overrides: dict[str, object] | None = None) -> TrainConfig:
    return load_config(path, TrainConfig, overrides)
