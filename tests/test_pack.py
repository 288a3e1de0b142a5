"""Tokenize + pack on Ray (local, 2 CPUs): round trip, determinism, resume, FIM, validation, MLflow."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import conftest
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from mlflow import MlflowClient

import tokenizer
from common.shards import MANIFEST, ShardSet, manifest_hash, read_manifest
from pipeline import pack_job as P
from pipeline.config import DataConfig
from pipeline.describe import describe
from pipeline.encode import (
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    Encode,
    EncodingMismatch,
    parts_windows,
    todo_windows,
)
from pipeline.window_packing import finished_windows, pack_windows

EOT = tokenizer.EOT_ID
SOURCES = {"web": "refinedweb", "code": "starcoder", "books": "pile"}
WORDS = "the quick brown fox 2024 jumps über naïve 東京 <|endoftext|> def f(x): return x\n\n".split(" ")


def make_docs(prefix: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        source = list(SOURCES)[i % 3]
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 120)))
        docs.append(
            {"id": f"{source}/{prefix}{i}", "text": text, "source": source, "lang": "en", "meta": "{}"}
        )
    return docs


def write_work(work: Path, mixed: list[dict], valid: list[dict]) -> None:
    (work / "mixed").mkdir(parents=True, exist_ok=True)
    for part in range(2):  # two files, as the mix stage writes one per partition
        pq.write_table(pa.Table.from_pylist(mixed[part::2]), work / "mixed" / f"part-{part}.parquet")
    (work / "valid").mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(SOURCES):  # one file per partition, so per source, as the split writes
        rows = [d for d in valid if d["source"] == source]
        pq.write_table(pa.Table.from_pylist(rows), work / "valid" / f"{index}-{source}.parquet")
    stats = {
        "sources": {s: {"stages": {"read": {"docs": 100, "tokens": 5000}}} for s in SOURCES},
        "mixture": {s: {"target_share": 1 / 3, "achieved_share": 1 / 3, "rate": 1.0} for s in SOURCES},
    }
    (work / "stats.json").write_text(json.dumps(stats))
    (work / "report.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def config(work: Path, out: Path, **pack) -> DataConfig:
    pack = {"seq_len": 31, "shuffle_window": 70, "rows_per_shard": 16, "out_dir": str(out), **pack}
    sources = {name: {"reader": r, "paths": ["unused"], "weight": 1.0} for name, r in SOURCES.items()}
    return DataConfig.model_validate({"work_dir": str(work), "sources": sources, "pack": pack})


def packing_order(docs: list[dict], seed: int, window_docs: int) -> list[list[dict]]:
    """The documented order, computed independently: windows by key mod n, then by (key, id)."""
    n = max(1, math.ceil(len(docs) / window_docs))

    def key(d: dict) -> int:
        return int.from_bytes(hashlib.blake2b(f"{seed}:{d['id']}".encode(), digest_size=8).digest(), "big")

    windows: list[list[dict]] = [[] for _ in range(n)]
    for d in docs:
        windows[key(d) % n].append(d)
    return [sorted(w, key=lambda d: (key(d), d["id"])) for w in windows]


def all_tokens(folder: Path) -> np.ndarray:
    return np.concatenate([row for row in ShardSet(folder)])


def documents(tokens: np.ndarray) -> list[str]:
    """Split at <|endoftext|> ids and decode; padding yields empty pieces, which are skipped."""
    enc, pieces, start = tokenizer.load(), [], 0
    for end in np.flatnonzero(tokens == EOT).tolist():
        if end > start:
            pieces.append(enc.decode(tokens[start:end].tolist()))
        start = end + 1
    return pieces


def shard_hashes(folder: Path) -> list[str]:
    return [s.sha256 for s in read_manifest(folder).shards]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    mixed, valid = make_docs("m", 210, seed=1), make_docs("v", 12, seed=2)
    mixed[5]["text"] = ""  # an empty document: set aside and counted, not packed
    write_work(work, mixed, valid)
    return work, mixed, valid


@pytest.fixture(scope="module")
def job(ray_local, corpus, tmp_path_factory):
    """One `pack_job` (validation + training split + MLflow), padded so every token is kept, every
    document encoded again with tiktoken by the exactness check."""
    work, mixed, valid = corpus
    out = tmp_path_factory.mktemp("shards")
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        cfg = config(work, out, partial_row="pad", verify_rate=1.0)
        manifest = P.pack_job(cfg)
    return cfg, out, manifest, uri


def test_round_trip_every_row_decodes_to_the_documents_in_order(job, corpus):
    cfg, out, manifest, _ = job
    _, mixed, _ = corpus
    enc = tokenizer.load()
    width = cfg.pack.seq_len + 1
    expected = []
    for window in packing_order(mixed, cfg.seed, cfg.pack.shuffle_window):
        stream = [t for d in window if d["text"] for t in [*enc.encode_ordinary(d["text"]), EOT]]
        stream += [EOT] * (-len(stream) % width)  # the one padded row of each window
        expected += stream
    tokens = all_tokens(out)
    assert tokens.tolist() == expected
    # The same check in text: every document once, whole, in packing order; "<|endoftext|>" written
    # inside a document stays text and never splits it.
    order = [d for w in packing_order(mixed, cfg.seed, cfg.pack.shuffle_window) for d in w if d["text"]]
    assert documents(tokens) == [d["text"] for d in order]
    assert manifest.partial_row_tokens == int((tokens == EOT).sum()) - len(order)
    assert manifest.tokens == len(tokens) and manifest.seq_len == 31


def test_manifest_counts_sources_and_stages(job, corpus):
    _, out, manifest, _ = job
    _, mixed, _ = corpus
    enc = tokenizer.load()
    for source in SOURCES:
        docs = [d for d in mixed if d["source"] == source and d["text"]]
        packed = manifest.sources[source]["packed"]
        assert packed == {
            "docs": len(docs),
            "tokens": sum(len(enc.encode_ordinary(d["text"])) + 1 for d in docs),
        }
        assert manifest.sources[source]["read"] == {"docs": 100, "tokens": 5000}  # from stats.json
        assert manifest.mixture[source]["target"] == pytest.approx(1 / 3, abs=1e-6)
    assert manifest.sources[mixed[5]["source"]]["empty"]["docs"] == 1
    assert sum(m["achieved"] for m in manifest.mixture.values()) == pytest.approx(1.0, abs=1e-5)
    # Windows are random samples of every source: the first rows already mix them.
    first_window = packing_order(mixed, 1234, 70)[0][:12]
    assert len({d["source"] for d in first_window}) == 3


def test_manifest_records_the_engine_and_the_share_checked(job):
    _, out, manifest, _ = job
    info = read_manifest(out).tokenizer
    assert (info.engine, info.engine_version) == ("fastokens", importlib.metadata.version("fastokens"))
    assert info.verify_rate == 1.0 and info.fingerprint == tokenizer.load().fingerprint


def test_a_manifest_from_before_the_engine_was_recorded_still_loads(job, tmp_path):
    _, out, _, _ = job
    old = json.loads((out / MANIFEST).read_text())
    for field in ("engine", "engine_version", "verify_rate"):
        del old["tokenizer"][field]
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    assert read_manifest(tmp_path).tokenizer.engine == "tiktoken"  # all that there was then


def one_id_off_encode(text: str, position: int) -> type[Encode]:
    """`Encode` whose exactness check compares with a reference one id off for `text`."""
    reference = conftest.OneIdOff(text, position)

    class OneIdOffEncode(Encode):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.check = dataclasses.replace(self.check, reference=reference)

    return OneIdOffEncode


def test_an_engine_that_differs_from_tiktoken_fails_the_job_naming_the_document(
    ray_local, corpus, tmp_path, monkeypatch
):
    work, mixed, _ = corpus
    planted = mixed[40]
    cfg = config(work, tmp_path / "out", verify_rate=1.0)
    # The job's encode tasks get this class (a local one travels by value to the Ray workers, which
    # cannot import conftest: send the planted reference's class with it).
    monkeypatch.setattr(P, "Encode", one_id_off_encode(planted["text"], 3))
    ray.cloudpickle.register_pickle_by_value(conftest)
    try:
        with pytest.raises(
            EncodingMismatch, match=rf"^document '{planted['id']}': fastokens \S+ .* at token 3 "
        ):
            P.pack_split(work / "mixed", tmp_path / "out", cfg, partial_row="drop")
    finally:
        ray.cloudpickle.unregister_pickle_by_value(conftest)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_an_encode_task_sizes_the_engine_pool_to_its_cpus(ray_local):
    def probe() -> tuple[str | None, str]:
        encoder = Encode(1, 1, [], 0.0, 0.5)
        return os.environ.get(tokenizer.THREADS_ENV), encoder.enc.engine

    assert ray.get(ray.remote(num_cpus=1)(probe).remote()) == ("1", "fastokens")


def test_encode_tasks_send_each_document_to_the_pack_task_of_its_window(corpus):
    work, mixed, _ = corpus
    table = pq.read_table(work / "mixed")
    skip = {1, 4}  # windows done before, or another round's
    deal = parts_windows(todo_windows(7, skip), 3)
    assert deal == [[0, 5], [2, 6], [3]]  # the windows to pack, dealt in turn to 3 pack tasks
    parts = Encode(1234, 7, ["code"], 0.5, 0.5, skip, parts=3).encode_parts(table)
    windows = packing_order(mixed, 1234, 30)  # the 7 windows, computed independently
    for part, dealt in zip(parts, deal, strict=True):
        assert sorted(part.column("id").to_pylist()) == sorted(d["id"] for w in dealt for d in windows[w])
    whole = Encode(1234, 7, ["code"], 0.5, 0.5, skip).encode(table)
    tokens = dict(zip(whole.column("id").to_pylist(), whole.column("tokens").to_pylist(), strict=True))
    assert len(tokens) == sum(len(windows[w]) for w in todo_windows(7, skip))
    for part in parts:
        ids, ids_tokens = part.column("id").to_pylist(), part.column("tokens").to_pylist()
        assert all(tokens[i] == t for i, t in zip(ids, ids_tokens, strict=True))


def test_validation_split_is_packed_apart_per_source(job, corpus):
    cfg, out, manifest, _ = job
    _, mixed, valid = corpus
    assert manifest.valid == "valid"
    listing = read_manifest(out / "valid")
    assert [s.source for s in listing.shards] == sorted(s.source for s in listing.shards)  # grouped
    assert {s.source for s in listing.shards} == set(SOURCES)
    assert all(s.file.startswith(f"{s.source}/") for s in listing.shards)
    for source in SOURCES:
        docs = [d for d in valid if d["source"] == source]
        order = [d for w in packing_order(docs, cfg.seed, cfg.pack.shuffle_window) for d in w]
        # Every row of a source's shards holds its documents only, in the documented order.
        rows = np.concatenate(list(ShardSet(out / "valid", source=source)))
        assert documents(rows) == [d["text"] for d in order]
        assert listing.sources[source]["packed"]["docs"] == len(docs)
    # A reader of the whole split (a trainer from before per-source validation) gets every document.
    assert sorted(documents(all_tokens(out / "valid"))) == sorted(d["text"] for d in valid)
    train = set(documents(all_tokens(out)))
    assert train == {d["text"] for d in mixed if d["text"]}
    assert not {d["text"] for d in valid} & train
    width = cfg.pack.seq_len + 1
    assert listing.partial_row_tokens < len(SOURCES) * width  # one padded row per source, never dropped


def test_inspect_shows_the_manifest_in_pipeline_order(job):
    _, out, manifest, _ = job
    text = describe(out, rows=1)
    assert f"{len(manifest.shards)} shards, {manifest.rows:,} rows" in text
    web = next(line for line in text.splitlines() if line.strip().startswith("web:"))
    steps = [cell.split()[0] for cell in web.split(":", 1)[1].split(", ")]
    assert steps == ["read", "tokenized", "empty", "packed"]
    assert "row 0 (" in text


def test_rerun_skips_and_resume_is_byte_identical(job, ray_local, corpus, tmp_path):
    cfg, out, manifest, _ = job
    mtimes = [(out / s.file).stat().st_mtime_ns for s in manifest.shards]
    again, skipped = P.pack_split(Path(cfg.work_dir) / "mixed", out, cfg, partial_row="pad")
    assert skipped and again == manifest
    assert [(out / s.file).stat().st_mtime_ns for s in manifest.shards] == mtimes

    # A run killed after window 0 was written (made here with the job's own two steps), resumed with
    # one encoder instead of two and in two rounds, so Ray's scheduling differs from the first run.
    other = tmp_path / "resumed"
    cfg2 = config(Path(cfg.work_dir), other, partial_row="pad", encoders=1, rounds=2)
    src = Path(cfg.work_dir) / "mixed"
    files, n_windows, state = P.plan_split(src, cfg2, "pad")
    P.start_or_resume(other, state)
    encoded = Encode(cfg2.seed, n_windows, ["code"], 0.0, 0.5).encode(pq.read_table(src))
    window0 = encoded.filter(pc.equal(encoded.column("window"), 0))
    pack_windows(str(other / P.PARTS), cfg2.pack.seq_len, cfg2.pack.rows_per_shard, "pad", window0)
    assert set(finished_windows(other / P.PARTS, n_windows)) == {0}
    part0 = other / P.PARTS / "w000000-00000.arrow"
    before = part0.stat().st_mtime_ns
    time.sleep(0.01)
    resumed, skipped = P.pack_split(src, other, cfg2, partial_row="pad")
    assert not skipped
    assert (other / "shard-00000.arrow").stat().st_mtime_ns == before  # window 0 renamed, not redone
    assert shard_hashes(other) == shard_hashes(out)


def test_partial_row_dropped_or_padded_and_its_cost_recorded(corpus, tmp_path):
    work, mixed, _ = corpus
    enc = tokenizer.load()
    encoded = Encode(1234, 1, [], 0.0, 0.5).encode(pq.read_table(work / "mixed"))
    total = sum(len(enc.encode_ordinary(d["text"])) + 1 for d in mixed if d["text"])
    width = 32
    records = {}
    for mode in ("pad", "drop"):
        (tmp_path / mode).mkdir()
        pack_windows(str(tmp_path / mode), width - 1, 4, mode, encoded)  # one window: 0
        records[mode] = json.loads((tmp_path / mode / "w000000.json").read_text())
    pad, drop = records["pad"], records["drop"]
    assert drop["partial_row_tokens"] == total % width and pad["partial_row_tokens"] == -total % width
    assert sum(s["rows"] for s in drop["shards"]) == total // width
    assert sum(s["rows"] for s in pad["shards"]) == math.ceil(total / width)
    assert all(s["rows"] <= 4 for s in pad["shards"])
    assert sum(s["packed"]["tokens"] for s in drop["sources"].values()) == total - total % width
    assert sum(s["packed"]["tokens"] for s in pad["sources"].values()) == total


def test_mlflow_run_records_the_data_job(job):
    cfg, out, manifest, uri = job
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("data")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["manifest_hash"] == manifest_hash(out)
    assert run.data.params["pack.seq_len"] == "31"
    assert run.data.metrics["code.packed.tokens"] == manifest.sources["code"]["packed"]["tokens"]
    assert run.data.metrics["web.read.docs"] == 100
    assert run.data.metrics["packed.rows"] == manifest.rows
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "stats.json", "report.png", "valid"} <= artifacts


def test_fim_transform_keeps_every_character_of_code_documents():
    docs = make_docs("f", 300, seed=3)
    table = pa.Table.from_pylist(docs)
    enc = tokenizer.load()
    encoded = Encode(7, 1, ["code"], fim_rate=1.0, fim_spm_rate=0.5).encode(table)
    again = Encode(7, 1, ["code"], fim_rate=1.0, fim_spm_rate=0.5).encode(table)
    assert encoded.column("tokens").to_pylist() == again.column("tokens").to_pylist()
    pre, mid, suf = FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX
    orders = set()
    for doc, ids in zip(docs, encoded.column("tokens").to_pylist(), strict=True):
        assert ids[-1] == EOT and EOT not in ids[:-1]
        if doc["source"] != "code":
            assert not {pre, mid, suf} & set(ids)
            continue
        body = ids[:-1]
        assert body.count(pre) == body.count(mid) == body.count(suf) == 1
        if body[:2] == [pre, suf]:  # SPM: suffix, then prefix + middle
            s, pm = body[2 : body.index(mid)], body[body.index(mid) + 1 :]
            text = enc.decode(pm) + enc.decode(s)
            orders.add("spm")
        else:  # PSM
            p, s, m = (
                body[1 : body.index(suf)],
                body[body.index(suf) + 1 : body.index(mid)],
                body[body.index(mid) + 1 :],
            )
            text = enc.decode(p) + enc.decode(m) + enc.decode(s)
            orders.add("psm")
        assert text == doc["text"]
    assert orders == {"psm", "spm"}
    partial = Encode(7, 1, ["code"], fim_rate=0.3, fim_spm_rate=0.5).encode(table)
    code = [
        ids
        for d, ids in zip(docs, partial.column("tokens").to_pylist(), strict=True)
        if d["source"] == "code"
    ]
    share = sum(ids[0] == pre for ids in code) / len(code)
    assert 0.15 < share < 0.45


def test_missing_input_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no parquet files"):
        P.pack(cfg)


def test_a_source_gone_from_the_validation_split_loses_its_folder(ray_local, tmp_path):
    work, out = tmp_path / "work", tmp_path / "shards" / "valid"
    write_work(work, make_docs("m", 6, seed=4), make_docs("v", 30, seed=3))
    cfg = config(work, tmp_path / "shards")
    P.pack_valid(work / "valid", out, cfg)
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(SOURCES)
    (work / "valid" / "1-code.parquet").unlink()  # the source left the config
    listing, _ = P.pack_valid(work / "valid", out, cfg)
    assert {s.source for s in listing.shards} == {"web", "books"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"web", "books"}
