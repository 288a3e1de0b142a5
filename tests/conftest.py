"""Fixtures and helpers that several test files share: the tokenizer, a local Ray per test module, the
micro training setup (shards of this repository's own source, the micro model's config, an MLflow
store, a checkpoint holding an export), a real MLflow tracking server, a local S3 endpoint and a bucket
on it, the tiny serving export and its server, and the pipeline's outputs read back.

Test files import the helpers (`from conftest import ...`); pytest hands out the fixtures.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml
from starlette.testclient import TestClient

import tokenizer
from common.config import load
from common.files import write_json, write_text
from common.objectstore import filesystem
from common.shards import Manifest, TokenizerInfo, read_manifest, write_manifest, write_shard
from harness.micro import MICRO_MODEL
from harness.mlflow_server import MlflowServer, running_mlflow_server
from harness.s3 import running_s3
from harness.server import running_server
from harness.tiny_export import make_tiny_export
from pipeline.config import DataConfig
from training import checkpoint
from training.config import TrainConfig
from training.hf import load_hf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def enc() -> tokenizer.Arcade100k:
    return tokenizer.load()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[str]:
    """A local Ray of 2 CPUs for one test module; yields its GCS address (for jobs started in a
    subprocess with RAY_ADDRESS) and shuts it down after the module's last test."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# -- the pipeline -----------------------------------------------------------------------------------


def table_rows(work: Path, folder: str, columns: list[str]) -> list[dict]:
    """`columns` of every row of the parquet tables in `work`/`folder`, in file order."""
    return [
        r
        for f in sorted((work / folder).glob("*.parquet"))
        for r in pq.read_table(f, columns=columns).to_pylist()
    ]


class OneIdOff:
    """tiktoken's Arcade100k, except that for one text the id at `position` is one more: a planted
    difference between the engine and its reference, made without touching either."""

    def __init__(self, text: str, position: int):
        self.text = text
        self.position = position

    def encode_ordinary(self, text: str) -> list[int]:
        ids = tokenizer.load(engine="tiktoken").encode_ordinary(text)
        if text == self.text:
            ids[self.position] += 1
        return ids


# -- training: the micro model on shards of this repository's own source ----------------------------

SEQ = 32


def token_rows(rows: int, seq_len: int = SEQ) -> np.ndarray:
    """`rows` packed rows (int32 [rows, seq_len + 1]) of this repo's Python files in Arcade100k tokens."""
    enc = tokenizer.load()
    ids: list[int] = []
    for path in sorted(ROOT.glob("*/*.py")):
        ids += enc.encode_ordinary(path.read_text(encoding="utf-8")) + [enc.eot_id]
        if len(ids) > rows * (seq_len + 1):
            break
    return np.array(ids[: rows * (seq_len + 1)], dtype=np.int32).reshape(rows, seq_len + 1)


def write_shard_folder(
    folder: Path, table: np.ndarray, valid: str | None = None, per_shard: int = 64
) -> Path:
    """`table` as shards of `per_shard` rows in `folder` with their manifest, as `pipeline pack` does."""
    enc = tokenizer.load()
    info = TokenizerInfo(name=enc.name, fingerprint=enc.fingerprint, n_vocab=enc.n_vocab, eot_id=enc.eot_id)
    folder.mkdir(parents=True, exist_ok=True)
    shards = [
        write_shard(folder / f"shard-{i:05d}.arrow", table[start : start + per_shard])
        for i, start in enumerate(range(0, len(table), per_shard))
    ]
    write_manifest(folder, Manifest(seq_len=table.shape[1] - 1, tokenizer=info, shards=shards, valid=valid))
    return folder


def write_shards(
    folder: Path, rows: int, valid_rows: int = 0, seq_len: int = SEQ, per_shard: int = 64
) -> Path:
    """Packed shards of `rows` rows, plus a `valid` split of `valid_rows` when there are any."""
    table = token_rows(rows + valid_rows, seq_len)
    if valid_rows:
        write_shard_folder(folder / "valid", table[rows:], per_shard=per_shard)
    return write_shard_folder(folder, table[:rows], "valid" if valid_rows else None, per_shard)


def write_valid_by_source(folder: Path, tables: dict[str, np.ndarray]) -> Path:
    """A validation split as `pipeline pack` writes it: each source's shards in `<folder>/<source>/`,
    listed with their source in `<folder>/manifest.json`."""
    shards = []
    for source, table in tables.items():
        own = read_manifest(write_shard_folder(folder / source, table, per_shard=4))
        shards += [s.model_copy(update={"file": f"{source}/{s.file}", "source": source}) for s in own.shards]
    write_manifest(folder, own.model_copy(update={"shards": shards}))
    return folder


def micro_config(tmp_path: Path, shards: Path, **sections) -> TrainConfig:
    """The micro model on `shards`, checkpointing under `tmp_path`; fp32, so that every CPU runs the tests
    alike (an AVX2-only one emulates bf16 slowly). `sections` override whole keys or merge into sections."""
    raw = {
        "model": MICRO_MODEL,
        "data": {"shards": str(shards), "seq_len": SEQ},
        "optim": {"lr": 1e-2, "min_lr": 1e-3},
        "schedule": {"warmup_steps": 2, "total_steps": 8},
        "batch": {"micro_batch": 2, "grad_accum": 2},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "interval": 2, "keep_last": 2},
        "eval": {"interval": 4, "batches": 2},
        "log": {"interval": 1, "experiment": f"test-{tmp_path.name}"},
        "precision": "fp32",
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
    return TrainConfig.model_validate(raw)


def write_config(tmp_path: Path, cfg: TrainConfig) -> Path:
    """`cfg` as the YAML file `python -m training train` reads."""
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def make_checkpoint(export: Path, root: Path, fingerprint: str) -> Path:
    """A checkpoint dir in the trainer's layout (weights, config.json, trainer.json, checksums, latest)
    holding the export's weights, as training would have saved them at step 7 of MLflow run `run-abc`."""
    cfg, state_dict = load_hf(export)
    folder = root / checkpoint.tag_for(7)
    folder.mkdir(parents=True)
    torch.save({"module": {k: v.float() for k, v in state_dict.items()}}, folder / checkpoint.MODEL_STATES)
    config = {"model": cfg.model_dump(mode="json"), "precision": "fp32", "log": {"experiment": "tiny-exp"}}
    config |= {"schedule": {"warmup_steps": 1, "total_steps": 9}}
    config |= {"data": {"seq_len": cfg.max_position_embeddings}}
    write_json(folder / checkpoint.CONFIG_FILE, config)
    state = {"step": 7, "mlflow_run_id": "run-abc", "data_manifest_sha256": "d" * 64}
    state |= {"mlflow_tracking_uri": "sqlite:///elsewhere/mlflow.db"}
    write_json(folder / checkpoint.STATE_FILE, state | {"tokenizer_fingerprint": fingerprint})
    checkpoint.record_files(folder)
    write_text(root / checkpoint.LATEST, folder.name)
    return root


@pytest.fixture(scope="session")
def eval_documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eval documents file of the sample's decontam tasks, as `make data` writes it before a run."""
    from evaluation.documents import write_documents  # lm-eval takes seconds to import

    path = tmp_path_factory.mktemp("eval") / "documents.jsonl"
    write_documents(load(ROOT / "configs" / "data" / "sample.yaml", DataConfig).decontam.tasks, path)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), rows=96, valid_rows=8)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sqlite store for the module (creating one costs seconds); each test has its experiment.
    Modules that train take it with `pytestmark = pytest.mark.usefixtures("mlflow_store")`."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="session")
def mlflow_server_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` (harness.mlflow_server) for the session, started but not waited for: it takes
    seconds to start, which a fixture that asks for it before its own work overlaps with that work."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_started: MlflowServer) -> str:
    """The running `mlflow server`'s URL, a tracking URI; tests take it for what only a server does (its
    own checks, REST in between)."""
    return mlflow_server_started.url()


# -- object storage: a local S3 endpoint over HTTP ------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server for the whole session (harness.s3); tests reach it through `s3_bucket`."""
    with running_s3() as env:
        yield env


@pytest.fixture
def s3_bucket(
    s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """A new empty bucket, its `s3://` URL; the test (and every process it starts) sees the endpoint and
    credentials in its environment, as a node configured for S3 would."""
    import boto3

    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def put_folder(local: Path, url: str) -> str:
    """Upload the folder `local` to `url` (as `aws s3 cp --recursive` would); returns `url`."""
    fs, path = filesystem(url)
    for file in sorted(local.rglob("*")):
        if file.is_file():
            fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")
    return url


# -- serving: the tiny export and the real server on it ---------------------------------------------

KEY = "test-key"
NAME = "tiny"
CONTEXT = 2048


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random export that the serving tests serve."""
    return make_tiny_export(tmp_path_factory.mktemp("export"), seed=0, max_position_embeddings=CONTEXT)


@contextlib.contextmanager
def started_server(export: Path, folder: Path, config: str, args: Sequence[str] = ()) -> Iterator[str]:
    """`python -m serving` on `export` with `config` (YAML text) and the test API key; its config and
    its log (server.log) go in `folder`."""
    (folder / "serve.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "SERVING_API_KEY"} | {"SERVING_API_KEY": KEY}
    with (folder / "server.log").open("w+") as log:
        with running_server(export, folder / "serve.yaml", args=args, env=env, log=log) as url:
            yield url


def api_post(
    url: str, body, path: str = "/v1/completions", key: str | None = KEY, **kwargs
) -> httpx.Response:
    """POST `body` as JSON to the server at `url`, with the API key `key` (none if None)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=60, **kwargs)


def wait_for_health(client: TestClient, status: str) -> dict:
    """/health's body once its status is `status` (within a minute)."""
    deadline = time.monotonic() + 60
    while (body := client.get("/health").json())["status"] != status:
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body
