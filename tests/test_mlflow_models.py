"""MLflow 3's model-centric records, end to end on one micro training run: the shards as the run's
dataset inputs (logged once, a resume adds none), an export as a logged model at its step with that
step's metrics, a registered version of it, an evaluation's scores on the model, and the server pointed
at the version. Logging and resolving run against the local sqlite store and a real `mlflow server`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import MICRO_MODEL, api_post, make_checkpoint, micro_config, started_server
from mlflow import MlflowClient

import tokenizer
from common.shards import manifest_hash, read_manifest
from common.tracking import EXPORT_TAG, Tracker, find_logged_model, log_export_model, register_model
from serving.__main__ import main as serving_main
from serving.model_path import ModelError, export_to_serve
from training.__main__ import main as training_main
from training.trainer import Trainer

NAME = "micro"


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, shards: Path, mlflow_store: str, mlflow_server_started
) -> dict:
    """2 steps, then a resume to 3 (validation at 2 and 3), exported at step 3 and registered. (The
    tracking server, for the last test, starts meanwhile.)"""
    tmp = tmp_path_factory.mktemp("run")
    model = {**MICRO_MODEL, "max_position_embeddings": 256}  # room for an evaluation's prompts
    sections = {"model": model, "eval": {"interval": 2, "batches": 1}}
    first = Trainer(micro_config(tmp, shards, schedule={"warmup_steps": 1, "total_steps": 2}, **sections))
    run_id = first.fit().run_id
    Trainer(micro_config(tmp, shards, schedule={"warmup_steps": 1, "total_steps": 3}, **sections)).fit()
    export = tmp / "export"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = training_main(["export", str(tmp / "ckpt"), str(export), "--register", NAME])
    assert code == 0, out.getvalue()
    return {"run_id": run_id, "export": export, "stdout": out.getvalue(), "uri": mlflow_store}


def test_the_run_logs_its_shards_as_dataset_inputs_once(run, shards):
    inputs = MlflowClient(run["uri"]).get_run(run["run_id"]).inputs.dataset_inputs
    by_context = {}
    for found in inputs:
        (tag,) = found.tags
        assert tag.key == "mlflow.data.context"
        by_context.setdefault(tag.value, []).append(found.dataset)
    (train,) = by_context.pop("training")  # the resume logged none again
    (valid,) = by_context.pop("validation")  # the split names no sources: one, `all`
    assert not by_context
    sha256 = manifest_hash(shards)
    assert sha256.startswith(train.digest) and len(train.digest) == 36  # MLflow's longest digest
    assert json.loads(train.profile)["manifest_sha256"] == sha256
    assert json.loads(train.profile)["tokens"] == read_manifest(shards).tokens
    assert json.loads(train.source) == {"uri": shards.resolve().as_uri()} and train.source_type == "local"
    assert "input_ids" in train.schema and "int32" in train.schema
    assert valid.name == f"{shards.name}/valid/all" and manifest_hash(shards / "valid").startswith(
        valid.digest
    )


def test_the_export_is_a_logged_model_at_its_step_with_that_steps_metrics(run):
    client = MlflowClient(run["uri"])
    training = client.get_run(run["run_id"])
    (model,) = client.search_logged_models([training.info.experiment_id])
    assert model.model_id in run["stdout"] and model.source_run_id == run["run_id"]
    assert model.status.to_int() == model.status.READY.to_int() and model.model_type == "stablelm2"
    assert model.tags[EXPORT_TAG] == str(run["export"].resolve()) and model.tags["checkpoint_step"] == "3"
    assert model.params["model.hidden_size"] == "64" and model.params["precision"] == "fp32"
    assert [(o.model_id, o.step) for o in training.outputs.model_outputs] == [(model.model_id, 3)]
    metrics = {m.key: m for m in model.metrics}
    assert {"loss", "val_loss", "lr"} <= metrics.keys() and {m.step for m in metrics.values()} == {3}
    for key, steps in (("loss", [1, 2, 3]), ("val_loss", [2, 3])):
        history = client.get_metric_history(run["run_id"], key)
        assert metrics[key].value == next(m.value for m in history if m.step == 3)
        assert sorted(m.step for m in history) == steps  # none logged twice
    version = client.get_model_version(NAME, "1")  # linked both ways, as mlflow.register_model links them
    assert version.source == f"models:/{model.model_id}" and version.run_id == run["run_id"]
    assert json.loads(client.get_logged_model(model.model_id).tags["mlflow.modelVersions"]) == [
        {"name": NAME, "version": "1"}
    ]
    assert f"registered models:/{NAME}/1" in run["stdout"]


def test_an_evaluation_of_the_export_is_logged_on_its_model(run, tmp_path):
    from evaluation.run import evaluate  # lm-eval takes seconds to import

    done = evaluate(
        run["export"], {"stablelm2_cloze_it": None}, tmp_path / "out", limit=2, batch_size=4, device="cpu"
    )
    client = MlflowClient(run["uri"])
    model_id = find_logged_model(run["uri"], str(run["export"].resolve()), run["run_id"])
    scores = {m.key: m for m in client.get_logged_model(model_id).metrics if m.key.startswith("eval/")}
    assert scores["eval/stablelm2_cloze_it/acc"].step == 3  # the model's step: its page plots them by step
    assert (
        scores["eval/stablelm2_cloze_it/acc"].value
        == done.results["results"]["stablelm2_cloze_it"]["acc,none"]
    )
    assert [m.model_id for m in client.get_run(done.run_id).inputs.model_inputs] == [model_id]


def test_a_registered_version_resolves_to_its_export_by_number_or_alias_else_one_line(run, capsys):
    MlflowClient(run["uri"]).set_registered_model_alias(NAME, "best", "1")
    for uri in (f"models:/{NAME}/1", f"models:/{NAME}@best"):
        assert export_to_serve(uri) == (run["export"].resolve(), None)
    for unknown in (f"models:/{NAME}/9", "models:/nobody/1", f"models:/{NAME}@worst", "models:/x/y/z"):
        with pytest.raises(ModelError, match=f"^{unknown}: not") as raised:
            export_to_serve(unknown)
        assert "\n" not in str(raised.value)
    assert serving_main(["--model", f"models:/{NAME}/9"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: models:/{NAME}/9: not in the model registry")


def test_a_real_server_serves_the_version_under_its_uri(run, tmp_path):
    uri = f"models:/{NAME}/1"
    with started_server(uri, tmp_path, "device: cpu\nmax_batch_size: 2\n") as url:
        body = {"model": uri, "prompt": "def", "max_tokens": 2, "temperature": 0}
        done = api_post(url, body)
    assert done.status_code == 200, done.text
    assert done.json()["model"] == uri and done.json()["usage"]["completion_tokens"] == 2


def test_a_version_whose_export_is_not_here_is_served_from_its_downloaded_source(run, tmp_path):
    tracker = Tracker.open("models-elsewhere", "export")
    gone = tmp_path / "on-another-machine"
    model = log_export_model(
        run["uri"], tracker.run_id, 3, gone, name="x", params={}, tags={}, model_type="stablelm2"
    )
    uri = f"models:/elsewhere/{register_model(run['uri'], model, 'elsewhere').version}"
    why = f"{uri}: its export {gone} is not on this machine, and its source models:/{model.model_id} holds no"
    with pytest.raises(ModelError, match=f"^{re.escape(why)}"):
        export_to_serve(uri)
    MlflowClient(run["uri"]).log_model_artifacts(model.model_id, str(run["export"]))  # a copy in the store
    folder, scratch = export_to_serve(uri)
    try:
        assert scratch is not None and folder.is_relative_to(scratch)
        for name in ("config.json", "model.safetensors"):
            assert (folder / name).read_bytes() == (run["export"] / name).read_bytes()
    finally:
        shutil.rmtree(scratch)


def test_register_is_refused_before_any_weights_are_written_where_the_run_is_not_in_reach(
    run, tmp_path, capsys
):
    # A checkpoint of run `run-abc` in a store that is not on this machine (sqlite:///elsewhere/...).
    root = make_checkpoint(run["export"], tmp_path / "checkpoints", tokenizer.load().fingerprint)
    assert training_main(["export", str(root), str(tmp_path / "out"), "--register", NAME]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    store = "sqlite:///elsewhere/mlflow.db"
    assert line == f"error: cannot register {NAME}: the store of training run run-abc, {store}, is not here"
    assert not (tmp_path / "out").exists()  # (without --register: exported, with a note; test_evaluation)


@pytest.fixture(params=["sqlite", "server"])
def store(request: pytest.FixtureRequest, run: dict, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's sqlite store, or a real tracking server (which checks registered sources itself)."""
    uri = run["uri"] if request.param == "sqlite" else request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_logging_registering_and_resolving_work_in_either_store(run, store, monkeypatch, tmp_path):
    tracker = Tracker.open("models-either-store", "export")
    tracker.log_metrics({"val_loss": 3.5}, step=10)
    model = log_export_model(
        store, tracker.run_id, 10, run["export"], name="x", params={}, tags={}, model_type="stablelm2"
    )
    assert [
        (m.key, m.value, m.step) for m in MlflowClient(store).get_logged_model(model.model_id).metrics
    ] == [("val_loss", 3.5, 10)]
    assert find_logged_model(store, str(run["export"].resolve()), tracker.run_id) == model.model_id
    # MLflow's sqlite registry looks a version's source up in the default store: whatever that is, the
    # version goes to `store`, its source found there.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "another-store").as_uri())
    version = register_model(store, model, "either")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert export_to_serve(f"models:/either/{version.version}") == (run["export"].resolve(), None)
