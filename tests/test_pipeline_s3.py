"""The data job with object storage (moto's S3 server over HTTP): sources read from s3:// in ranged
requests with outputs identical to a run from local files, shards packed to s3:// manifest last and
resumed, the work dir itself in the store (the local run's bytes, resumed from its markers), the job on
two Ray nodes that share no disk, the lock object, and bad storage told in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from conftest import ROOT
from s3fs import S3FileSystem

from common.config import load
from common.lock import Holder, LockError, ObjectLock
from common.objectstore import READ_BLOCK, StorageError, filesystem
from common.shards import MANIFEST, read_manifest
from harness.ray_cluster import private_tmp_problem, ray_cluster
from harness.s3 import running_s3
from pipeline.config import DataConfig, SourceConfig
from pipeline.inputs import InputError
from pipeline.pack_job import pack
from pipeline.plan import make_plan
from pipeline.run import run
from pipeline.sources import Record, SourceUnreachable, read_file
from pipeline.workdir import WorkDir

# Files of the sample in each input format (JSON lines, gzip and zstd JSON lines, parquet; code, whose
# language is its folder's name), a few hundred documents in all.
SOURCES = {
    "redpajama": ["redpajama/stackexchange/*.jsonl", "redpajama/common_crawl/*/*.json.gz"],
    "pile": ["pile/train/*.jsonl.zst"],
    "starcoder": ["starcoder/go/*.parquet", "starcoder/python/*.parquet"],
}
# Outputs that name their input files: compared with the paths mapped, the rest byte for byte. Two of
# them also hold the hash of the config, whose source paths differ.
NAMING_INPUTS = {"stats.json", "report.md"}
HASHING_CONFIG = {"plan.json", "_SUCCESS.json"}


@pytest.fixture(scope="module")
def s3_ray(s3_server: dict[str, str]) -> Iterator[dict[str, str]]:
    """The S3 endpoint in this process's environment, then a local Ray: its workers inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.items():
            patch.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield s3_server
        ray.shutdown()


def upload_tree(local: Path, url: str) -> None:
    fs, root = filesystem(url)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{root}/{path.relative_to(local)}")


@pytest.fixture(scope="module")
def runs(s3_ray, tmp_path_factory) -> tuple[DataConfig, Path, Path, str]:
    """Sources of the sample run from local files and from the same files in a bucket: (the local run's
    config, its work dir, the S3 run's work dir, the URL standing for data/sample)."""
    boto3.client("s3").create_bucket(Bucket="sample-inputs")
    sample, url = ROOT / "data" / "sample", "s3://sample-inputs/sample"
    upload_tree(sample, url)
    tmp = tmp_path_factory.mktemp("runs")
    cfg = load(ROOT / "configs" / "data" / "sample.yaml", DataConfig, {"decontam.tasks": []})

    def config(work: Path, root: str) -> DataConfig:
        paths = {n: {"paths": [f"{root}/{p}" for p in patterns]} for n, patterns in SOURCES.items()}
        sources = {n: cfg.sources[n].model_copy(update=paths[n]) for n in SOURCES}
        return cfg.model_copy(update={"work_dir": str(work), "sources": sources})

    local = config(tmp / "local", str(sample))
    return local, run(local), run(config(tmp / "s3", url)), url


def files(work: Path) -> dict[str, Path]:
    return {str(p.relative_to(work)): p for p in sorted(work.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_sources_in_s3_give_the_outputs_of_local_files(runs):
    _, local, remote, url = runs
    sample = str(ROOT / "data" / "sample")
    assert set(files(local)) == set(files(remote))
    for name, path in files(local).items():
        theirs = files(remote)[name]
        if name in HASHING_CONFIG:
            ours, mapped = (
                json.loads(path.read_text()),
                json.loads(theirs.read_text().replace(url, sample)),
            )
            assert ours.pop("config_hash") != mapped.pop("config_hash") and ours == mapped, name
        elif name in NAMING_INPUTS or name.startswith("stats/filter/"):
            assert theirs.read_text().replace(url, sample) == path.read_text(), name
        elif name.startswith("bad/"):  # a bad row names its file
            mapped = [r | {"path": r["path"].replace(url, sample)} for r in pq.read_table(theirs).to_pylist()]
            assert mapped == pq.read_table(path).to_pylist(), name
        else:
            assert theirs.read_bytes() == path.read_bytes(), name
    stats = json.loads((remote / "stats.json").read_text())
    every = [
        sorted(f"{url}/{p.relative_to(sample)}" for g in globs for p in Path(sample).glob(g))
        for globs in SOURCES.values()
    ]
    assert [f["path"] for f in stats["files"]] == [path for paths in every for path in paths]


@pytest.fixture
def recorded_s3(tmp_path, monkeypatch) -> Iterator[str]:
    """An S3 endpoint of its own that logs every request to a file (moto's recorder); yields its URL.
    The test's environment points at it."""
    monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(tmp_path / "requests.jsonl"))
    with running_s3() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # fsspec keeps a file system per set of options, made with the endpoint of its time: a new one
        # here, and a new one again for the tests after this one.
        S3FileSystem.clear_instance_cache()
        yield env["AWS_ENDPOINT_URL"]
    S3FileSystem.clear_instance_cache()


def range_requests(endpoint: str, key: str) -> list[int]:
    """The bytes each GET of `key` asked for, from the recorder's log (a GET without a Range asked for
    the whole object: -1)."""
    log = httpx.get(f"{endpoint}/moto-api/recorder/download-recording").text
    sizes = []
    for entry in map(json.loads, log.splitlines()):
        if entry["method"] == "GET" and entry["url"].split("?")[0].endswith(key):
            first, last = entry["headers"].get("Range", "bytes=0--2").removeprefix("bytes=").split("-")
            sizes.append(int(last) - int(first) + 1)
    return sizes


def test_a_large_input_is_read_in_ranges_as_it_is_parsed(recorded_s3, tmp_path):
    """Reading the first rows of objects of over two read blocks fetches a block or two, never the object."""
    boto3.client("s3").create_bucket(Bucket="ranged")
    text = os.urandom(2000).hex()
    lines = b"".join(
        json.dumps({"text": f"{i} {text}"}).encode() + b"\n" for i in range(9 * READ_BLOCK // 16000)
    )
    table = pa.table({"text": [f"{i} {text}" for i in range(9 * READ_BLOCK // 16000)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1000, compression="none")
    fs, _ = filesystem("s3://ranged")
    fs.pipe_file("ranged/big.jsonl", lines)
    fs.put_file(str(tmp_path / "big.parquet"), "ranged/big.parquet")
    httpx.post(f"{recorded_s3}/moto-api/recorder/start-recording")
    source = SourceConfig(reader="pile", paths=["unused"], epochs=1)
    for key, size in (("big.jsonl", len(lines)), ("big.parquet", (tmp_path / "big.parquet").stat().st_size)):
        rows = read_file("pile", f"s3://ranged/{key}", source)
        first = [next(rows) for _ in range(10)]
        rows.close()
        assert [r.text.split()[0] for r in first if isinstance(r, Record)] == [str(i) for i in range(10)]
        fetched = range_requests(recorded_s3, key)
        assert fetched and min(fetched) > 0, (key, fetched)  # every GET is ranged
        assert sum(fetched) <= 2 * READ_BLOCK < size, (key, fetched, size)


def test_bucket_without_the_source_or_credentials_is_one_line(s3_bucket, tmp_path):
    """An unknown bucket (in-process planning) and no credentials at all (the CLI, before Ray starts)."""
    sources = {"web": {"reader": "pile", "paths": ["s3://no-such-bucket/web/*.jsonl"], "epochs": 1}}
    cfg = DataConfig.model_validate({"work_dir": str(tmp_path / "work"), "sources": sources})
    with pytest.raises(InputError, match=r"s3://no-such-bucket/web/\*\.jsonl \(bucket 'no-such-bucket' does"):
        make_plan(cfg)
    sources["web"]["paths"] = [f"{s3_bucket}/web/*.jsonl"]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "work"), "sources": sources}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance role to ask for
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot list: cannot reach {s3_bucket}/web/*.jsonl: no credentials" in result.stderr


@pytest.mark.slow
def test_a_work_dir_in_an_unknown_bucket_is_one_line_in_run_and_pack(s3_bucket, tmp_path):
    cfg = load(ROOT / "configs" / "data" / "sample.yaml", DataConfig)
    cfg = cfg.model_copy(update={"work_dir": "s3://no-such-bucket/work"})
    gone = "bucket 'no-such-bucket' does not exist"
    with pytest.raises(StorageError, match=f"^cannot reach s3://no-such-bucket/work/.lock: {gone}$"):
        run(cfg)
    with pytest.raises(StorageError, match=f"^cannot reach s3://no-such-bucket/work/mixed: {gone}$"):
        pack(pack_config(cfg, str(tmp_path / "shards")))


def test_an_input_gone_after_planning_stops_the_job_naming_it(s3_ray, s3_bucket, tmp_path):
    """Read in a Ray worker, a URL the store does not serve stops the job with its one line: set aside,
    the file would be lost to the work dir for good."""
    fs, root = filesystem(s3_bucket)
    for name in ("a", "b"):
        fs.pipe_file(f"{root}/web/{name}.jsonl", b'{"text": "a document"}\n')
    sources = {"web": {"reader": "pile", "paths": [f"{s3_bucket}/web/*.jsonl"], "epochs": 1}}
    cfg = DataConfig.model_validate({"work_dir": str(tmp_path / "work"), "sources": sources})
    make_plan(cfg)
    fs.rm_file(f"{root}/web/b.jsonl")
    with pytest.raises(SourceUnreachable) as error:
        run(cfg)
    # The line `python -m pipeline run` prints: the task's error, which Ray hands over as the cause.
    assert str(error.value.cause).splitlines()[0] == f"error: {s3_bucket}/web/b.jsonl does not exist"


def pack_config(cfg: DataConfig, out: str) -> DataConfig:
    """`cfg` packing to `out` in short rows, a few shards of each split."""
    return cfg.model_copy(
        update={"pack": cfg.pack.model_copy(update={"out_dir": out, "seq_len": 255, "rows_per_shard": 64})}
    )


def objects(url: str) -> dict[str, bytes]:
    fs, root = filesystem(url)
    return {key[len(root) + 1 :]: fs.cat_file(key) for key in fs.find(root)}


@pytest.mark.slow
def test_pack_to_s3_puts_the_local_pack_manifest_last_and_resumes(runs, s3_bucket, capsys):
    """Shards are packed in the work dir (`staged_shards`), as into a local out_dir, and put object by
    object, manifest last: the store then holds the local pack's bytes, each shard with its sha256."""
    cfg, work = runs[:2]
    url = f"{s3_bucket}/shards"
    manifest, skipped = pack(pack_config(cfg, url))
    assert not skipped and manifest.data_config["pack"]["out_dir"] == url and len(manifest.shards) > 2
    staged = WorkDir(work).staged_shards
    local = {str(p.relative_to(staged)): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
    stored = objects(url)
    assert stored == {name: data for name, data in local.items() if not name.endswith(".pack-state.json")}
    valid = read_manifest(staged / "valid")
    listed = [(s.file, s.sha256) for s in manifest.shards] + [
        (f"valid/{s.file}", s.sha256) for s in valid.shards
    ]
    assert [(name, hashlib.sha256(stored[name]).hexdigest()) for name, _ in listed] == listed

    # A killed upload after it deleted the manifest and put some shards over another run's: one shard
    # missing, one holding other bytes. The re-run puts those two, then the manifests, and no other.
    fs, root = filesystem(url)
    fs.rm_file(f"{root}/{MANIFEST}")
    fs.rm_file(f"{root}/{listed[0][0]}")
    fs.pipe_file(f"{root}/{listed[1][0]}", b"another run's shard")
    capsys.readouterr()
    assert pack(pack_config(cfg, url)) == (manifest, False)
    manifests = [name for name in stored if name.endswith(MANIFEST)]
    assert f"{url}: {2 + len(manifests)} objects put" in capsys.readouterr().out
    assert objects(url) == stored
    assert pack(pack_config(cfg, url)) == (manifest, True)  # nothing left to put


def test_the_lock_object_refuses_a_second_job_and_names_the_first(s3_bucket, tmp_path):
    """Refused before anything is packed: by the lock object of a job on another host, and by an
    out_dir holding an object that pack does not write."""
    url = f"{s3_bucket}/shards"
    config = load(ROOT / "configs" / "data" / "sample.yaml", DataConfig, {"work_dir": str(tmp_path / "work")})
    fs, root = filesystem(url)
    with ObjectLock(url):
        with pytest.raises(LockError, match=f"in use by another job \\(pid {os.getpid()} on"):
            ObjectLock(url).acquire()
    assert not fs.exists(f"{root}/.lock")
    # A holder whose pid is gone on this host: its lock object is taken over.
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = Holder(
        socket.gethostname(), ended.pid, "2026-01-01T00:00:00+00:00", "python -m pipeline pack x.yaml"
    )
    fs.pipe_file(f"{root}/.lock", json.dumps(dead.__dict__).encode())
    with ObjectLock(url):
        assert json.loads(fs.cat_file(f"{root}/.lock"))["pid"] == os.getpid()
    other = dataclasses.replace(dead, host="another-host", pid=4242)
    fs.pipe_file(f"{root}/.lock", json.dumps(other.__dict__).encode())
    with pytest.raises(
        LockError, match=f"in use by another job \\(pid 4242 on another-host.*delete {url}/.lock"
    ):
        pack(pack_config(config, url))
    fs.pipe_file(f"{root}/stray.txt", b"not ours")
    with pytest.raises(ValueError, match="holds objects that are not shards"):
        pack(pack_config(config, url))


@pytest.fixture(scope="module")
def local_pack(runs, tmp_path_factory) -> Path:
    """The local run packed as `pack_config` packs, into a local folder: the shards to compare with."""
    out = tmp_path_factory.mktemp("pack") / "shards"
    pack(pack_config(runs[0], str(out)))
    return out


def assert_packed_as(url: str, local: Path) -> None:
    """The store holds at `url` the shards of the local pack, byte for byte, and its manifests but for
    the config they record (its paths differ) and its hash."""
    packed = objects(url)
    expected = {
        str(p.relative_to(local)) for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")
    }
    assert set(packed) == expected
    for name, data in packed.items():
        if name.endswith(MANIFEST):
            ours, theirs = json.loads((local / name).read_text()), json.loads(data)
            for manifest in (ours, theirs):  # the config names the paths, and its hash covers them
                del manifest["data_config_hash"]
            assert ours.pop("data_config")["pack"]["out_dir"] == str(local)
            assert theirs.pop("data_config")["pack"]["out_dir"] == url and ours == theirs, name
        else:
            assert data == (local / name).read_bytes(), name


def assert_work_as(url: str, local: Path) -> None:
    """The store holds at `url` the local work dir's files byte for byte, and the marker that publishes
    dedup/dropped (a store has no rename)."""
    stored = objects(url)
    assert json.loads(stored.pop("dedup/dropped/_DONE.json"))["files"]
    assert stored == {
        name: path.read_bytes() for name, path in files(local).items() if not name.startswith("shards-")
    }


@pytest.mark.slow
def test_a_work_dir_in_s3_gives_the_local_outputs_and_resumes(runs, local_pack, s3_bucket, capsys):
    """`work_dir` and `pack.out_dir` in the store: every table, stats file and report of the local run,
    byte for byte, and its shards; a run killed after some markers resumes from the ones left."""
    cfg, local = runs[:2]
    url = f"{s3_bucket}/work"
    remote = cfg.model_copy(update={"work_dir": url})
    assert str(run(remote)) == url
    assert_work_as(url, local)

    # A run killed in the split stage, after components: the markers of the later stages gone, and two
    # of the split stage's. The re-run redoes those tasks only, to the same bytes.
    fs, root = filesystem(url)
    stored = list(objects(url))
    split = sorted(n for n in stored if n.startswith("stats/split/"))
    later = [n for n in stored if n.startswith(("stats/decontam/", "stats/mix/"))]
    for name in ["_SUCCESS.json", *split[:2], *later]:
        fs.rm_file(f"{root}/{name}")
    capsys.readouterr()
    run(remote)
    log = capsys.readouterr().out
    assert "[components] done before" in log
    assert f"[split] {len(split)}/{len(split)} tasks: dups=0, {len(split) - 2} done before" in log
    assert f"[mix] {len(split)}/{len(split)} tasks" in log and "[mix] done before" not in log
    assert_work_as(url, local)

    shards = f"{s3_bucket}/shards"
    pack(pack_config(remote, shards))
    assert_packed_as(shards, local_pack)
    shutil.rmtree(WorkDir(url).staged_shards)  # packed in this node's temp folder, kept for a re-run


@pytest.mark.slow
@pytest.mark.nodes
def test_the_job_on_two_nodes_that_share_no_disk(runs, local_pack, s3_bucket, tmp_path):
    """`pipeline run` then `pipeline pack` on a head and a worker node whose /tmp are not shared (the
    worker's is a tmpfs of its own mount namespace: harness.ray_cluster), sources, work_dir and out_dir
    in the store: the outputs of the one-node run. Ray Data spreads the stages' tasks over both nodes,
    so a task on one node that opened a local file the other wrote (a scratch file, a staged shard, the
    driver's folder) would not find it and the job would fail. What the job writes locally stays in the
    driver's folder (its MLflow store) and the head's TMPDIR (pack's staging, kept for a re-run): no
    scratch file is left behind."""
    if (problem := private_tmp_problem()) is not None:
        pytest.skip(problem)
    _, _, s3_work, inputs = runs
    cfg = load(ROOT / "configs" / "data" / "sample.yaml", DataConfig, {"decontam.tasks": []})
    sources = {
        n: cfg.sources[n].model_copy(update={"paths": [f"{inputs}/{p}" for p in patterns]})
        for n, patterns in SOURCES.items()
    }
    work, shards = f"{s3_bucket}/work", f"{s3_bucket}/shards"
    job = pack_config(cfg.model_copy(update={"work_dir": work, "sources": sources}), shards)
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "data.yaml").write_text(json.dumps(job.model_dump(mode="json")))  # JSON is YAML
    mlflow = {"MLFLOW_TRACKING_URI": f"sqlite:///{driver}/m.db"}

    with ray_cluster(private_tmp=True) as cluster:
        result = cluster.run_pipeline([["run", "data.yaml"], ["pack", "data.yaml"]], cwd=driver, env=mlflow)
        assert result.returncode == 0, result.stderr[-3000:]
        assert {p.name for p in driver.iterdir()} == {"data.yaml", "m.db", "artifacts"}
        # Pack's staging (kept for a re-run) and tiktoken's cache of its ranks: no scratch file left.
        assert {p.name for p in cluster.head_tmp.iterdir()} == {"pipeline-staged", "data-gym-cache"}
    assert_work_as(work, s3_work)
    assert_packed_as(shards, local_pack)
