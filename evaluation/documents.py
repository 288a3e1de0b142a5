"""The evaluation documents the data job decontaminates training data against.

    python -m evaluation documents (--tasks A,B --out FILE | --data-config CONFIG)

Every evaluation document of the named lm-eval tasks (the bundled ones, and lm-eval's own whose data set
is on this machine) as the model is scored on it: its text, the target delimiter and the right answer
(or the task's own `doc_to_decontamination_query`), written to the eval documents file
(`pipeline.eval_documents`) that `decontam.documents` of a data config names. A task whose data set is
absent is recorded as missing, for the data job to name in its warning; an unknown name is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from lm_eval.api.group import Group
from lm_eval.api.task import Task

from common.config import ConfigError, load
from evaluation.tasks import MissingDataError, load_tasks, task_manager
from pipeline.config import DataConfig
from pipeline.eval_documents import EvalDocuments, write_eval_documents


def write_documents(names: Sequence[str], out: str | Path) -> EvalDocuments:
    """Write the eval documents file of tasks `names` to `out`; returns what it holds."""
    missing: list[str] = []
    documents = list(eval_documents(names, missing))
    docs = EvalDocuments(list(names), missing, documents)
    write_eval_documents(out, docs)
    return docs


def write_documents_of(data_config: str | Path) -> EvalDocuments | None:
    """The file a data config's decontamination reads (None when it names no task: nothing to write)."""
    decontam = load(data_config, DataConfig).decontam
    if not decontam.tasks:
        return None
    if decontam.documents is None:
        raise ConfigError(f"{data_config}: decontam.tasks needs decontam.documents, the file to write")
    return write_documents(decontam.tasks, decontam.documents)


def eval_documents(names: Sequence[str], missing: list[str]) -> Iterator[tuple[str, str]]:
    """(task, text) of each evaluation document; appends the names whose data are absent to `missing`."""
    manager = task_manager(names)
    for name in names:
        try:
            loaded = load_tasks(manager, {name: None})
        except MissingDataError:
            missing.append(name)
            continue
        except ValueError as e:
            raise ConfigError(f"decontam.tasks: {e}") from e
        for item in loaded:
            for task in item.get_all_tasks() if isinstance(item, Group) else [item]:
                for doc in task.eval_docs:
                    yield task.config.task, scored_text(task, doc)


def scored_text(task: Task, doc: dict) -> str:
    """The text the model is scored on: context, delimiter and right answer (lm-eval's own query
    when the task defines one)."""
    if task.should_decontaminate():
        return str(task.doc_to_decontamination_query(doc))
    text, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(text, int):  # Winogrande-style: the right context by index, one shared continuation
            text = choices[text]
        elif isinstance(target, int):
            target = choices[target]
    if isinstance(target, list):
        target = target[0] if target else ""
    return f"{text}{task.config.target_delimiter}{target}"
