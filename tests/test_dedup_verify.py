"""LSH candidates are verified against their whole MinHash signatures: a pair that shares a band key but
whose signatures agree on less than `min_similarity` of their values is not a duplicate, unless the
check is off (`min_similarity: 0`, the reference pipelines' LSH-only behaviour)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.stages import run_in_process
from pipeline import dedup, lsh
from pipeline.components import components
from pipeline.config import DedupConfig
from pipeline.normalize import normalize_for_dedup
from pipeline.plan import Partition
from pipeline.storage import write_table
from pipeline.workdir import WorkDir

# Lowercase letters only: normalization (which folds digits and case) leaves these words alone.
VOCAB = ["w" + str(i).translate(str.maketrans("0123456789", "abcdefghij")) for i in range(5000)]


def edited(words: list[str], edits: int, rng: random.Random) -> list[str]:
    out = list(words)
    for at in rng.sample(range(len(out)), edits):
        out[at] = rng.choice(VOCAB)
    return out


def colliding_pair_below(cfg: DedupConfig) -> tuple[str, str, float]:
    """A document and an edited copy that share a band key while their signatures agree on just under
    `min_similarity` of their values (the tail of the LSH curve), found by trying seeded edits."""
    rng = random.Random(0)
    words = [rng.choice(VOCAB) for _ in range(600)]
    base = lsh.minhash(" ".join(words), cfg)
    for _ in range(2000):
        copy = " ".join(edited(words, 28, rng))
        sig = lsh.minhash(copy, cfg)
        share = float(np.mean(sig == base))
        collide = set(lsh.band_keys(sig, cfg)) & set(lsh.band_keys(base, cfg))
        if collide and cfg.min_similarity - 0.05 <= share < cfg.min_similarity:
            return " ".join(words), copy, share
    raise AssertionError("no colliding pair just below the threshold in 2000 tries")


def run_dedup(tmp: Path, texts: list[list[str]], cfg: DedupConfig) -> tuple[dict[int, dict], int]:
    """The dedup stages on a filtered partition per list of texts, in priority order: the dropped rows by
    node, and the band edges that verification removed."""
    work = WorkDir(tmp)
    parts = [Partition(f"{i}-src", i, "src", f"in{i}") for i in range(len(texts))]
    buckets = 2
    for part, docs in zip(parts, texts, strict=True):
        write_table(work.filtered(part.pid), pa.table({"text": docs}))
        dedup.signature_partition(part, cfg, work, buckets)
    stats = [dedup.bucket_partition(b, work, cfg) for b in range(buckets)]
    components(work, 1, run_in_process)
    dropped = {r["node"]: r for r in pq.read_table(work.dropped).to_pylist()}
    return dropped, sum(s["dissimilar"] for s in stats)


def test_a_colliding_pair_below_min_similarity_is_merged_only_without_the_check(tmp_path: Path):
    on = DedupConfig()
    original, below, share = colliding_pair_below(on)
    assert normalize_for_dedup(below) == below  # the share measured is the one dedup sees
    rng = random.Random(1)
    near = " ".join(edited(original.split(), 3, rng))  # Jaccard about 0.95
    unrelated = " ".join(rng.choice(VOCAB) for _ in range(600))
    texts = [[original, unrelated], [below, near, original]]
    first = dedup.node_id(0, 0)
    below_node, near_node, exact_node = (dedup.node_id(1, row) for row in range(3))

    checked, dissimilar = run_dedup(tmp_path / "on", texts, on)
    assert dissimilar > 0
    assert set(checked) == {near_node, exact_node}, share
    assert checked[near_node]["root"] == checked[exact_node]["root"] == first
    assert checked[exact_node]["reason"] == "exact_dup" and checked[near_node]["reason"] == "near_dup"

    lsh_only, dissimilar = run_dedup(tmp_path / "off", texts, DedupConfig(min_similarity=0))
    assert dissimilar == 0
    assert set(lsh_only) == {below_node, near_node, exact_node}
    assert lsh_only[below_node] == {"node": below_node, "root": first, "reason": "near_dup"}
    assert not (tmp_path / "off" / "dedup" / "minhash").exists(), "signatures stored that nothing reads"


def test_stored_signatures_estimate_the_share_of_equal_minhash_values(tmp_path: Path):
    cfg = DedupConfig()
    rng = random.Random(2)
    words = [rng.choice(VOCAB) for _ in range(300)]
    texts = [" ".join(edited(words, edits, rng)) for edits in (0, 5, 20, 60)]
    work = WorkDir(tmp_path)
    part = Partition("0-src", 0, "src", "in0")
    write_table(work.filtered(part.pid), pa.table({"text": texts}))
    dedup.signature_partition(part, cfg, work, 1)
    sigs = [lsh.minhash(t, cfg) for t in texts]
    exact = np.array([np.mean(sigs[0] == s) for s in sigs])
    nodes = np.array([dedup.node_id(0, row) for row in range(len(texts))])
    stored = dedup.StoredMinhashes(work, cfg).similarity(np.repeat(nodes[0], len(nodes)), nodes)
    # 16 of 64 bits per value: a spurious agreement has probability 2^-16 per value.
    assert np.abs(stored - exact).max() <= 2 / (cfg.bands * cfg.rows)
    assert stored[0] == 1.0 and np.all(np.diff(stored) < 0)
