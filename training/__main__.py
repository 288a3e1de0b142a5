"""Train, export and import Stable LM 2 checkpoints.

    python -m training train CONFIG [--set key=value ...] [--verbose]
    python -m training import-hf HF_FOLDER CONFIG [--set key=value ...] [--verbose]
    python -m training export CHECKPOINT OUT_DIR [--dtype auto|bf16|fp32] [--overwrite] [--register NAME]

`train` resumes from the newest complete checkpoint in `checkpoint.dir` when there is one, refusing a
config that changes what the checkpoint was trained with. `import-hf` trains CONFIG starting from the
weights (and model shape) of a Hugging Face StableLM folder. `export` writes a checkpoint (a `step_*`
folder, or a checkpoint dir for its newest complete one) as a Hugging Face folder, by default in the
precision it trained in; OUT_DIR must not exist, or with `--overwrite` be an earlier export (never a
checkpoint dir or anything else). The export becomes an MLflow logged model of the training run, at the
checkpoint's step with the run's metrics of that step, referencing OUT_DIR (no copy); `--register NAME`
also makes it a new version of registered model NAME. `--verbose` lets DeepSpeed's own logs and memory
reports through.
On GPUs launch `train` with `deepspeed` or `torchrun`; on CPU, `torchrun --nproc_per_node N` works too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.entities import LoggedModel

from common.config import ConfigError, add_overrides_argument, flatten, parse_overrides
from common.files import disk_error
from common.precision import Requested
from common.shards import ShardError
from common.tracking import TrackingError, log_export_model, register_model, store_exists
from training import checkpoint
from training.config import TrainConfig, load
from training.hf import HFFormatError, read_model_config
from training.resume import ResumeError
from training.trained import TrainedModel, check_export_target, load_checkpoint, write_export

EXIT_BAD_INPUT = 2
EXIT_DISK = 1  # a full disk or a path that cannot be written
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a killed process reports
MODEL_TYPE = "stablelm2"  # of the logged models exports make: what the MLflow UI can filter them by


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
    for command in (train, imp):
        command.add_argument(
            "--verbose", action="store_true", help="show DeepSpeed's INFO logs and memory reports too"
        )
    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face folder")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("out_dir", type=Path)
    export.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="of the weights written; auto: the precision the checkpoint trained in",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR when it holds an earlier export (only then)"
    )
    export.add_argument(
        "--register", metavar="NAME", help="also register the export as a new version of MLflow model NAME"
    )
    args = parser.parse_args(argv)

    cfg = None
    try:
        if args.command == "export":
            return export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.overwrite, args.register)
        cfg = load(args.config, parse_overrides(args.set))
        if args.command == "import-hf":
            cfg = with_hf_model(cfg, args.hf_folder)
        return train_run(cfg, args.verbose)
    except (ConfigError, ShardError, HFFormatError, checkpoint.CheckpointError, ResumeError, ValueError) as e:
        # TrackingError is a ValueError: a training run or registry the store does not hold.
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        written = args.out_dir if args.command == "export" else cfg.checkpoint.dir if cfg else Path.cwd()
        if (line := disk_error(e, written)) is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_DISK


def with_hf_model(cfg: TrainConfig, folder: Path) -> TrainConfig:
    """`cfg` with the model shape of the HF folder (the weights decide it) and its weights as the start."""
    hf_model = read_model_config(folder)
    raw = cfg.model_dump(mode="json")
    raw["model"] = {**hf_model.model_dump(mode="json"), "attention": cfg.model.attention}
    raw["checkpoint"]["init_from_hf"] = str(folder)
    return TrainConfig.model_validate(raw)


def train_run(cfg: TrainConfig, verbose: bool = False) -> int:
    from training.trainer import NonFiniteLossError, Trainer  # imports DeepSpeed: only to train

    trainer = Trainer(cfg, verbose)
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


def export_checkpoint(
    path: Path, out_dir: Path, dtype: Requested = "auto", overwrite: bool = False, register: str | None = None
) -> int:
    """Write the checkpoint `path` names as a Hugging Face folder, its weights in `dtype` (auto: the
    precision the run trained in, which its config.json holds resolved); `out_dir` as
    `check_export_target` allows, checked before the weights are read. The export is logged as an MLflow
    model of its training run where that run's store is here, and with `register` registered as a new
    version of that name (which needs that store: checked before any weights are written)."""
    folder = checkpoint.resolve(path)
    check_export_target(out_dir, folder, overwrite)
    model, state_dict = load_checkpoint(folder)
    if register is not None:
        try:
            check_tracked(model)
        except TrackingError as e:
            raise TrackingError(f"cannot register {register}: {e}") from None
    precision = write_export(model, state_dict, out_dir, dtype, overwrite)
    run = model.provenance
    print(f"exported {folder} ({precision.name}) to {out_dir} (MLflow run {run.mlflow_run_id})")
    try:
        logged = log_export(model, out_dir, precision.name)
    except TrackingError as e:
        if register is not None:
            raise
        print(f"no MLflow logged model: {e}")
        return 0
    print(f"MLflow logged model {logged.model_id} (step {run.step}) in {run.tracking_uri}")
    if register is not None:
        version = register_model(run.tracking_uri, logged, register)
        print(f"registered models:/{register}/{version.version}")
    return 0


def check_tracked(model: TrainedModel) -> None:
    """Raise TrackingError unless the checkpoint names a training run whose store is on this machine."""
    run = model.provenance
    if run.mlflow_run_id is None or run.tracking_uri is None or run.step is None:
        raise TrackingError(f"{model.path} names no MLflow training run")
    if not store_exists(run.tracking_uri):
        raise TrackingError(f"the store of training run {run.mlflow_run_id}, {run.tracking_uri}, is not here")


def log_export(model: TrainedModel, out_dir: Path, precision: str) -> LoggedModel:
    """The export `out_dir` of the checkpoint `model` as a logged model of its training run, at its step:
    the model's shape and the export's precision as params, where it comes from as tags."""
    check_tracked(model)
    run = model.provenance
    params = flatten(model.config.model_dump(mode="json"), "model.") | {"precision": precision}
    return log_export_model(
        run.tracking_uri,
        run.mlflow_run_id,
        run.step,
        out_dir,
        name=out_dir.resolve().name,
        params=params,
        tags=run.tags(),
        model_type=MODEL_TYPE,
    )


def _exit(status: int) -> None:
    """Exit with `status`, having left the process group a run joined: left to the interpreter's exit,
    its store's thread can outlive it and abort the process (`terminate called without an active
    exception`) after the run's last line. Not in `main`: DeepSpeed keeps its groups for the process, so
    a process that calls `main` again (the tests) must keep the group too."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(status)


if __name__ == "__main__":
    _exit(main())
