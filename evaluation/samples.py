"""Per-sample records of an evaluation (`python -m evaluation run --log-samples`): one JSON-lines file
per task beside results.json, `samples_<task>.jsonl`.

A record is what lm-eval's evaluator logs for one document (`doc_id`, `doc`, `target`, `arguments`,
`resps`, `filtered_resps`, `filter`, `metrics` and each metric's value, the hashes), laid out as
lm-eval's own CLI writes it (`EvaluationTracker.save_results_samples`: `arguments` as
`{"gen_args_<i>": {"arg_<j>": ...}}`, responses and target as strings), so tools that read lm-eval's
sample files read ours. Unlike lm-eval's `samples_<task>_<date>.jsonl`, the name carries no date: a
re-run into the same folder replaces the files, and removes those of tasks it did not run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lm_eval.utils import handle_non_serializable, sanitize_list

from common.files import write_text

__all__ = ["is_samples_file", "remove_other_samples", "samples_path", "write_samples"]

PREFIX, SUFFIX = "samples_", ".jsonl"


def samples_path(folder: Path, task: str) -> Path:
    """The samples file of `task` in `folder` (characters a file name should not hold become `_`)."""
    return folder / (PREFIX + re.sub(r"[^\w.-]", "_", task) + SUFFIX)


def is_samples_file(path: Path) -> bool:
    return path.name.startswith(PREFIX) and path.name.endswith(SUFFIX)


def write_samples(folder: Path, samples: Mapping[str, Iterable[dict[str, Any]]]) -> list[Path]:
    """Each task's records (lm-eval's `results["samples"]`) written atomically to its file in `folder`."""
    written = []
    for task, records in samples.items():
        lines = [json.dumps(_record(r), default=handle_non_serializable, ensure_ascii=False) for r in records]
        written.append(write_text(samples_path(folder, task), "".join(line + "\n" for line in lines)))
    return written


def remove_other_samples(folder: Path, keep: Iterable[Path]) -> None:
    """Delete the samples files in `folder` that an earlier run wrote and this one did not."""
    for path in set(filter(is_samples_file, folder.iterdir())) - set(keep):
        path.unlink()


def _record(sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` as lm-eval's CLI writes it (left unchanged: it is the caller's)."""
    arguments = {
        f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(args)}
        for i, args in enumerate(sample["arguments"])
    }
    return sample | {
        "arguments": arguments,
        "resps": sanitize_list(sample["resps"]),
        "filtered_resps": sanitize_list(sample["filtered_resps"]),
        "target": str(sample["target"]),
    }
