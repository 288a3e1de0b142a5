"""Run a pipeline stage in the test's own process, task by task (the data job runs stages on Ray)."""

from __future__ import annotations

from typing import Any, Protocol


class _Stage(Protocol):
    def todo(self) -> list[Any]: ...

    def run(self, task: Any) -> Any: ...


def run_in_process(stage: _Stage) -> None:
    """Run a stage's unfinished tasks one by one (a `pipeline.stage.Stage`, or any with `todo` and `run`)."""
    for task in stage.todo():
        stage.run(task)
