"""The training loop: a DeepSpeed engine (ZeRO-1; bf16 with fp32 master weights, or fp32, as the
precision resolves for the device) over the shard loader.

Each optimizer step runs `grad_accum` micro-batches; the learning rate comes from `lr_at`, the loss
is an fp32 cross-entropy, and DeepSpeed skips any step whose gradients are not finite (we count
those and abort after `max_nonfinite_in_row`). Every `eval.interval` steps the validation split is
scored per source (`training.validation`), and every `eval.tasks_interval` steps and after the last one
the lm-eval tasks of `eval.suite` run on the model in memory (a `training.task_evaluator`). Rank 0 logs to
MLflow, with the share of wall time the evaluations took. SIGTERM makes every rank finish the step,
save a checkpoint and return.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import tokenizer
from common.config import flatten
from common.files import read_json
from common.lock import DirectoryLock
from common.precision import resolve_precision
from common.shards import COLUMN, ShardCache, ShardSet
from common.tracking import TrackedData, Tracker, git_commit
from training import checkpoint
from training.config import TrainConfig
from training.data import ShardLoader, open_shards, open_valid_shards
from training.deepspeed_engine import build_engine, lm_loss
from training.distributed import (
    deepspeed_output,
    device,
    from_node_leaders,
    from_rank0,
    init_distributed,
    local_rank,
)
from training.hf import load_hf
from training.mirror import Mirror, Part, pull_newer, split_by_node
from training.model import StableLM, flops_per_token
from training.nodes import agreed_checkpoint, checkpoint_dir_per_node, node_index
from training.parallel import init_layout
from training.provenance import Provenance
from training.resume import ResumeError, check_layout, check_resume
from training.schedule import lr_at
from training.task_evaluator import TaskEvaluator, installed_task_evaluator
from training.utilization import memory_metrics, peak_flops
from training.validation import ALL, TALLY, score, token_bytes, validation_metrics

__all__ = ["NonFiniteLossError", "Result", "StepRecord", "Trainer"]


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had non-finite gradients."""


@dataclass(frozen=True)
class StepRecord:
    step: int  # optimizer steps done after this one
    loss: float  # mean over the step's micro-batches and ranks
    lr: float
    grad_norm: float
    applied: bool  # False: DeepSpeed skipped the update (non-finite gradients)


@dataclass
class Result:
    status: str  # "finished" or "preempted"
    step: int
    history: list[StepRecord] = field(default_factory=list)
    evals: dict[int, float] = field(default_factory=dict)  # step -> validation loss (over all sources)
    task_evals: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> eval/<task>/<metric>
    # Seconds of wall time in this process: "wall" (all of `fit`), of which "validation" and "tasks".
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("wall", "validation", "tasks"), 0.0)
    )
    run_id: str | None = None


class Trainer:
    """Everything a run needs, checked and built before the first step; `fit()` trains.

    `verbose` lets DeepSpeed's own output (INFO logs, memory lines per parameter group) through. `tasks`
    runs the lm-eval tasks of `eval.suite`; by default the installed evaluator is built for it.
    """

    def __init__(self, cfg: TrainConfig, verbose: bool = False, tasks: TaskEvaluator | None = None):
        self.cfg, self.verbose = cfg, verbose
        with deepspeed_output(verbose):
            init_distributed()
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # Held by rank 0 until `fit` ends; every rank fails with rank 0's LockError when another job
        # holds the checkpoint dir, before anything reads or writes it.
        self._lock = DirectoryLock(cfg.checkpoint.dir)
        from_rank0(self._lock.acquire)
        try:
            # Each node's first rank takes the lock of its own folder, where the nodes share no disk.
            self.node_local = checkpoint_dir_per_node(self._lock)
            self._build(tasks)
        except BaseException:
            self._lock.release()
            raise

    def _build(self, tasks: TaskEvaluator | None) -> None:
        cfg, verbose = self.cfg, self.verbose
        # Tensor-parallel ranks share their batches: samples and the loader count data-parallel ranks.
        self.layout = init_layout(cfg.parallel.tensor)
        if self.node_local:
            self._announce_node_local()
        self.device = device()
        self.precision = resolve_precision(cfg.precision, self.device)
        self._announce_precision()
        self._open_data()
        self.tasks = self._open_tasks(tasks)
        saved = self._checkpoint_to_resume()

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        with self.device:  # initialised where it trains: minutes faster for 1.6B on a GPU
            self.model = StableLM(cfg.model)
        self.model.activation_checkpointing = cfg.activation_checkpointing
        if cfg.compile:
            self.model.compile_blocks()
        if cfg.checkpoint.init_from_hf is not None and saved is None:
            self._load_hf_weights(cfg.checkpoint.init_from_hf)
        reshard = saved is not None and checkpoint.saved_world_size(saved.folder) != self.layout.data
        with deepspeed_output(verbose):
            self.engine, self.optimizer = build_engine(
                self.model, cfg, self.precision, reshard, self.node_local
            )

        self.step, self.skipped_steps, self.nonfinite_in_row = 0, 0, 0
        self.samples_per_step = cfg.batch.micro_batch * cfg.batch.grad_accum * self.layout.data
        run_id = None
        if saved is not None:
            with deepspeed_output(verbose):
                checkpoint.load(self.engine, saved)
            run_id = self._restore(saved.state)
        self.eot_id = tokenizer.EOT_ID if cfg.data.document_masking else None
        self.tokens_per_step = self.samples_per_step * cfg.data.train_len
        self.flops_per_token = flops_per_token(cfg.model, cfg.data.train_len)
        self.peak_flops = peak_flops(self.device, cfg.log.peak_flops)
        self.tracker = self._open_tracker(run_id) if self.rank == 0 else None
        mirror = cfg.checkpoint.mirror
        uploads = self.rank == 0 or (self.node_local and local_rank() == 0)
        self._mirror = Mirror(mirror, cfg.checkpoint.keep_last) if mirror and uploads else None
        self._node = node_index() if self.node_local else None
        self._stop_requested = False

    def _announce_node_local(self) -> None:
        """Nodes that share no checkpoint dir: what that means for a lost node, and what it rules out."""
        cfg = self.cfg.checkpoint
        if self.layout.tensor > 1:
            raise ValueError(
                f"checkpoint.dir {cfg.dir}: the nodes do not share it, which tensor parallelism "
                "(parallel.tensor > 1) does not support yet; put it on a disk every node shares"
            )
        lost = (
            f"checkpoint.mirror {cfg.mirror} gathers them"
            if cfg.mirror is not None
            else "a node lost with its disk loses them: set checkpoint.mirror to a URL"
        )
        self._print(
            f"checkpoint.dir {cfg.dir} is each node's own: every node keeps its ranks' part of the "
            f"checkpoints; {lost}"
        )

    def _announce_precision(self) -> None:
        """What the run trains in and why, first thing on rank 0; a warning when bf16 will be emulated
        (slow enough to look like a hang: 5 tokens/s for the tiny config on an AVX2-only CPU)."""
        self._print(f"precision: {self.precision.name} ({self.precision.why})")
        if self.precision.warning and self.rank == 0:
            print(f"warning: {self.precision.warning}", file=sys.stderr, flush=True)

    def _open_data(self) -> None:
        """The shards first: a bad shard folder fails here, before a model is built."""
        cfg = self.cfg
        vocab, verify = cfg.model.vocab_size, cfg.data.verify_checksums
        cache = ShardCache(cfg.data.cache_dir, cfg.data.cache_bytes)
        self.train_shards = open_shards(cfg.data.shards, cfg.data.seq_len, vocab, verify, cache=cache)
        self.valid_shards = self._valid_sources(open_valid_shards(self.train_shards, vocab, verify))
        self.byte_table = token_bytes(tokenizer.load(), vocab)
        self.data_facts = Provenance(
            data_manifest_sha256=self.train_shards.manifest_sha256,
            tokenizer_fingerprint=self.train_shards.manifest.tokenizer.fingerprint,
        )
        self.loader = self._loader(self.train_shards, shuffle=True)
        if not self.valid_shards:
            self._print(f"{cfg.data.shards}: no validation split to score; no validation")

    def _valid_sources(self, sources: dict[str, ShardSet]) -> dict[str, ShardSet]:
        """The sources of the validation split that fill one micro-step on every rank; each left out is
        named."""
        needed = self.cfg.batch.micro_batch * self.layout.data
        windows = self.cfg.data.seq_len // self.cfg.data.train_len
        kept = {name: shards for name, shards in sources.items() if len(shards) * windows >= needed}
        for name in sources.keys() - kept.keys():
            self._print(
                f"validation: source {name} left out: its {len(sources[name]) * windows} samples cannot "
                f"fill one micro-step of {needed}"
            )
        return kept

    def _open_tasks(self, given: TaskEvaluator | None) -> TaskEvaluator | None:
        """The lm-eval tasks of `eval.suite`, loaded (and their data found) before any model is built."""
        if self.cfg.eval.suite is None:
            return None
        if self.layout.tensor > 1:
            raise ValueError(
                "eval.suite: in-loop lm-eval tasks do not run under tensor parallelism (parallel.tensor > 1) "
                "yet; evaluate a checkpoint with `python -m evaluation run` instead"
            )
        return given if given is not None else installed_task_evaluator(self.cfg.eval)

    def _checkpoint_to_resume(self) -> checkpoint.Saved | None:
        """The newest complete checkpoint (rank 0 checks the files, one line per one passed over), once
        its settings are known to fit this run; None for a new run."""
        if self.node_local:
            folder = agreed_checkpoint(self.cfg.checkpoint.dir, self.cfg.checkpoint.mirror)
        else:
            folder = from_rank0(self._newest_checkpoint)
        if folder is None:
            return None
        saved = checkpoint.read(folder)
        if self.node_local and (saved_by := checkpoint.saved_world_size(folder)) != self.layout.data:
            raise ResumeError(
                f"{folder} was saved by {saved_by} data-parallel ranks, this run has "
                f"{self.layout.data}: nodes that share no checkpoint dir resume at the world size that saved "
                "it; to change it, copy the checkpoint from the mirror to a disk every node shares"
            )
        check_resume(saved, self._resolved_config(), self.data_facts)
        check_layout(saved, checkpoint.saved_layout(folder), (self.layout.tensor, self.layout.data))
        self._print(f"resuming from {folder} (step {saved.step})")
        return saved

    def _newest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint in `checkpoint.dir`, or a newer one brought from the mirror."""
        root, mirror = self.cfg.checkpoint.dir, self.cfg.checkpoint.mirror
        try:
            local = checkpoint.newest_complete(root)
        except checkpoint.CheckpointError:  # none complete here: the mirror may have one
            if mirror is None or (pulled := pull_newer(mirror, root, None)) is None:
                raise
            return pulled
        pulled = pull_newer(mirror, root, local and local.name) if mirror is not None else None
        return pulled or local

    def _resolved_config(self) -> dict[str, Any]:
        """The config as JSON with `precision` as resolved: what a checkpoint keeps and a resume compares."""
        return {**self.cfg.model_dump(mode="json"), "precision": self.precision.name}

    def _restore(self, state: dict[str, Any]) -> str | None:
        """Continue the counters and the data position of a checkpoint's trainer state; its MLflow run id."""
        self.step, self.skipped_steps = state["step"], state["skipped_steps"]
        self.loader.load_state_dict(state["loader"])
        if state["samples_per_step"] != self.samples_per_step:
            self._print(
                f"note: the global batch changes from {state['samples_per_step']} to {self.samples_per_step} "
                f"samples per step (micro_batch x grad_accum x {self.layout.data} data-parallel ranks)"
            )
        return state["mlflow_run_id"]

    def _loader(self, shards: ShardSet, shuffle: bool) -> ShardLoader:
        mb, data = self.cfg.batch.micro_batch, self.cfg.data
        layout = self.layout
        return ShardLoader(shards, mb, data.seed, layout.data_rank, layout.data, shuffle, data.window)

    def _load_hf_weights(self, folder: Path) -> None:
        hf_cfg, state_dict = load_hf(folder)
        shape = {"exclude": {"attention", "init_std"}}
        if hf_cfg.model_dump(**shape) != self.cfg.model.model_dump(**shape):
            raise ValueError(f"{folder}: its model config {hf_cfg} differs from the run's {self.cfg.model}")
        self.model.load_state_dict({k: v.float() for k, v in state_dict.items()})

    def _open_tracker(self, run_id: str | None) -> Tracker:
        cfg = self.cfg
        tags = {
            "git_commit": git_commit(),
            **self.data_facts.tags(),
            "world_size": str(self.world_size),
            "tp": str(self.layout.tensor),
            "dp": str(self.layout.data),
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
        }
        config = cfg.model_dump(mode="json")
        params = {**flatten(config), "precision.resolved": self.precision.name}
        tracker = Tracker.open(cfg.log.experiment, cfg.log.run_name, run_id, params, tags)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config, indent=2) + "\n")
            # A resume keeps the first config and adds the one it ran with beside it.
            tracker.log_artifact(path, None if run_id is None else f"resumed/step_{self.step}")
        if run_id is None:  # a resume reads the same data (`check_resume`): logged once
            tracker.log_artifact(self.train_shards.manifest_file)
            tracker.log_datasets(self._datasets())
        return tracker

    def _datasets(self) -> list[TrackedData]:
        """The shards as the run's dataset inputs: the training split, and each validation source scored."""
        name = self.train_shards.uri.rsplit("/", 1)[-1]
        valid = [
            _tracked(f"{name}/valid/{source}", shards, "validation")
            for source, shards in self.valid_shards.items()
        ]
        return [_tracked(name, self.train_shards, "training"), *valid]

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> Result:
        result = Result(status="finished", step=self.step, run_id=self.tracker and self.tracker.run_id)
        self._fit_start = time.perf_counter()
        previous_handler = signal.signal(signal.SIGTERM, self._request_stop)
        try:
            self._loop(result)
            self._mirror_done()
        except BaseException:
            if self.tracker:
                self.tracker.finish("FAILED")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            self._lock.release()
        self._report_eval_share(result)
        if self.tracker:
            self.tracker.finish("KILLED" if result.status == "preempted" else "FINISHED")
        return result

    def _loop(self, result: Result) -> None:
        cfg = self.cfg
        window: list[StepRecord] = []
        window_seconds = 0.0  # training steps only: evaluations and saves do not count for tokens/s
        saved_step = self.step
        while self.step < cfg.schedule.total_steps:
            start = time.perf_counter()
            record, stop = self._train_step()
            window_seconds += time.perf_counter() - start
            result.history.append(record)
            window.append(record)
            if not record.applied:
                self._note_nonfinite()
            else:
                self.nonfinite_in_row = 0
            if self.step % cfg.log.interval == 0:
                self._log(window, window_seconds)
                window, window_seconds = [], 0.0
            if self.step % cfg.eval.interval == 0:
                result.evals[self.step] = self._timed(result, "validation", self._evaluate)
            if self.tasks is not None and self.step % cfg.eval.tasks_interval == 0:
                result.task_evals[self.step] = self._timed(result, "tasks", self._evaluate_tasks)
            # Never save while a run of non-finite steps is going on: the last save stays the good one.
            if (self.step % cfg.checkpoint.interval == 0 or stop) and self.nonfinite_in_row == 0:
                self._save()
                saved_step = self.step
            if stop:
                result.status, result.step = "preempted", self.step
                self._print(f"SIGTERM: stopping at step {self.step}; checkpoint of step {saved_step} kept")
                return
        if self.step not in result.evals:
            result.evals[self.step] = self._timed(result, "validation", self._evaluate)
        if self.tasks is not None and self.step not in result.task_evals:
            result.task_evals[self.step] = self._timed(result, "tasks", self._evaluate_tasks)
        if saved_step != self.step:
            self._save()
        result.step = self.step

    def _train_step(self) -> tuple[StepRecord, bool]:
        """One optimizer step; also agrees over all ranks whether any of them got SIGTERM."""
        lr = lr_at(self.step, self.cfg.optim, self.cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        for _ in range(self.cfg.batch.grad_accum):
            loss = self._loss(self.loader.next_batch().to(self.device))
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.detach()
        stop = torch.tensor(float(self._stop_requested), device=self.device)
        stats = torch.stack([loss_sum / self.cfg.batch.grad_accum, stop])
        dist.all_reduce(stats)
        loss_total, stops = stats.tolist()
        self.step += 1
        grad_norm = self.engine.get_global_grad_norm()
        applied = self.engine.was_step_applied()
        norm = float(grad_norm) if grad_norm is not None else math.nan
        return StepRecord(self.step, loss_total / self.world_size, lr, norm, applied), stops > 0

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return lm_loss(self.engine, batch, self.eot_id)

    def _note_nonfinite(self) -> None:
        self.skipped_steps += 1
        self.nonfinite_in_row += 1
        in_row = self.nonfinite_in_row
        self._print(f"step {self.step}: non-finite gradients, update skipped ({in_row} in a row)")
        if self.nonfinite_in_row >= self.cfg.max_nonfinite_in_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} steps in a row with non-finite gradients (up to step {self.step}); "
                + self._last_good_checkpoint()
            )

    def _last_good_checkpoint(self) -> str:
        """Where a rerun would resume from (`newest_complete`), not the step this run last saved: a run
        that has not saved yet would name a step 0 that was never written."""
        root = self.cfg.checkpoint.dir
        try:
            folder = from_rank0(lambda: checkpoint.newest_complete(root))
        except checkpoint.CheckpointError:
            folder = None
        if folder is None:
            return f"there is no complete checkpoint in {root} to go back to"
        return f"the last good checkpoint is {folder}"

    def _timed(self, result: Result, kind: str, evaluate: Any) -> Any:
        """`evaluate()`, its seconds added to `result.seconds[kind]`, and the shares of wall time so far
        logged."""
        start = time.perf_counter()
        value = evaluate()
        result.seconds[kind] += time.perf_counter() - start
        result.seconds["wall"] = time.perf_counter() - self._fit_start
        if self.tracker:
            shares = {
                f"time_share/{k}": result.seconds[k] / result.seconds["wall"] for k in ("validation", "tasks")
            }
            self.tracker.log_metrics(shares, self.step)
        return value

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Loss, perplexity and bits per byte of each source's first `eval.batches` micro-batches per rank
        (`training.validation`), and over all of them; returns the overall loss."""
        if not self.valid_shards:
            return math.nan
        sums = torch.zeros(len(self.valid_shards), len(TALLY), dtype=torch.float64, device=self.device)
        for row, shards in enumerate(self.valid_shards.values()):
            loader = self._loader(shards, shuffle=False)
            for _ in range(min(self.cfg.eval.batches, loader.samples // loader.samples_per_micro_step)):
                sums[row] += score(
                    self.engine.module, loader.next_batch().to(self.device), self.eot_id, self.byte_table
                )
        dist.all_reduce(sums)
        metrics = validation_metrics(dict(zip(self.valid_shards, sums.cpu(), strict=True)))
        self._print(
            f"step {self.step} | val_loss {metrics['val_loss']:.4f} | val_ppl {metrics['val_perplexity']:.2f}"
            f" | val_bpb {metrics['val_bpb']:.4f}"
            + "".join(
                f" | {name} {metrics[f'val/{name}/bpb']:.3f}" for name in self.valid_shards if name != ALL
            )
        )
        if self.tracker:
            self.tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, self.step)
        return metrics["val_loss"]

    def _evaluate_tasks(self) -> dict[str, float]:
        """The lm-eval tasks on the model as it is now, every rank scoring a share of the requests; the
        suite's own tasks (or groups) are printed, every task and metric is logged."""
        metrics = self.tasks.run(self.engine.module)
        shown = [f"eval/{name}/" for name in self.tasks.names]
        main = {k: v for k, v in metrics.items() if k.startswith(tuple(shown)) and "_stderr" not in k}
        self._print(f"step {self.step} | " + " | ".join(f"{k} {v:.3f}" for k, v in sorted(main.items())))
        if self.tracker:
            self.tracker.log_metrics(metrics, self.step)
        return metrics

    def _report_eval_share(self, result: Result) -> None:
        seconds = result.seconds
        seconds["wall"] = time.perf_counter() - self._fit_start
        self._print(
            f"evaluation took {seconds['validation']:.1f} s (validation) + {seconds['tasks']:.1f} s (tasks) "
            f"of {seconds['wall']:.1f} s: {seconds['validation'] / seconds['wall']:.1%} + "
            f"{seconds['tasks'] / seconds['wall']:.1%} of the wall time"
        )

    def _log(self, window: list[StepRecord], seconds: float) -> None:
        finite = [r for r in window if r.applied]
        tokens_per_s = len(window) * self.tokens_per_step / seconds
        last = window[-1]
        metrics = {
            "loss": sum(r.loss for r in finite) / len(finite) if finite else math.nan,
            "lr": last.lr,
            "grad_norm": last.grad_norm,
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": tokens_per_s / self.world_size,
            "skipped_steps": self.skipped_steps,
            **memory_metrics(self.device),
        }
        if self.peak_flops:
            metrics["mfu"] = self.flops_per_token * metrics["tokens_per_s_per_device"] / self.peak_flops
        self._print(
            f"step {self.step}/{self.cfg.schedule.total_steps} | loss {metrics['loss']:.4f}"
            f" | lr {last.lr:.2e} | grad_norm {last.grad_norm:.3f} | {tokens_per_s:,.0f} tok/s"
            + (f" | mfu {metrics['mfu']:.1%}" if "mfu" in metrics else "")
        )
        if self.tracker:
            # NaN is not a value MLflow stores; an all-skipped window simply has no loss point.
            self.tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, self.step)

    def _mirror_done(self) -> None:
        """Every rank returns once the upload in progress is done, or raises its error. On nodes that
        share no disk, the other nodes' parts first: rank 0 completes the checkpoint once they are up,
        and gives up on it when one failed."""
        if self.node_local:
            try:
                from_node_leaders(lambda: self.rank == 0 or self._mirror is None or self._mirror.wait())
            except ValueError:
                if self._mirror is not None and self.rank == 0:
                    self._mirror.abort()
                raise
        from_rank0(lambda: self._mirror and self._mirror.wait())

    def _save(self) -> None:
        self._mirror_done()  # the previous checkpoint is up before this save may prune it locally
        state = {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "loader": self.loader.state_dict(),
            "samples_per_step": self.samples_per_step,
            "layout": {"tensor": self.layout.tensor, "data": self.layout.data},
            **self._provenance().trainer_state(),
        }
        config = self._resolved_config()
        if self.node_local:  # every node writes rank 0's, so that the nodes' copies are the same bytes
            config, state = from_rank0(lambda: (config, state))
        with deepspeed_output(self.verbose):
            folder = checkpoint.save(
                self.engine,
                self.cfg.checkpoint.dir,
                self.step,
                config,
                state,
                self.cfg.checkpoint.keep_last,
                self.node_local,
            )
        if self.node_local:
            held = from_node_leaders(lambda: read_json(folder / checkpoint.CHECKSUMS)["files"])
            if self._mirror is not None:
                self._mirror.upload(folder, Part(self._node, split_by_node(held)))
        elif self._mirror is not None:
            self._mirror.upload(folder)

    def _provenance(self) -> Provenance:
        """The run's data and tokenizer, and on rank 0 (which writes the trainer state) its MLflow run."""
        if self.tracker is None:
            return self.data_facts
        return replace(self.data_facts, mlflow_run_id=self.tracker.run_id, tracking_uri=self.tracker.uri)

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def _print(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)


def _tracked(name: str, shards: ShardSet, context: str) -> TrackedData:
    """A shard folder (or one source of it) as an MLflow dataset: its manifest's sha256 names its content."""
    sha256 = shards.manifest_sha256
    profile = {
        "rows": len(shards),
        "tokens": sum(info.tokens for info in shards.infos),
        "shards": len(shards.infos),
        "seq_len": shards.seq_len,
        "manifest_sha256": sha256,
        "tokenizer": shards.manifest.tokenizer.name,
    }
    columns = {COLUMN: ("int32", (-1, shards.seq_len + 1))}
    return TrackedData(name, shards.uri, sha256, context, profile, columns)
