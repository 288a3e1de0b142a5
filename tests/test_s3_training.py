"""The trainer on object storage: shards read from an S3 URL through the node's cache, checkpoints
mirrored to one and brought back on a fresh node, and the one-line errors at that boundary. The S3 is
moto's server over HTTP (harness.s3); a dropped connection comes from a real TCP proxy
(harness.flaky_proxy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from conftest import micro_config, put_folder, write_config
from pydantic import ValidationError

from common.files import read_json, write_json
from common.objectstore import StorageError, filesystem, storage_error
from common.shards import ShardCache, ShardError, ShardSet, file_sha256, read_manifest
from harness.flaky_proxy import flaky_proxy
from training import checkpoint
from training.__main__ import main
from training.data import open_shards
from training.mirror import Part, complete_tags, pull, split_by_node, upload_checkpoint
from training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("mlflow_store")

ROOT = Path(__file__).resolve().parents[1]
# Checkpoints after steps 1 and 2; evaluation only at the end. As short as a resume can be.
RUN = {
    "schedule": {"warmup_steps": 1, "total_steps": 2},
    "batch": {"grad_accum": 1},
    "checkpoint": {"interval": 1, "keep_last": 2},
    "eval": {"interval": 100, "batches": 1},
}


def s3_client():
    return boto3.client("s3")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, shards):
    """The unbroken reference: the micro run on the local shard folder."""
    cfg = micro_config(tmp_path_factory.mktemp("local"), shards, **RUN)
    return Trainer(cfg).fit()


def test_shards_from_s3_train_as_from_the_folder_and_a_fresh_node_resumes_from_the_mirror(
    local_run, shards, s3_bucket, tmp_path, capsys
):
    url = put_folder(shards, f"{s3_bucket}/shards/micro")
    mirror = f"{s3_bucket}/run/checkpoints"
    data = {"shards": url, "cache_dir": str(tmp_path / "cache")}
    cfg = micro_config(
        tmp_path / "node1",
        shards,
        **{**RUN, "data": data, "checkpoint": {**RUN["checkpoint"], "mirror": mirror}},
    )
    trainer = Trainer(cfg)
    remote = trainer.fit()
    assert [r.loss for r in remote.history] == [r.loss for r in local_run.history]
    assert remote.evals == local_run.evals
    # Each shard fetched once (the 2 training shards, the validation one), into the cache dir.
    assert trainer.train_shards.cache.downloads == 3
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.arrow"))
    assert cached == ["shard-00000.arrow", "shard-00000.arrow", "shard-00001.arrow"]
    tags = sorted(
        o["Key"] for o in s3_client().list_objects_v2(Bucket=s3_bucket[5:], Prefix="run/")["Contents"]
    )
    assert "run/checkpoints/latest" in tags and "run/checkpoints/step_00000002/checksums.json" in tags

    # A fresh node (an empty checkpoint dir, the same shard cache) whose newest upload was cut short:
    # step 2 lost its checksums, so the resume takes step 1 and trains on as the unbroken run did.
    s3_client().delete_object(Bucket=s3_bucket[5:], Key="run/checkpoints/step_00000002/checksums.json")
    fresh = micro_config(
        tmp_path / "node2",
        shards,
        **{**RUN, "data": data, "checkpoint": {**RUN["checkpoint"], "mirror": mirror}},
    )
    capsys.readouterr()
    resumed = Trainer(fresh)
    out = capsys.readouterr().out
    assert f"{mirror}/step_00000002 is incomplete: no checksums.json: its upload did not finish" in out
    assert resumed.step == 1 and checkpoint.why_incomplete(fresh.checkpoint.dir / "step_00000001") is None
    rest = resumed.fit()
    assert [r.loss for r in rest.history] == [r.loss for r in local_run.history[1:]]
    assert resumed.train_shards.cache.downloads == 0  # every shard verified in the cache, none fetched


def test_a_corrupt_cached_shard_is_fetched_again_and_a_replaced_one_is_refused(shards, s3_bucket, tmp_path):
    url = put_folder(shards, f"{s3_bucket}/shards")
    cache = ShardCache(tmp_path / "cache")
    expected = list(ShardSet(shards))
    assert [r.tolist() for r in open_shards(url, 32, 100352, cache=cache)] == [r.tolist() for r in expected]
    copy = cache.local_folder(url) / "shard-00001.arrow"
    with open(copy, "r+b") as f:  # a bit flipped on the node's disk
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    again = ShardCache(tmp_path / "cache")  # a later run
    assert [r.tolist() for r in ShardSet(url, cache=again)] == [r.tolist() for r in expected]
    assert again.downloads == 1 and file_sha256(copy) == file_sha256(shards / "shard-00001.arrow")

    # The object replaced after the manifest was written: fetched twice, then a one-line error.
    fs, path = filesystem(url)
    fs.pipe_file(f"{path}/shard-00000.arrow", (shards / "shard-00001.arrow").read_bytes())
    with pytest.raises(
        ShardError, match=rf"^{url}/shard-00000.arrow: sha256 \w+ does not match the manifest"
    ):
        list(ShardSet(url, cache=ShardCache(tmp_path / "other")))


def test_the_cache_keeps_to_its_bound(shards, s3_bucket, tmp_path):
    url = put_folder(shards, f"{s3_bucket}/shards")
    one = (shards / "shard-00000.arrow").stat().st_size
    cache = ShardCache(tmp_path / "cache", max_bytes=one + one // 2)  # room for one shard
    rows = list(ShardSet(url, cache=cache))
    assert len(rows) == read_manifest(url).rows
    assert len(list(cache.local_folder(url).glob("*.arrow"))) == 1


def test_storage_errors_are_one_line_naming_the_url(shards, s3_bucket, tmp_path, capsys):
    cfg = micro_config(tmp_path, shards, **RUN, data={"shards": "s3://no-such-bucket-here/shards"})
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: cannot reach s3://no-such-bucket-here/shards/manifest.json: bucket 'no-such-bucket-here' "
        "does not exist\n"
    )

    with pytest.raises(StorageError, match=f"^{s3_bucket}/shards/manifest.json does not exist$"):
        read_manifest(f"{s3_bucket}/shards")
    with pytest.raises(ValidationError, match="'runs/x' is not an object storage URL"):
        micro_config(tmp_path, shards, checkpoint={"mirror": "runs/x"})

    # A write the bucket's policy denies: the checkpoint upload says which.
    folder = tmp_path / "ckpt" / "step_00000002"
    write_json(folder / "trainer.json", {"step": 2})
    checkpoint.record_files(folder)
    bucket = s3_bucket[5:]
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    s3_client().put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    with pytest.raises(StorageError) as denied:
        upload_checkpoint(folder, f"{s3_bucket}/ckpt", keep_last=2)
    assert str(denied.value) == (
        f"access to {s3_bucket}/ckpt/step_00000002/trainer.json denied (PutObject); "
        "check the credentials' permissions on it"
    )
    s3_client().delete_bucket_policy(Bucket=bucket)

    # An object replaced while it is read.
    fs, path = filesystem(f"{s3_bucket}/obj")
    fs.pipe_file(path, b"first")
    reader = fs.open(path, "rb", cache_type="none")
    fs.pipe_file(path, b"second version")
    with pytest.raises(OSError) as changed:
        reader.read()
    assert storage_error(changed.value, f"{s3_bucket}/obj") == (
        f"error: {s3_bucket}/obj changed while it was read (its ETag or size differs from when it was "
        "listed); read it again once its writer is done"
    )


def node_part(root: Path, own: str) -> Path:
    """A node's part of checkpoint step 2 (what every node writes, and a file of its own), checksummed."""
    folder = root / "step_00000002"
    write_json(folder / "trainer.json", {"step": 2})
    write_json(folder / own, {"rank": own})
    checkpoint.record_files(folder)
    return folder


def test_a_checkpoint_spread_over_nodes_is_complete_at_the_mirror_once_every_part_is_up(s3_bucket, tmp_path):
    url = f"{s3_bucket}/ckpt"
    folders = [node_part(tmp_path / "node0", "rng-rank0.pt"), node_part(tmp_path / "node1", "rng-rank1.pt")]
    parts = split_by_node([read_json(folder / checkpoint.CHECKSUMS)["files"] for folder in folders])
    assert [sorted(part) for part in parts] == [["rng-rank0.pt", "trainer.json"], ["rng-rank1.pt"]]
    # What an earlier, cut-short upload of node 1 left: a marker listing other bytes.
    filesystem(url)[0].pipe_file(f"{url[5:]}/step_00000002/.part-1.json", b'{"rng-rank1.pt": {}}\n')

    first = threading.Thread(target=upload_checkpoint, args=(folders[0], url, 2, Part(0, parts)))
    first.start()
    first.join(timeout=1.5)
    assert first.is_alive() and complete_tags(url) == []  # node 0 waits for node 1's part
    upload_checkpoint(folders[1], url, 2, Part(1, parts))
    first.join(timeout=30)
    assert complete_tags(url) == ["step_00000002"]
    pulled = pull(url, "step_00000002", tmp_path / "fresh")
    assert sorted(p.name for p in pulled.iterdir()) == [
        checkpoint.CHECKSUMS,
        "rng-rank0.pt",
        "rng-rank1.pt",
        "trainer.json",
    ]
    assert checkpoint.why_incomplete(pulled) is None  # every node's file, with the hash that node wrote


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter (a node with only `env` to reach the store), from the repo root."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_missing_credentials_are_told_in_one_line(shards, s3_bucket, tmp_path):
    url = put_folder(shards, f"{s3_bucket}/shards")
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    code = f"from common.shards import read_manifest\ntry: read_manifest({url!r})\n"
    code += "except ValueError as e: print(e)"
    done = run_python(code, env)
    assert done.stdout == (
        f"cannot reach {url}/manifest.json: no credentials for object storage (set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the node a role)\n"
    ), done.stderr


def test_a_connection_dropped_mid_object_is_retried_and_the_bytes_are_whole(shards, s3_bucket, tmp_path):
    url = put_folder(shards, f"{s3_bucket}/shards")
    shard = shards / "shard-00000.arrow"
    assert shard.stat().st_size > 4000
    with flaky_proxy(os.environ["AWS_ENDPOINT_URL"], "shards/shard-00000.arrow", cut_after=3000) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
        copy = (f"{url}/shard-00000.arrow", str(tmp_path / "copy"))
        code = f"from common.objectstore import download\ndownload(*{copy!r})"
        done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "copy").read_bytes() == shard.read_bytes()
    assert proxy.cuts == 1 and proxy.gets == 2  # cut once, read again from where it stopped
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temporary left behind
