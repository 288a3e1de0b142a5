"""A stage: a list of tasks, what runs one, and how a finished one is recognized.

A task's outputs are atomic and a marker file written last says it finished, so `is_done` is a file
check: a re-run after a kill skips the finished tasks and redoes only the others.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

import ray

from pipeline.workfiles import exists

if TYPE_CHECKING:
    from pipeline.plan import Partition
    from pipeline.workdir import WorkDir

T = TypeVar("T")
# Off a terminal (a log file), a long stage still prints its progress line this often.
HEARTBEAT_S = 60.0


@dataclass(frozen=True)
class Stage(Generic[T]):
    name: str
    tasks: Sequence[T]
    # Runs one task and returns counts about it (documents, rows...), summed on the stage's progress line.
    run: Callable[[T], dict[str, int]]
    is_done: Callable[[T], bool]

    def todo(self) -> list[T]:
        return [task for task in self.tasks if not self.is_done(task)]


Runner = Callable[[Stage[Any]], None]


def partition_stage(
    name: str, work: WorkDir, parts: Sequence[Partition], run: Callable[[Partition], dict[str, int]]
) -> Stage[Partition]:
    """One task per partition, done when its `stats/<name>/<pid>.json` (written last) exists."""
    return Stage(name, parts, run, lambda part: exists(work.stats(name, part.pid)))


class Progress:
    """One line per stage instead of one per task: rewritten in place on a terminal; in a log file,
    printed when the stage ends (and every HEARTBEAT_S of a long one, so the log shows it alive)."""

    def __init__(self, name: str, total: int, unit: str, done_before: int = 0, out: TextIO | None = None):
        self.name, self.total, self.unit, self.done_before = name, total, unit, done_before
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.done = done_before
        self.counts: Counter[str] = Counter()
        self.start = self.shown = time.monotonic()

    def advance(self, counts: Mapping[str, int] | None = None) -> None:
        """One more task finished, with its counts."""
        self.done += 1
        self.counts.update(counts or {})
        now = time.monotonic()
        if self.tty:
            self._show(self._line(), end="")
        elif now - self.shown >= HEARTBEAT_S:
            self._show(self._line())
            self.shown = now

    def finish(self) -> None:
        before = f", {self.done_before} done before" if self.done_before else ""
        self._show(f"{self._line()}{before}, {time.monotonic() - self.start:.1f}s")

    def _line(self) -> str:
        counts = " ".join(f"{k}={v:,}" for k, v in self.counts.items())
        return f"[{self.name}] {self.done}/{self.total} {self.unit}" + (f": {counts}" if counts else "")

    def _show(self, line: str, end: str = "\n") -> None:
        # "\r" and "erase to the end of the line" rewrite the terminal's current line in place.
        self.out.write(f"\r{line}\x1b[K{end}" if self.tty else f"{line}{end}")
        self.out.flush()


def run_on_ray(stage: Stage[Any]) -> None:
    """Run the unfinished tasks of a stage as a Ray Data job, with one progress line."""
    todo = stage.todo()
    progress = Progress(stage.name, len(stage.tasks), "tasks", done_before=len(stage.tasks) - len(todo))
    if todo:
        run = stage.run
        # A task's own exception, not Ray Data's UserCodeException around it: one that stops the job
        # with its own line (`SourceUnreachable`) reaches the driver as that class.
        ray.data.DataContext.get_current().raise_original_map_exception = True
        # Ray Data rows are dicts: a row carries only its task's position in `todo`, which travels with
        # the function, so a task of any type reaches `run` as it is.
        rows = ray.data.from_items([{"task": i} for i in range(len(todo))], override_num_blocks=len(todo))
        rows.set_name(stage.name)

        def one_task(row: dict[str, int]) -> dict[str, int]:
            return run(todo[row["task"]])

        # Ray Data names an operator, and the dashboard its tasks, after the function: `Map(<stage>)`.
        one_task.__name__ = one_task.__qualname__ = stage.name
        for result in rows.map(one_task).iter_rows():
            progress.advance(result)
    progress.finish()
