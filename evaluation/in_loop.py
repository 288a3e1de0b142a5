"""lm-eval tasks inside training (`eval.suite` of a training config), on the model being trained.

The tasks are loaded once, before the trainer builds its model, so a missing data set fails the run
at its start. Each evaluation wraps the training module in the `stablelm2` adapter without copying it
(no export round trip) and runs lm-eval's `evaluate` on `eval.limit` documents per task, with the
few-shot examples drawn again from the same seed, so every evaluation of a run sees the same prompts.

Several processes split the work explicitly: every rank builds all requests, as one process would, and
scores a contiguous share of them, and the scores are gathered to every rank. lm-eval's own rank
hooks (`LM.rank`, `world_size`, `gather_object`) shard documents instead, and since a task draws its
few-shot examples from one random stream in document order, a rank's prompts would then differ from
those of a one-process run; splitting the built requests keeps them identical for any world size.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import lm_eval.api.task
import torch.distributed as dist
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.evaluator import evaluate
from tqdm import tqdm

import tokenizer
from evaluation.adapter import StableLM2
from evaluation.loading import generator_for
from evaluation.run import mlflow_metrics
from evaluation.tasks import load_suite, load_tasks, task_manager
from training.model import StableLM

__all__ = ["FEWSHOT_SEED", "InLoopTasks", "TrainingModelLM", "request_bars_silenced"]

# lm-eval's default few-shot seed (simple_evaluate's), so in-loop prompts are those of `python -m evaluation`.
FEWSHOT_SEED = 1234

_Out = TypeVar("_Out")


class TrainingModelLM(StableLM2):
    """The `stablelm2` adapter over a model in memory, each rank scoring its share of the requests."""

    def __init__(self, model: StableLM, enc: tokenizer.Arcade100k, batch_size: int, max_gen_toks: int = 256):
        TemplateLM.__init__(self)
        self._use(model, generator_for(model), enc, batch_size, max_gen_toks)
        self.dtype = model.lm_head.weight.dtype
        distributed = dist.is_available() and dist.is_initialized()
        self.shard, self.shards = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        return self._split(super().loglikelihood, requests)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = True) -> list[float]:
        return self._split(super().loglikelihood_rolling, requests)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = True) -> list[str]:
        return self._split(super().generate_until, requests)

    def _split(self, run: Callable[..., list[_Out]], requests: Sequence[Instance]) -> list[_Out]:
        """`run` on this rank's contiguous share of `requests` (the choices of one document stay
        together, so they still share a forward), and everyone's results, in request order."""
        if self.shards == 1:
            return run(list(requests), disable_tqdm=True)
        bounds = [len(requests) * r // self.shards for r in range(self.shards + 1)]
        mine = requests[bounds[self.shard] : bounds[self.shard + 1]]
        outputs = run(list(mine), disable_tqdm=True) if mine else []
        gathered: list[list[_Out]] = [[] for _ in range(self.shards)]
        dist.all_gather_object(gathered, outputs)
        return [out for share in gathered for out in share]


class InLoopTasks:
    """The tasks of a suite, loaded once; `run` evaluates a model on them. The trainer's task evaluator
    (`training.task_evaluator`), which finds it through this project's entry points (pyproject.toml)."""

    def __init__(self, suite: str, limit: int | None, batch_size: int):
        spec = load_suite(suite)
        shots = spec.tasks
        self.names = list(shots)
        self.manager = task_manager(shots, spec.include_path)
        self.loaded = self.manager.load(load_tasks(self.manager, shots))
        for task in self.loaded["tasks"].values():
            if task.get_config("num_fewshot") is None:  # as simple_evaluate: 0 where the task sets none
                task.set_config(key="num_fewshot", value=0)
        self.limit, self.batch_size = limit, batch_size
        self.enc = tokenizer.load()

    def run(self, model: StableLM) -> dict[str, float]:
        """`eval/<task>/<metric>` for every task and group of the suite (stderrs too), on every rank."""
        for task in self.loaded["tasks"].values():
            task.set_fewshot_seed(seed=FEWSHOT_SEED)  # the same few-shot examples at every evaluation
        lm = TrainingModelLM(model, self.enc, self.batch_size)
        with request_bars_silenced():
            results: dict[str, Any] = evaluate(lm, self.loaded, limit=self.limit, log_samples=False)
        return mlflow_metrics(results)


@contextlib.contextmanager
def request_bars_silenced() -> Iterator[None]:
    """lm-eval draws a progress bar per task as it builds the requests (`Task.build_all_requests`): 14
    lines per evaluation of the bundled suite in the training log. Neither `evaluate` nor the task takes
    a switch for it, and TQDM_DISABLE is read when tqdm is first imported, long before this, so the
    `tqdm` of lm-eval's task module (private) is silenced here, and only here; a test fails when an
    lm-eval upgrade moves it."""
    lm_eval.api.task.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        lm_eval.api.task.tqdm = tqdm
