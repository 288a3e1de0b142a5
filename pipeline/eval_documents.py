"""The eval documents file: what the evaluation side hands the data job to decontaminate against.

`python -m evaluation documents` writes it (evaluation/documents.py, which loads lm-eval) and
`pipeline.decontam` reads it, so the data job never imports lm-eval. JSON lines: a header,
`{"tasks": [the names asked for], "missing": [those whose data set is not on this machine]}`, then a
line per evaluation document, `{"task": its lm-eval task, "text": the text the model is scored on}`, in
lm-eval's order (the order the eval keys, and so their fingerprint, are built in).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, NamedTuple

from common.files import atomic_write


class EvalDocuments(NamedTuple):
    tasks: list[str]  # the task, group or tag names the file was written for
    missing: list[str]  # those whose data set was absent: no document of theirs is in the file
    documents: list[tuple[str, str]]  # (task, scored text)


def write_eval_documents(path: str | Path, docs: EvalDocuments) -> Path:
    """Create or replace the file at once: a killed writer leaves no partial file."""

    def write(f: IO[bytes]) -> None:
        f.write(_line({"tasks": docs.tasks, "missing": docs.missing}))
        for task, text in docs.documents:
            f.write(_line({"task": task, "text": text}))

    return atomic_write(path, write)


def read_eval_documents(path: str | Path) -> EvalDocuments:
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        documents = [(doc["task"], doc["text"]) for doc in map(json.loads, f)]
    return EvalDocuments(header["tasks"], header["missing"], documents)


def _line(obj: dict) -> bytes:
    # ASCII escapes: any string, lone surrogates included, reads back exactly as it was written.
    return (json.dumps(obj) + "\n").encode("ascii")
