"""What runs the lm-eval tasks of `eval.suite` on the model in training, and how the trainer finds it.

The evaluator lives above training (`evaluation.in_loop`), so training never imports it: the package
that provides one declares it under the entry-point group ENTRY_POINT_GROUP of its metadata
(pyproject.toml), and `installed_task_evaluator` builds it from there. A test may build an evaluator
itself and hand it to the Trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Protocol

from training.config import EvalConfig
from training.model import StableLM

__all__ = ["ENTRY_POINT_GROUP", "TaskEvaluator", "installed_task_evaluator"]

ENTRY_POINT_GROUP = "stablelm2.task_evaluators"


class TaskEvaluator(Protocol):
    """The tasks of a suite, loaded (their data found) before the trainer builds its model."""

    names: Sequence[str]  # the suite's own tasks or groups: what the training log prints

    def run(self, model: StableLM) -> dict[str, float]:
        """`eval/<task>/<metric>` of `model` as it is now, on every rank."""
        ...


def installed_task_evaluator(cfg: EvalConfig) -> TaskEvaluator:
    """The evaluator an installed package declares, built for `cfg.suite`, `cfg.limit` and
    `cfg.tasks_batch_size`; ValueError when none or several are installed."""
    found = entry_points(group=ENTRY_POINT_GROUP)
    if len(found) != 1:
        names = ", ".join(sorted(entry.value for entry in found)) or "none"
        raise ValueError(
            f"eval.suite is set, so the run needs one lm-eval task evaluator, declared under the entry "
            f"points {ENTRY_POINT_GROUP!r}; installed: {names} (reinstall the project: pip install -e .)"
        )
    (entry,) = found
    return entry.load()(cfg.suite, cfg.limit, cfg.tasks_batch_size)
