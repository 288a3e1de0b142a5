"""Errors a person can act on (issue 23): `pipeline explain` reports a bad line and goes on, the
non-finite-loss stop names a checkpoint that exists or says there is none, and a corrupt safetensors
export is one line naming the file in evaluation, serving and import-hf."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.__main__ import main as evaluation_main
from serving.__main__ import main as serving_main
from tests.conftest import micro_config, write_config
from training import checkpoint
from training.__main__ import main as training_main
from training.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.usefixtures("mlflow_store")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "configs" / "data" / "sample.yaml"
ENGLISH = " ".join(
    [
        "The harbour is the oldest part of the village and was rebuilt after the storm of 1953.",
        "Fishing boats still land their catch there every morning, and the market opens at seven.",
        "A small museum on the quay tells the story of the lifeboat crew and the families of the town.",
    ]
)


def test_explain_reports_a_bad_line_as_the_job_counts_it_and_goes_on(tmp_path):
    docs = tmp_path / "x.jsonl"
    lines = [
        b'{"id": "surrogate", "text": "\\udfff"}',  # JSON's escape of a lone surrogate: fastText broke on it
        json.dumps({"id": "good", "text": ENGLISH}).encode(),
        b'{"id": "latin1", "text": "caf\xe9"}',
        json.dumps({"id": "last", "text": ENGLISH}).encode(),
    ]
    docs.write_bytes(b"\n".join(lines) + b"\n")
    command = [sys.executable, "-m", "pipeline", "explain", "--config", str(SAMPLE), "--source", "refinedweb"]
    done = subprocess.run([*command, str(docs)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in results] == ["0", "good", "2", "last"]
    assert (results[0]["line"], results[0]["error"]) == (1, "invalid utf-8: lone surrogate escape")
    assert (results[2]["line"], results[2]["error"]) == (3, "invalid utf-8")
    assert all(r["reason"] == "bad_input" and not r["kept"] for r in results[::2])
    assert results[1]["lang"] == "en" and set(results[1]["filters"]) >= {"langid"}


def test_a_nonfinite_stop_before_any_save_says_there_is_no_checkpoint(tmp_path, shards):
    # lr=1e9 makes every step's gradients non-finite: no checkpoint is ever saved.
    cfg = micro_config(tmp_path, shards, optim={"lr": 1e9}, max_nonfinite_in_row=2, eval={"interval": 100})
    with pytest.raises(NonFiniteLossError) as raised:
        Trainer(cfg).fit()
    assert str(raised.value).endswith(
        f"there is no complete checkpoint in {cfg.checkpoint.dir} to go back to"
    )
    assert checkpoint.newest_complete(cfg.checkpoint.dir) is None


def test_after_good_steps_the_nonfinite_stop_names_the_newest_checkpoint_written(tmp_path, shards):
    good = micro_config(tmp_path, shards, schedule={"warmup_steps": 1, "total_steps": 2})
    Trainer(good).fit()
    # The resumed run never saves: the stop names the checkpoint it started from, not a step of its own.
    cfg = micro_config(tmp_path, shards, optim={"lr": 1e9}, max_nonfinite_in_row=2, eval={"interval": 100})
    with pytest.raises(NonFiniteLossError) as raised:
        Trainer(cfg).fit()
    named = Path(str(raised.value).split("the last good checkpoint is ")[1])
    assert named == cfg.checkpoint.dir / "step_00000002" and checkpoint.why_incomplete(named) is None


def corrupt(data: bytes, kind: str) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    header = b'{"not": "a header"'  # its length is right, its JSON is not
    return len(header).to_bytes(8, "little") + header + data[8 + len(header) :]


@pytest.fixture(params=["truncated", "empty", "bad header"])
def corrupt_export(request, export, tmp_path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(export, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes(), request.param))
    return folder


def assert_one_line_naming_the_weights(err: str, folder: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {folder / 'model.safetensors'}: not a complete safetensors file ("), (
        err
    )


def test_a_corrupt_export_is_one_line_in_evaluation(corrupt_export, tmp_path, capsys):
    args = ["run", "--model", str(corrupt_export), "--tasks", "stablelm2_cloze", "--limit", "2"]
    assert evaluation_main([*args, "--output", str(tmp_path / "eval")]) != 0
    assert_one_line_naming_the_weights(capsys.readouterr().err, corrupt_export)


def test_a_corrupt_export_is_one_line_in_serving_which_does_not_start(corrupt_export, capsys):
    # The port is taken, so that a server that did start would fail at once rather than serve on.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert serving_main(["--model", str(corrupt_export), "--host", "127.0.0.1", "--port", port]) == 2
    assert_one_line_naming_the_weights(capsys.readouterr().err, corrupt_export)


def test_a_cut_tokenizer_file_is_one_line_in_serving(export, tmp_path, capsys):
    folder = tmp_path / "export"
    shutil.copytree(export, folder)
    ranks = folder / "arcade100k.tiktoken"
    ranks.write_bytes(ranks.read_bytes()[:1000] + b"\n\x00cut")
    assert serving_main(["--model", str(folder), "--host", "127.0.0.1", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {ranks}: not a .tiktoken ranks file"), err


def test_a_corrupt_export_is_one_line_in_import_hf(corrupt_export, tmp_path, shards, capsys):
    config = write_config(tmp_path, micro_config(tmp_path, shards))
    assert training_main(["import-hf", str(corrupt_export), str(config)]) != 0
    assert_one_line_naming_the_weights(capsys.readouterr().err, corrupt_export)


def test_the_evaluation_cli_prints_no_traceback_for_a_truncated_export(export, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(export, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes(), "truncated"))
    command = [
        sys.executable,
        "-m",
        "evaluation",
        "run",
        "--model",
        str(folder),
        "--tasks",
        "stablelm2_cloze",
    ]
    done = subprocess.run([*command, "--output", str(tmp_path / "eval")], capture_output=True, text=True)
    assert done.returncode != 0
    assert_one_line_naming_the_weights(done.stderr, folder)
