"""The shard contract: write, read back (ours and plain pyarrow), and refuse bad folders clearly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import tokenizer
from common.shards import (
    MANIFEST,
    Manifest,
    ShardError,
    ShardSet,
    TokenizerInfo,
    manifest_hash,
    shard_name,
    write_manifest,
    write_shard,
)

SEQ = 15
FINGERPRINT = "f" * 64


def make_folder(folder, shard_rows=(5, 3)):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, tokenizer.N_VOCAB, size=(n, SEQ + 1), dtype=np.int32) for n in shard_rows]
    shards = [write_shard(folder / shard_name(i), a) for i, a in enumerate(arrays)]
    info = TokenizerInfo(
        name="arcade100k", fingerprint=FINGERPRINT, n_vocab=tokenizer.N_VOCAB, eot_id=tokenizer.EOT_ID
    )
    write_manifest(folder, Manifest(seq_len=SEQ, tokenizer=info, shards=shards, data_config_hash="abc"))
    return np.concatenate(arrays)


def test_round_trip_global_index(tmp_path):
    rows = make_folder(tmp_path)
    shards = ShardSet(tmp_path, expect_seq_len=SEQ, expect_tokenizer=FINGERPRINT, expect_vocab=100_352)
    assert len(shards) == 8 and shards.manifest.rows == 8 and shards.manifest.tokens == 8 * (SEQ + 1)
    for i in range(len(shards)):
        assert np.array_equal(shards[i], rows[i])
    assert np.array_equal(np.stack(list(shards)), rows)
    with pytest.raises(IndexError):
        shards[8]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_independent_pyarrow_read(tmp_path):
    rows = make_folder(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    tables = [
        pa.ipc.open_file(pa.memory_map(str(tmp_path / s["file"]))).read_all() for s in manifest["shards"]
    ]
    assert tables[0].schema.field("input_ids").type == pa.list_(pa.int32(), SEQ + 1)
    assert np.array_equal(np.array(pa.concat_tables(tables).column("input_ids").to_pylist()), rows)


def test_corrupt_shard_is_refused(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / shard_name(1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sha256"):
        ShardSet(tmp_path)


def test_truncated_shard_is_refused_even_without_checksums(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / shard_name(0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ShardError, match="sha256"):
        ShardSet(tmp_path)
    with pytest.raises(ShardError, match="not a readable Arrow IPC file"):
        ShardSet(tmp_path, verify_checksums=False)


def test_missing_shard_and_missing_manifest(tmp_path):
    with pytest.raises(ShardError, match="no manifest.json"):
        ShardSet(tmp_path)
    make_folder(tmp_path)
    (tmp_path / shard_name(1)).unlink()
    with pytest.raises(ShardError, match="missing"):
        ShardSet(tmp_path)


def test_a_garbled_manifest_is_one_line(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError) as garbled:
        ShardSet(tmp_path)
    assert str(garbled.value) == (
        f"{tmp_path / 'manifest.json'}: not a valid manifest: Invalid JSON: key must be a string at line 1 "
        "column 2"
    )
    (tmp_path / "manifest.json").write_text('{"seq_len": "long"}')
    with pytest.raises(
        ShardError, match=r"^\S+: not a valid manifest: seq_len: Input should be a valid integer"
    ):
        ShardSet(tmp_path)
    assert "\n" not in str(garbled.value)


def test_mismatch_with_the_model_is_refused(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ShardError, match="seq_len 15"):
        ShardSet(tmp_path, expect_seq_len=4096)
    with pytest.raises(ShardError, match="not the expected tokenizer"):
        ShardSet(tmp_path, expect_tokenizer="0" * 64)
    with pytest.raises(ShardError, match="model's vocab"):
        ShardSet(tmp_path, expect_vocab=50_000)


def test_manifest_rows_must_match_the_file(tmp_path):
    make_folder(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["shards"][0]["rows"] = 6
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="5 rows, the manifest says 6"):
        ShardSet(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ShardError, match="not a valid manifest"):
        ShardSet(tmp_path)


def test_wrong_row_width_and_empty_shard(tmp_path):
    make_folder(tmp_path)
    write_shard(tmp_path / shard_name(0), np.zeros((5, SEQ + 2), dtype=np.int32))  # listed sha now wrong too
    with pytest.raises(ShardError, match="schema"):
        ShardSet(tmp_path, verify_checksums=False)
    with pytest.raises(ShardError, match="non-empty 2-D"):
        write_shard(tmp_path / "x.arrow", np.zeros((0, SEQ + 1), dtype=np.int32))


def test_manifest_hash_changes_with_content(tmp_path):
    make_folder(tmp_path)
    before = manifest_hash(tmp_path)
    manifest = Manifest.model_validate_json((tmp_path / MANIFEST).read_text())
    write_manifest(tmp_path, manifest.model_copy(update={"partial_row_tokens": 7}))
    assert manifest_hash(tmp_path) != before
