"""One evaluation: tasks loaded (their data checked first), the model run through lm-eval's
`simple_evaluate` as `stablelm2`, and the results recorded:

- `<output>/results.json`: what `simple_evaluate` returns, made JSON the way lm-eval's own CLI makes it
  (its `config` holds the model's provenance, from `StableLM2.get_model_info`). `<output>` may be absent,
  empty or an earlier evaluation's output (`is_eval_output`), never a folder holding anything else;
- with `log_samples`, `<output>/samples_<task>.jsonl` beside it: lm-eval's per-document records
  (`evaluation.samples`);
- an MLflow run in experiment `eval`: every numeric metric as `eval/<task>/<metric>` (a metric under a
  filter other than lm-eval's `none` is `<metric>.<filter>`), results.json as an artifact, and tags
  naming the model and its training run, data manifest and tokenizer (its `training.provenance`: what a
  checkpoint or an export's training_run.json names).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.utils import handle_non_serializable

import evaluation.adapter  # noqa: F401 (registers `stablelm2` with lm-eval)
from common.files import check_output_folder, check_writable, read_json, write_text
from common.tracking import Tracker, find_logged_model, git_commit
from evaluation.loading import check_chat_template
from evaluation.samples import is_samples_file, remove_other_samples, write_samples
from evaluation.tasks import load_tasks, task_manager
from training.provenance import TRAINING_RUN_TAGS

__all__ = ["EXPERIMENT", "RESULTS", "Evaluation", "evaluate", "is_eval_output", "mlflow_metrics"]

EXPERIMENT = "eval"
RESULTS = "results.json"
# Keys of results["config"] (from StableLM2.get_model_info) that become the MLflow run's tags.
TAG_KEYS = ("model_path", "model_kind", "model_dtype", "model_device", *TRAINING_RUN_TAGS)


@dataclass(frozen=True)
class Evaluation:
    results: dict[str, Any]
    path: Path  # results.json
    run_id: str
    tracking_uri: str


def evaluate(
    model: str | Path,
    shots: Mapping[str, int | None],
    output: Path,
    *,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    dtype: str = "float32",
    device: str = "auto",
    include_paths: Sequence[str | Path] = (),
    log_samples: bool = False,
    apply_chat_template: bool = False,
    system_instruction: str | None = None,
) -> Evaluation:
    """Run the tasks `shots` names (name -> few-shot examples, None: the task's own; `num_fewshot`
    overrides all but tasks fixed at 0, as in lm-eval) on the export or checkpoint `model`; task names
    are looked up in `include_paths` too. The last three are lm-eval's `simple_evaluate` options; a model
    without a chat template is refused `apply_chat_template` before any work."""
    check_output_folder(output, is_eval_output, f"an earlier evaluation's {RESULTS}")  # before any work
    check_writable(output)  # not hours later, when the results are there to write
    if apply_chat_template:
        check_chat_template(model)
    manager = task_manager(shots, include_paths)
    tasks = load_tasks(manager, shots)  # before the model: a missing data set fails in seconds
    results = lm_eval.simple_evaluate(
        model="stablelm2",
        model_args={"pretrained": str(model), "dtype": dtype},
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        device=device,
        task_manager=manager,
        log_samples=log_samples,
        apply_chat_template=apply_chat_template,
        system_instruction=system_instruction,
    )
    samples = write_samples(Path(output), results.pop("samples", {}))
    path = write_text(
        Path(output) / RESULTS,
        json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n",
    )
    remove_other_samples(Path(output), samples)  # an earlier run's, which results.json no longer scores
    params = {
        "tasks": ",".join(f"{name}:{n}" for name, n in shots.items()),
        "num_fewshot": str(num_fewshot),
        "limit": str(limit),
        "batch_size": str(batch_size),
        "apply_chat_template": str(apply_chat_template),
        "system_instruction": str(system_instruction),
        "lm_eval_version": lm_eval.__version__,
    }
    tracker = _track(results, path, params)
    return Evaluation(results, path, tracker.run_id, tracker.uri)


def is_eval_output(folder: Path) -> bool:
    """Whether `folder` holds nothing but the RESULTS of an earlier evaluation of ours (its model is
    lm-eval's `stablelm2`) and its samples files."""
    others = {path.name for path in folder.iterdir() if not is_samples_file(path)}
    if others != {RESULTS} or not (folder / RESULTS).is_file():
        return False
    try:
        results = read_json(folder / RESULTS)
    except ValueError:  # not UTF-8 JSON: not ours
        return False
    config = results.get("config") if isinstance(results, dict) else None
    return isinstance(config, dict) and config.get("model") == "stablelm2"


def _track(results: dict[str, Any], path: Path, params: dict[str, str]) -> Tracker:
    info = results["config"]
    tags = {key: str(info[key]) for key in TAG_KEYS if key in info} | {"git_commit": git_commit()}
    tracker = Tracker.open(EXPERIMENT, Path(info["model_path"]).name, params=params, tags=tags)
    try:
        model_id = _logged_model(info, tracker.uri)
        if model_id is not None:  # the scores are the model's too: its page shows them over steps
            tracker.log_model_input(model_id)
        step = int(info.get("checkpoint_step", 0))
        tracker.log_metrics(mlflow_metrics(results), step=step, model_id=model_id)
        tracker.log_artifact(path)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return tracker


def _logged_model(info: Mapping[str, Any], uri: str) -> str | None:
    """The MLflow logged model that `python -m training export` made of the evaluated export, when its
    training run is in this store."""
    run_id = info.get("training_run_id")
    if info.get("model_kind") != "export" or run_id is None:
        return None
    return find_logged_model(uri, str(info["model_path"]), str(run_id))


def mlflow_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number among lm-eval's per-task (and per-group) results, as `eval/<task>/<metric>`;
    lm-eval's keys are `<metric>,<filter>`, and MLflow names may not hold a comma."""
    metrics = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                metric = name if filter_name == "none" else f"{name}.{filter_name}"
                metrics[f"eval/{task}/{metric}"] = float(value)
    return metrics
