"""Which lm-eval tasks to run: lm-eval's own, the bundled ones (configs/eval/tasks) and the user's own
(task YAMLs in include folders, as lm-eval's `--include_path` reads them), by name or as a suite
(configs/eval/<name>.yaml: task names with their shot counts, and the include folders they need).

Data are never downloaded (the package sets HF_DATASETS_OFFLINE and HF_HUB_OFFLINE): a task whose data set
is not in the local Hugging Face cache fails to load, and `load_tasks` names every such data set at
once, before any model is loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated

from lm_eval.api.group import Group
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager
from pydantic import Field

from common.config import CONFIG_DIR, Config, load

__all__ = [
    "ITEMS_DIR",
    "REPO_ROOT",
    "SUITES_DIR",
    "TASKS_DIR",
    "MissingDataError",
    "Suite",
    "load_suite",
    "load_tasks",
]

REPO_ROOT = CONFIG_DIR.parent
SUITES_DIR = CONFIG_DIR / "eval"
TASKS_DIR = SUITES_DIR / "tasks"
# The bundled tasks' items (JSONL), beside the sample corpus: configs/ holds YAML only.
ITEMS_DIR = REPO_ROOT / "data" / "eval"


class MissingDataError(RuntimeError):
    """Tasks whose data sets are not on this machine; the message names each and how to fetch them."""


class Suite(Config):
    """A named set of tasks: lm-eval task, group or tag name -> few-shot examples (null: the task's own),
    and the folders of task YAMLs (the user's own) that some of those names live in."""

    description: str = ""
    tasks: dict[str, Annotated[int, Field(ge=0)] | None]
    # Folders of task YAMLs besides lm-eval's and the bundled ones; relative to the suite file.
    include_path: list[Path] = []


def load_suite(name: str) -> Suite:
    """configs/eval/<name>.yaml, or the YAML file `name` is a path to; its include folders made absolute."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else SUITES_DIR / f"{name}.yaml"
    suite = load(path, Suite)
    return suite.model_copy(update={"include_path": [path.parent / p for p in suite.include_path]})


def task_manager(names: Iterable[str], include_paths: Sequence[str | Path] = ()) -> TaskManager:
    """lm-eval's task index over the bundled tasks and the folders `include_paths`, and over lm-eval's
    own only when a name needs them (indexing its ~15,000 YAML files takes ~10 s). ValueError for an
    include folder that is not one."""
    if missing := [str(p) for p in include_paths if not Path(p).is_dir()]:
        raise ValueError(f"include path {', '.join(missing)}: no such folder")
    folders = [str(TASKS_DIR), *map(str, include_paths)]
    manager = TaskManager(include_path=folders, include_defaults=False)
    if not all(name in manager.task_index for name in names):
        manager = TaskManager(include_path=folders)
    _pin_bundled_data(manager)
    return manager


def _pin_bundled_data(manager: TaskManager) -> None:
    """lm-eval hands `dataset_kwargs.data_files` to `datasets` as written, so the bundled tasks' paths,
    relative to the repository root (what `lm_eval --include_path configs/eval/tasks` reads when run
    from the root), would resolve against the working directory. Each bundled task's index entry gets
    its whole config (as indexed: includes resolved) with absolute paths in place of its YAML file, which
    lm-eval would read again, so any working directory works."""
    for name in manager.all_subtasks:
        entry = manager.task_index[name]
        if entry.yaml_path is not None and entry.yaml_path.is_relative_to(TASKS_DIR):
            config = copy.deepcopy(entry.cfg)
            files = config["dataset_kwargs"]["data_files"]
            config["dataset_kwargs"]["data_files"] = {split: str(REPO_ROOT / f) for split, f in files.items()}
            entry.cfg, entry.yaml_path = config, None


def load_tasks(manager: TaskManager, shots: Mapping[str, int | None]) -> list[Task | Group]:
    """Each named task, group or tag built, its data read, with its shot count when one is given.
    Raises ValueError for an unknown name and MissingDataError naming every data set not on this machine."""
    if unknown := [name for name in shots if name not in manager.task_index]:
        bundled = [
            name
            for name in manager.all_groups
            if (path := manager.task_index[name].yaml_path) is not None and path.is_relative_to(TASKS_DIR)
        ]
        folders = ", ".join(map(str, manager.include_path))
        raise ValueError(
            f"unknown task {', '.join(unknown)} (not among lm-eval's tasks nor in {folders}; "
            f"bundled groups: {', '.join(bundled)})"
        )
    built: list[Task | Group] = []
    missing: list[str] = []
    for name, num_fewshot in shots.items():
        try:
            loaded = manager.load(name)
        except OSError as e:  # datasets' offline and not-found errors are ConnectionError / FileNotFoundError
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            missing.append(f"  {name}: {', '.join(dataset_paths(manager, name))} ({reason})")
            continue
        for task in loaded["tasks"].values():
            if num_fewshot is not None:
                task.set_config(key="num_fewshot", value=num_fewshot)
        built += [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    if missing:
        raise MissingDataError(
            "these tasks need Hugging Face data sets that are not in this machine's cache, and evaluation "
            "never downloads:\n" + "\n".join(missing) + "\nOn a machine with network, "
            f"`lm_eval --model dummy --tasks {','.join(shots)} --limit 1` fills its cache "
            "(~/.cache/huggingface); copy that folder here, or point HF_HOME at a copy."
        )
    return built


def dataset_paths(manager: TaskManager, name: str) -> list[str]:
    """The Hugging Face data sets (`dataset_path`) that a task, group or tag reads."""
    entry = manager.task_index[name]
    if name in manager.all_subtasks:
        return [path] if (path := (entry.cfg or {}).get("dataset_path")) else []
    members = entry.tags if name in manager.all_tags else (entry.cfg or {}).get("task", [])
    return sorted(
        {
            path
            for member in members
            if isinstance(member, str) and member in manager.task_index
            for path in dataset_paths(manager, member)
        }
    )
