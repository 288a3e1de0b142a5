"""Train, export and import Stable LM 2 checkpoints.

    python -m training train CONFIG [--set key=value ...]
    python -m training import-hf HF_FOLDER CONFIG [--set key=value ...]
    python -m training export CHECKPOINT OUT_DIR

`train` resumes from the latest checkpoint in `checkpoint.dir` when there is one. `import-hf` trains
CONFIG starting from the weights (and model shape) of a Hugging Face StableLM folder. `export` writes
a checkpoint (a `step_*` folder, or a checkpoint dir for its latest) as a Hugging Face folder.
On GPUs launch `train` with `deepspeed` or `torchrun`; on CPU, `torchrun --nproc_per_node N` works too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common.config import ConfigError, add_overrides_argument, parse_overrides
from pipeline.shards import ShardError
from training import checkpoint
from training.config import TrainConfig, load
from training.hf import HFFormatError, read_model_config, save_hf

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a killed process reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume) the run a config describes")
    train.add_argument("config", type=Path)
    add_overrides_argument(train)
    imp = commands.add_parser("import-hf", help="continue pre-training from a Hugging Face folder")
    imp.add_argument("hf_folder", type=Path)
    imp.add_argument("config", type=Path)
    add_overrides_argument(imp)
    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face folder")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "export":
            return export_checkpoint(args.checkpoint, args.out_dir)
        cfg = load(args.config, parse_overrides(args.set))
        if args.command == "import-hf":
            cfg = with_hf_model(cfg, args.hf_folder)
        return train_run(cfg)
    except (ConfigError, ShardError, HFFormatError, checkpoint.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def with_hf_model(cfg: TrainConfig, folder: Path) -> TrainConfig:
    """`cfg` with the model shape of the HF folder (the weights decide it) and its weights as the start."""
    hf_model = read_model_config(folder)
    raw = cfg.model_dump(mode="json")
    raw["model"] = {**hf_model.model_dump(mode="json"), "attention": cfg.model.attention}
    raw["checkpoint"]["init_from_hf"] = str(folder)
    return TrainConfig.model_validate(raw)


def train_run(cfg: TrainConfig) -> int:
    from training.trainer import NonFiniteLossError, Trainer  # imports DeepSpeed: only to train

    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.rank == 0:
        where = trainer.tracker.uri if trainer.tracker else "-"
        print(f"checkpoints: {cfg.checkpoint.dir} (step {result.step})")
        print(f"MLflow run {result.run_id} in {where} (make mlflow-ui)")
    return EXIT_PREEMPTED if result.status == "preempted" else 0


def export_checkpoint(path: Path, out_dir: Path) -> int:
    cfg = TrainConfig.model_validate(checkpoint.read_config(path))
    root, tag = checkpoint.resolve(path)
    save_hf(checkpoint.model_state_dict(path), cfg.model, out_dir, dtype=torch.bfloat16)
    print(f"exported {root / tag} to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
