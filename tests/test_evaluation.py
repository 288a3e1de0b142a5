"""`python -m evaluation`: the CLI on a tiny export from another working directory (results table,
results.json, the MLflow run), a training checkpoint or an export as the model (the training run it
names as tags), the card suite failing offline with every missing data set named, and the bundled
tasks themselves."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_checkpoint
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from mlflow import MlflowClient

import tokenizer
from evaluation.adapter import StableLM2
from evaluation.in_loop import InLoopTasks, request_bars_silenced
from evaluation.loading import TokenizerMismatchError, load_evaluated
from evaluation.run import EXPERIMENT, evaluate, mlflow_metrics
from evaluation.tasks import ITEMS_DIR, TASKS_DIR, load_suite, load_tasks, task_manager
from harness.tiny_export import make_tiny_export
from training import task_evaluator
from training.__main__ import main as training_main
from training.config import EvalConfig
from training.hf import TRAINING_RUN
from training.task_evaluator import installed_task_evaluator
from training.trained import NotAModelError

ROOT = Path(__file__).resolve().parents[1]
MAKE_SCRIPT = ITEMS_DIR / "make.py"
LANGUAGES = ("en", "de", "es", "fr", "it", "nl", "pt")
CARD_DATA_SETS = (
    "allenai/ai2_arc",
    "Rowan/hellaswag",
    "cais/mmlu",
    "truthfulqa/truthful_qa",
    "allenai/winogrande",
    "openai/gsm8k",
)


def load_make_script():
    """data/eval/make.py, a script outside the packages, as a module."""
    spec = importlib.util.spec_from_file_location("eval_make", MAKE_SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


eval_make = load_make_script()


@pytest.fixture(scope="module", name="export")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_export(tmp_path_factory.mktemp("export"), seed=3, max_position_embeddings=256)


@pytest.fixture(scope="module", name="mlflow_uri")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.mark.slow
def test_cli_evaluates_an_export_from_any_directory(export, tmp_path, mlflow_uri):
    env = os.environ | {"MLFLOW_TRACKING_URI": mlflow_uri}
    command = [sys.executable, "-m", "evaluation", "run", "--model", str(export), "--suite", "bundled"]
    command += ["--limit", "2", "--batch-size", "8", "--output", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "|stablelm2_cloze|" in done.stdout and "| - pt " in done.stdout and "exact_match" in done.stdout

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["model"] == "stablelm2" and results["config"]["model_kind"] == "export"
    assert results["n-shot"]["stablelm2_gen_fr"] == 3 and results["n-shot"]["stablelm2_cloze_fr"] == 0
    assert {f"stablelm2_{kind}_{code}" for kind in ("cloze", "gen") for code in LANGUAGES} <= results[
        "results"
    ].keys()

    client = MlflowClient(mlflow_uri)
    run_id = done.stdout.split("MLflow run ")[1].split()[0]
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.status == "FINISHED"
    assert run.data.metrics == pytest.approx(mlflow_metrics(results))
    assert {
        "eval/stablelm2_cloze/acc",
        "eval/stablelm2_cloze_nl/acc_norm",
        "eval/stablelm2_gen/exact_match",
    } <= (run.data.metrics.keys())
    assert run.data.tags["tokenizer_fingerprint"] == tokenizer.load().fingerprint
    assert run.data.tags["model_path"] == str(export.resolve())
    assert [a.path for a in client.list_artifacts(run_id)] == ["results.json"]


def test_a_checkpoint_is_evaluated_and_tagged_with_its_training_run(export, tmp_path, mlflow_uri):
    root = make_checkpoint(export, tmp_path / "checkpoints", tokenizer.load().fingerprint)
    shots = {"stablelm2_cloze_it": None}
    done = evaluate(root, shots, tmp_path / "out", limit=2, batch_size=4, device="cpu")
    tags = MlflowClient(mlflow_uri).get_run(done.run_id).data.tags
    assert tags["training_run_id"] == "run-abc" and tags["checkpoint_step"] == "7"
    assert tags["data_manifest_sha256"] == "d" * 64 and tags["model_kind"] == "checkpoint"
    assert tags["checkpoint"] == str((root / "step_00000007").resolve())
    assert tags["training_experiment"] == "tiny-exp"  # what an export of it would name (training_run.json)
    # The same weights as the export: the same scores.
    from_export = evaluate(export, shots, tmp_path / "out2", limit=2, batch_size=4, device="cpu")
    assert done.results["results"] == from_export.results["results"]


def test_an_export_names_its_training_run_and_its_evaluation_is_tagged_with_it(export, tmp_path, mlflow_uri):
    fingerprint = tokenizer.load().fingerprint
    root = make_checkpoint(export, tmp_path / "checkpoints", fingerprint)
    out = tmp_path / "export"
    assert training_main(["export", str(root), str(out)]) == 0
    assert json.loads((out / TRAINING_RUN).read_text()) == {
        "mlflow_run_id": "run-abc",
        "experiment": "tiny-exp",
        "tracking_uri": "sqlite:///elsewhere/mlflow.db",
        "data_manifest_sha256": "d" * 64,
        "tokenizer_fingerprint": fingerprint,
        "step": 7,
        "checkpoint": str((root / "step_00000007").resolve()),
    }
    done = evaluate(out, {"stablelm2_cloze_it": None}, tmp_path / "out", limit=2, batch_size=4, device="cpu")
    run = MlflowClient(mlflow_uri).get_run(done.run_id)
    tags = run.data.tags
    assert tags["model_kind"] == "export" and tags["training_run_id"] == "run-abc"
    assert tags["training_experiment"] == "tiny-exp"
    assert tags["training_tracking_uri"] == "sqlite:///elsewhere/mlflow.db"
    assert tags["data_manifest_sha256"] == "d" * 64 and tags["tokenizer_fingerprint"] == fingerprint
    assert tags["checkpoint_step"] == "7" and tags["checkpoint"] == str((root / "step_00000007").resolve())
    history = MlflowClient(mlflow_uri).get_metric_history(done.run_id, "eval/stablelm2_cloze_it/acc")
    assert [m.step for m in history] == [7]  # the metrics sit at the step the export was trained to


def test_a_checkpoint_of_another_tokenizer_or_a_path_that_is_neither_is_refused(export, tmp_path):
    root = make_checkpoint(export, tmp_path / "checkpoints", "0" * 64)
    with pytest.raises(TokenizerMismatchError, match="trained with tokenizer 000000000000"):
        load_evaluated(root)
    with pytest.raises(NotAModelError, match="no config.json.*nor a training checkpoint"):
        load_evaluated(tmp_path)
    with pytest.raises(NotAModelError, match="no such file"):
        load_evaluated(tmp_path / "missing")


def test_the_card_suite_names_every_missing_data_set_without_downloading(tmp_path):
    """HF_HOME points at an empty cache and the network is not switched off here: the CLI must set
    offline mode itself, or `datasets` would try the Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {"HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "evaluation", "run", "--model", str(tmp_path), "--suite", "card"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr.split("error: ", 1)[1]
    for task, data_set in zip(load_suite("card").tasks, CARD_DATA_SETS, strict=True):
        assert f"  {task}: {data_set} (" in error
    assert "OfflineModeIsEnabled" in error and "lm_eval --model dummy" in error
    assert not (tmp_path / "hf" / "hub").exists()


def test_the_card_suite_holds_the_model_cards_shots():
    assert load_suite("card").tasks == {
        "arc_challenge": 25,
        "hellaswag": 10,
        "mmlu": 5,
        "truthfulqa_mc2": 0,
        "winogrande": 5,
        "gsm8k": 5,
    }


def test_bundled_task_files_are_what_their_script_writes(tmp_path):
    written = eval_make.write_tasks(tmp_path / "tasks", tmp_path / "items")
    committed = {tmp_path / "tasks": TASKS_DIR, tmp_path / "items": ITEMS_DIR}
    for scratch, folder in committed.items():
        ours = sorted(p.relative_to(scratch).as_posix() for p in written if p.is_relative_to(scratch))
        # data/eval holds the script itself beside its items.
        committed_files = [p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
        assert ours == sorted(p.relative_to(folder).as_posix() for p in committed_files)
    for path in written:
        scratch = next(s for s in committed if path.is_relative_to(s))
        assert path.read_bytes() == (committed[scratch] / path.relative_to(scratch)).read_bytes(), path


@pytest.mark.parametrize("code", LANGUAGES)
def test_bundled_items_are_well_formed_in_every_language(code):
    cloze = eval_make.cloze_items(code)
    generation = eval_make.generation_items(code)
    assert len(cloze) == 41 and len(generation) == 37
    for item in cloze:
        assert len(set(item["choices"])) == 4 and 0 <= item["answer"] < 4
    assert all(item["answer"].strip() and "\n" not in item["answer"] for item in generation)
    lang = eval_make.LANGUAGES[code]
    assert {i["choices"][i["answer"]] for i in cloze if "-day-" in i["id"]} == set(lang.days)
    for items in (cloze, generation):
        assert len({i["id"] for i in items}) == len(items)


def test_bundled_tasks_load_from_any_directory_with_their_splits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shots = {"stablelm2_cloze": None, "stablelm2_gen": None}
    groups = load_tasks(task_manager(shots), shots)
    tasks = {task.task_name: task for group in groups for task in group.get_all_tasks()}
    assert sorted(tasks) == sorted(f"stablelm2_{k}_{c}" for k in ("cloze", "gen") for c in LANGUAGES)
    assert sum(len(task.test_docs()) for task in tasks.values()) == 7 * (41 + 37) - 14 * eval_make.FEWSHOT
    assert all(len(task.fewshot_docs()) == eval_make.FEWSHOT for task in tasks.values())


def test_unknown_tasks_are_named_with_the_bundled_groups():
    bundled_only = task_manager(["stablelm2_cloze"])  # lm-eval's own index (~10 s) would change nothing
    with pytest.raises(ValueError, match="unknown task no_such_task .*stablelm2_cloze, stablelm2_gen"):
        load_tasks(bundled_only, {"no_such_task": None})


def test_stablelm2_is_registered_beside_lm_evals_own_models():
    assert get_model("stablelm2") is StableLM2
    assert get_model("hf").__name__ == "HFLM"


def test_sampling_is_refused(export):
    lm = StableLM2(str(export), device="cpu")
    request = Instance(
        "generate_until", {}, ("Hi", {"until": ["\n"], "do_sample": True, "temperature": 1}), 0
    )
    with pytest.raises(ValueError, match="decodes greedily"):
        lm.generate_until([request])


def test_mlflow_metrics_are_named_by_task_metric_and_filter():
    results = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.25,
                "exact_match_stderr,strict-match": 0.01,
                "exact_match,flexible-extract": 0.5,
            },
            "arc_challenge": {"acc,none": 0.5, "acc_stderr,none": "N/A", "acc_norm,none": float("nan")},
        }
    }
    assert mlflow_metrics(results) == {
        "eval/gsm8k/exact_match.strict-match": 0.25,
        "eval/gsm8k/exact_match_stderr.strict-match": 0.01,
        "eval/gsm8k/exact_match.flexible-extract": 0.5,
        "eval/arc_challenge/acc": 0.5,
    }


def test_request_bars_are_silenced_where_lm_eval_draws_them(capfd):
    """lm-eval has no switch for the bar it draws per task while building requests, so
    `request_bars_silenced` patches its task module's private `tqdm`: this fails when an upgrade moves it."""
    (task,) = task_manager(["stablelm2_cloze_en"]).load("stablelm2_cloze_en")["tasks"].values()
    task.build_all_requests(limit=3, rank=0, world_size=1)
    assert "3/3" in capfd.readouterr().err
    with request_bars_silenced():
        task.build_all_requests(limit=3, rank=0, world_size=1)
    assert "3/3" not in capfd.readouterr().err
    assert len(task.instances) == 3 * 4  # the requests were built all the same: 4 choices per document


def test_training_finds_the_in_loop_tasks_through_the_entry_points_or_says_none_is_installed(
    tmp_path, monkeypatch
):
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n  stablelm2_cloze_en: null\n")
    cfg = EvalConfig(suite=str(suite), limit=2, tasks_batch_size=4)
    evaluator = installed_task_evaluator(cfg)
    assert isinstance(evaluator, InLoopTasks) and evaluator.names == ["stablelm2_cloze_en"]
    assert (evaluator.limit, evaluator.batch_size) == (2, 4)
    monkeypatch.setattr(task_evaluator, "ENTRY_POINT_GROUP", "stablelm2.no_such_group")
    with pytest.raises(ValueError, match="needs one lm-eval task evaluator.*installed: none"):
        installed_task_evaluator(cfg)
