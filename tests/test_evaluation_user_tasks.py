"""The user's own lm-eval tasks and lm-eval's per-sample records: a task folder this project has never
seen run through `python -m evaluation run --include-path DIR --log-samples` and through a suite's
`include_path` in the in-loop evaluator, chat-formatted prompts with a system instruction, and the
one-line errors for a missing folder, an unknown task and a model without a chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from evaluation.__main__ import main as evaluation_main
from evaluation.in_loop import InLoopTasks
from evaluation.loading import build_models, load_evaluated
from evaluation.tasks import load_tasks, task_manager

TASK = "user_capitals"
DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "Rome", "Oslo"], "answer": 0},
    {"question": "The capital of Italy is", "choices": ["Paris", "Rome", "Oslo"], "answer": 1},
    {"question": "The capital of Norway is", "choices": ["Paris", "Rome", "Oslo"], "answer": 2},
    {"question": "The capital of Spain is", "choices": ["Madrid", "Lima", "Bern"], "answer": 0},
    {"question": "The capital of Peru is", "choices": ["Madrid", "Lima", "Bern"], "answer": 1},
]
SYSTEM = "Answer with one word."


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multiple-choice task over a local JSON-lines file, as a user would write one for lm-eval."""
    folder = tmp_path_factory.mktemp("my_tasks")
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {items}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: question\ndoc_to_choice: choices\n"
        "doc_to_target: answer\nmetric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
    )
    return folder


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def run(export: Path, out: Path, *args: str) -> int:
    return evaluation_main(["run", "--model", str(export), "--tasks", TASK, "--output", str(out), *args])


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_users_task_folder_runs_with_a_record_per_document(export, task_folder, tmp_path):
    out = tmp_path / "out"
    assert run(export, out, "--include-path", str(task_folder), "--log-samples", "--device", "cpu") == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", f"samples_{TASK}.jsonl"]
    results = json.loads((out / "results.json").read_text())
    assert "samples" not in results

    records = read_samples(out / f"samples_{TASK}.jsonl")
    assert sorted(r["doc_id"] for r in records) == list(range(len(DOCS)))
    for record in records:
        assert record["doc"] == DOCS[record["doc_id"]]
        assert record["target"] == str(DOCS[record["doc_id"]]["answer"])
        assert record["metrics"] == ["acc"] and record["acc"] in (0.0, 1.0)
        choices = DOCS[record["doc_id"]]["choices"]
        # One request per choice, its continuation after lm-eval's target delimiter.
        assert [a["arg_1"] for a in record["arguments"].values()] == [f" {c}" for c in choices]
        assert [a["arg_0"] for a in record["arguments"].values()] == [record["doc"]["question"]] * 3
        assert len(record["resps"]) == len(choices)
    mean = sum(r["acc"] for r in records) / len(records)
    assert results["results"][TASK]["acc,none"] == pytest.approx(mean)

    # A re-run into the same folder without --log-samples leaves no samples of the earlier run behind.
    assert run(export, out, "--include-path", str(task_folder), "--limit", "1", "--device", "cpu") == 0
    assert [p.name for p in out.iterdir()] == ["results.json"]


def test_chat_template_and_system_instruction_shape_every_prompt(export, task_folder, tmp_path):
    out = tmp_path / "out"
    flags = ["--include-path", str(task_folder), "--log-samples", "--limit", "2", "--device", "cpu"]
    assert run(export, out, *flags, "--apply-chat-template", "--system-instruction", SYSTEM) == 0
    records = read_samples(out / f"samples_{TASK}.jsonl")
    assert len(records) == 2
    for record in records:
        for argument in record["arguments"].values():
            question = record["doc"]["question"]
            assert argument["arg_0"] == (
                f"<|system|>\n{SYSTEM}<|endoftext|>\n<|user|>\n{question}<|endoftext|>\n<|assistant|>\n"
            )


def test_a_model_without_chat_template_is_refused_in_one_line(export, task_folder, tmp_path, capsys):
    plain = shutil.copytree(export, tmp_path / "plain")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert run(plain, tmp_path / "out", "--include-path", str(task_folder), "--apply-chat-template") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(plain) in error and "no chat template" in error
    assert not (tmp_path / "out").exists()


def test_a_missing_include_folder_and_an_unknown_task_are_named(export, task_folder, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run(export, tmp_path / "out", "--include-path", str(missing)) == 2
    error = capsys.readouterr().err
    assert error == f"error: include path {missing}: no such folder\n"
    manager = task_manager([TASK], [task_folder])  # knows the name: lm-eval's own index is not built
    with pytest.raises(ValueError, match=f"unknown task no_such_task .*{task_folder}"):
        load_tasks(manager, {"no_such_task": None})


def test_a_suites_include_path_is_relative_to_its_file(export, task_folder, tmp_path):
    suite = tmp_path / "suites" / "mine.yaml"
    suite.parent.mkdir()
    shutil.copytree(task_folder, tmp_path / "suites" / "tasks")
    suite.write_text(f"tasks:\n  {TASK}: 0\ninclude_path: [tasks]\n")
    evaluator = InLoopTasks(str(suite), limit=3, batch_size=4)
    assert evaluator.names == [TASK]
    trained, _, state_dict = load_evaluated(export)
    scorer, _ = build_models(trained.config, state_dict, torch.device("cpu"), torch.float32)
    metrics = evaluator.run(scorer)
    assert 0 <= metrics[f"eval/{TASK}/acc"] <= 1 and f"eval/{TASK}/acc_stderr" in metrics
