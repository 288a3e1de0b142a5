"""Check the MLflow UI in a headless browser: a micro training run (2 steps on shards of this repository's
own source) against a real `mlflow server`, exported and registered (`python -m training export
--register`) and evaluated (`python -m evaluation`'s `evaluate`, 2 documents); then the run page must
list its dataset, its logged model and registered version, and the model page its metrics (the
evaluation's too) and version, as chromium renders them. Screenshots go to docs/mlflow_run.png and
docs/mlflow_model.png.

    python -m bench.mlflow_ui [--out docs]

Needs chromium (Debian: apt-get install chromium). CI has no browser: tests/test_mlflow_models.py asserts
the same facts through MLflow's client.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

import tokenizer
from common.shards import Manifest, TokenizerInfo, write_manifest, write_shard
from harness.mlflow_server import running_mlflow_server
from training.__main__ import main as training_main
from training.__main__ import train_run
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SEQ = 32
NAME = "micro-ui"


def write_shards(folder: Path, rows: int, valid_rows: int) -> Path:
    """`rows` packed rows of this repository's Python source, and a `valid` split of `valid_rows`."""
    enc = tokenizer.load()
    ids: list[int] = []
    for path in sorted(ROOT.glob("*/*.py")):
        ids += enc.encode_ordinary(path.read_text(encoding="utf-8")) + [enc.eot_id]
        if len(ids) > (rows + valid_rows) * (SEQ + 1):
            break
    table = np.array(ids[: (rows + valid_rows) * (SEQ + 1)], dtype=np.int32).reshape(-1, SEQ + 1)
    info = TokenizerInfo(name=enc.name, fingerprint=enc.fingerprint, n_vocab=enc.n_vocab, eot_id=enc.eot_id)
    for where, part, valid in ((folder / "valid", table[rows:], None), (folder, table[:rows], "valid")):
        where.mkdir(parents=True, exist_ok=True)
        shards = [write_shard(where / "shard-00000.arrow", part)]
        write_manifest(where, Manifest(seq_len=SEQ, tokenizer=info, shards=shards, valid=valid))
    return folder


def micro_run(tmp: Path) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {
                "hidden_size": 64,
                "num_layers": 2,
                "num_heads": 4,
                "intermediate_size": 176,
                "max_position_embeddings": 256,
            },
            "data": {"shards": str(write_shards(tmp / "shards", rows=32, valid_rows=8)), "seq_len": SEQ},
            "schedule": {"warmup_steps": 1, "total_steps": 2},
            "batch": {"micro_batch": 2, "grad_accum": 1},
            "checkpoint": {"dir": str(tmp / "ckpt"), "interval": 2},
            "eval": {"interval": 2, "batches": 1},
            "log": {"interval": 1, "experiment": "mlflow-ui-bench", "run_name": "micro"},
            "precision": "fp32",
        }
    )


def browse(url: str, screenshot: Path) -> str:
    """The page at `url` as chromium renders it (its DOM, once its scripts have run), screenshotted."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: no chromium on PATH (Debian: apt-get install chromium)")
    flags = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1400,1000"]
    flags += ["--virtual-time-budget=15000", "--hide-scrollbars"]
    subprocess.run([*flags, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run(
        [*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the screenshots go")
    args = parser.parse_args()
    from evaluation.run import evaluate  # lm-eval takes seconds to import

    with tempfile.TemporaryDirectory() as name, running_mlflow_server(Path(name) / "server") as server:
        tmp = Path(name)
        os.environ["MLFLOW_TRACKING_URI"] = url = server.url()
        cfg = micro_run(tmp)
        with contextlib.redirect_stdout(io.StringIO()):
            assert train_run(cfg) == 0
            assert (
                training_main(["export", str(cfg.checkpoint.dir), str(tmp / "export"), "--register", NAME])
                == 0
            )
            evaluate(
                tmp / "export",
                {"stablelm2_cloze_it": None},
                tmp / "eval",
                limit=2,
                batch_size=4,
                device="cpu",
            )
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(cfg.log.experiment).experiment_id
        (run,) = client.search_runs([experiment])
        (model,) = client.search_logged_models([experiment])
        pages = {
            "run": (f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}", args.out / "mlflow_run.png"),
            "model": (
                f"{url}/#/experiments/{experiment}/models/{model.model_id}",
                args.out / "mlflow_model.png",
            ),
        }
        expected = {
            # The validation dataset hides behind a "+1" beside the training one.
            "run": ["Datasets", "shards", "Training", "Logged models", model.name, "Registered models", NAME],
            "model": [model.name, "val_loss", "eval/stablelm2_cloze_it/acc", NAME],
        }
        missing = []
        for page, (address, screenshot) in pages.items():
            text = browse(address, screenshot)
            missing += [f"{page} page: {want!r}" for want in expected[page] if want not in text]
            print(f"{page} page: {address} -> {screenshot}")
    for line in missing:
        print(f"missing: {line}")
    print("the UI lists the dataset, the logged model, its metrics and version" if not missing else "FAILED")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
