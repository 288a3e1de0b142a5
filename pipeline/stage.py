"""A stage: a list of tasks, what runs one, and how a finished one is recognized.

A task's outputs are atomic and a marker file written last says it finished, so `is_done` is a file
check: a re-run after a kill skips the finished tasks and redoes only the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray

T = TypeVar("T")


@dataclass(frozen=True)
class Stage(Generic[T]):
    name: str
    tasks: Sequence[T]
    # Runs one task and returns a few numbers about it, printed as the task finishes.
    run: Callable[[T], dict[str, Any]]
    is_done: Callable[[T], bool]

    def todo(self) -> list[T]:
        return [task for task in self.tasks if not self.is_done(task)]


Runner = Callable[[Stage[Any]], None]


def run_in_process(stage: Stage[Any]) -> None:
    """Run a stage's unfinished tasks one by one, for direct calls; the pipeline runs them on Ray."""
    for task in stage.todo():
        stage.run(task)


def run_on_ray(stage: Stage[Any]) -> None:
    """Run the unfinished tasks of a stage as a Ray Data job, printing a line per finished task."""
    todo = stage.todo()
    done = len(stage.tasks) - len(todo)
    print(
        f"[{stage.name}] {len(todo)} of {len(stage.tasks)} partitions to run ({done} done before)", flush=True
    )
    if not todo:
        return
    start = time.time()
    run = stage.run
    # Ray Data rows are dicts: a row carries only its task's position in `todo`, which travels with
    # the function, so a task of any type reaches `run` as it is.
    rows = ray.data.from_items([{"task": i} for i in range(len(todo))], override_num_blocks=len(todo))
    results = rows.map(lambda row: run(todo[row["task"]]))
    for i, result in enumerate(results.iter_rows(), 1):
        detail = ", ".join(f"{k}={v}" for k, v in result.items())
        print(f"[{stage.name}] {i}/{len(todo)} {detail}", flush=True)
    print(f"[{stage.name}] done in {time.time() - start:.1f}s", flush=True)
