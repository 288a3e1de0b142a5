"""Stage 6: remove training documents that share a word n-gram with a document of an evaluation task.

The eval side is built once, on the driver (`eval_ngrams`), from the eval documents file of the
configured lm-eval tasks (`decontam.documents`, written by `python -m evaluation documents`): every
evaluation document as the model is scored on it. Text is normalised as lm-eval's and GPT-3's decontamination
normalise it: lowercased, punctuation deleted, split on whitespace. An eval document's keys are its
`ngram`-word windows; one shorter than that is a single key matched whole (GPT-3's rule). The keys
travel to the partition tasks as word ids with 64-bit window hashes: the hashes find candidate windows
of a training document, the word ids confirm them.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.config import ConfigError
from pipeline.config import DecontamConfig
from pipeline.eval_documents import EvalDocuments, read_eval_documents
from pipeline.mix import doc_counts
from pipeline.normalize import delete_punctuation
from pipeline.plan import Partition
from pipeline.stage import Stage, partition_stage
from pipeline.storage import write_table
from pipeline.workdir import WorkDir, remove_outputs
from pipeline.workfiles import exists, read_json, read_table, write_json

DECONTAM = "decontam"
CONTAMINATED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("lang", pa.string()),
        ("reason", pa.string()),  # always "decontam"
        ("rule", pa.string()),  # the lm-eval task of the first shared n-gram
        ("ngram", pa.string()),  # that n-gram, normalised
        ("text", pa.string()),
    ]
)

# An odd 64-bit multiplier: window hashes are polynomials in it over the word ids, modulo 2**64.
_BASE = np.uint64(0x9E3779B97F4A7C15)


def normalize_words(text: str) -> list[str]:
    """lm-eval's decontamination normalisation: lowercase, delete punctuation, split on whitespace."""
    return delete_punctuation(text.lower()).split()  # lm-eval's Janitor deletes it


def window_hashes(ids: np.ndarray, length: int) -> np.ndarray:
    """The hash of every `length`-word window of `ids` (uint64), in order."""
    count = len(ids) - length + 1
    hashes = np.zeros(count, np.uint64)
    for k in range(length):
        hashes = hashes * _BASE + ids[k : k + count]
    return hashes


@dataclass
class EvalNgrams:
    """The keys of the eval documents: by key length (`ngram`, or shorter for short documents), window
    hash -> (word ids, task). Word ids are 1-based; a word no key contains is 0 in a training document."""

    ngram: int
    vocab: dict[str, int] = field(default_factory=dict)
    keys: dict[int, dict[int, tuple[tuple[int, ...], str]]] = field(default_factory=dict)
    items: Counter[str] = field(default_factory=Counter)  # eval documents per task
    missing: list[str] = field(default_factory=list)  # configured names whose data set is absent
    # Set by `freeze`: the sorted hashes per key length, and the fingerprint naming the key set (a
    # partition decontaminated against another set is stale).
    sorted_hashes: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    fingerprint: str = ""

    def add(self, task: str, text: str) -> None:
        words = normalize_words(text)
        if not words:
            return
        self.items[task] += 1
        ids = np.array([self.vocab.setdefault(w, len(self.vocab) + 1) for w in words], np.uint64)
        length = min(self.ngram, len(ids))
        table = self.keys.setdefault(length, {})
        for start, h in enumerate(window_hashes(ids, length).tolist()):
            table.setdefault(h, (tuple(ids[start : start + length].tolist()), task))

    def freeze(self) -> EvalNgrams:
        """Sort the hashes and compute the fingerprint; call once every document is added."""
        self.sorted_hashes = {length: np.array(sorted(t), np.uint64) for length, t in self.keys.items()}
        words = sorted(self.vocab, key=self.vocab.__getitem__)
        digest = hashlib.sha256(f"{self.ngram}\x1e{words}".encode())
        for length, hashes in sorted(self.sorted_hashes.items()):
            tasks = "\x1f".join(self.keys[length][h][1] for h in hashes.tolist())
            digest.update(f"\x1e{length}".encode() + hashes.tobytes() + tasks.encode())
        self.fingerprint = digest.hexdigest()
        return self

    def summary(self) -> dict[str, Any]:
        """For stats.json: the n-gram size, eval documents per task, keys, and the tasks without data."""
        keys = sum(len(t) for t in self.keys.values())
        return {"ngram": self.ngram, "tasks": dict(self.items), "keys": keys, "missing_tasks": self.missing}

    def first_match(self, text: str) -> tuple[str, str] | None:
        """(task, normalised n-gram) of the first window of `text` equal to a key, or None."""
        words = normalize_words(text)
        ids = np.fromiter(map(self.vocab.get, words, itertools.repeat(0)), np.uint64, len(words))
        # Running count of unknown words: a window holding one cannot be a key.
        unknown = np.concatenate(([0], np.cumsum(ids == 0)))
        best: tuple[int, int, str] | None = None
        for length, table in self.keys.items():
            if len(ids) < length:
                continue
            hashes, known = window_hashes(ids, length), self.sorted_hashes[length]
            at = np.minimum(np.searchsorted(known, hashes), len(known) - 1)
            candidates = (unknown[length:] == unknown[:-length]) & (known[at] == hashes)
            for start in np.flatnonzero(candidates).tolist():
                words_ids, task = table[int(hashes[start])]
                if words_ids == tuple(ids[start : start + length].tolist()):
                    if best is None or start < best[0]:
                        best = (start, length, task)
                    break
        if best is None:
            return None
        start, length, task = best
        return task, " ".join(words[start : start + length])


def eval_ngrams(cfg: DecontamConfig) -> EvalNgrams:
    """The keys of every configured task's evaluation documents, from the eval documents file. A task
    whose data set was not on the machine that wrote it is named in one warning line; a file that is
    absent or was written for other tasks is a ConfigError."""
    ngrams = EvalNgrams(cfg.ngram)
    if not cfg.tasks:
        print("[decontam] no eval tasks configured (decontam.tasks): every document is kept", flush=True)
        return ngrams.freeze()
    docs = _read_documents(cfg)
    ngrams.missing.extend(docs.missing)
    for task, text in docs.documents:
        ngrams.add(task, text)
    keys = ngrams.summary()["keys"]
    print(
        f"[decontam] {keys:,} eval keys ({cfg.ngram}-grams; whole items when shorter) from "
        f"{ngrams.items.total():,} documents of {len(ngrams.items)} tasks",
        flush=True,
    )
    if ngrams.missing:
        print(
            f"[decontam] warning: no data on this machine for {', '.join(ngrams.missing)}: "
            "training data is not decontaminated against them",
            flush=True,
        )
    return ngrams.freeze()


def _read_documents(cfg: DecontamConfig) -> EvalDocuments:
    write = f"python -m evaluation documents --tasks {','.join(cfg.tasks)} --out {cfg.documents or 'FILE'}"
    if cfg.documents is None:
        raise ConfigError(f"decontam.tasks needs decontam.documents, the eval documents file ({write})")
    if not Path(cfg.documents).is_file():
        raise ConfigError(f"decontam.documents: no file {cfg.documents}; write it with `{write}`")
    docs = read_eval_documents(cfg.documents)
    if docs.tasks != cfg.tasks:
        raise ConfigError(
            f"decontam.documents: {cfg.documents} holds the documents of {docs.tasks}, not of "
            f"decontam.tasks; write it again with `{write}`"
        )
    return docs


def decontam_stage(work: WorkDir, parts: Sequence[Partition], ngrams: EvalNgrams) -> Stage[Partition]:
    return partition_stage(DECONTAM, work, parts, lambda part: decontam_partition(part, work, ngrams))


def decontam_partition(part: Partition, work: WorkDir, ngrams: EvalNgrams) -> dict[str, int]:
    """Stage-6 task: split one train partition into its clean documents and its contaminated ones."""
    pid = part.pid
    train = read_table(work.train(pid))
    matches = [ngrams.first_match(text) for text in train.column("text").to_pylist()]
    hit = pa.array([m is not None for m in matches], pa.bool_())
    found = [m for m in matches if m is not None]
    removed = train.filter(hit)
    columns = {
        "id": removed.column("id"),
        "source": removed.column("source"),
        "lang": removed.column("lang"),
        "reason": pa.array([DECONTAM] * len(found), pa.string()),
        "rule": pa.array([task for task, _ in found], pa.string()),
        "ngram": pa.array([gram for _, gram in found], pa.string()),
        "text": removed.column("text"),
    }
    write_table(work.contaminated(pid), pa.table(columns, schema=CONTAMINATED_SCHEMA))
    kept = train.filter(pc.invert(hit))
    write_table(work.decontaminated(pid), kept)
    stats = {
        "pid": pid,
        "source": part.source,
        DECONTAM: doc_counts(kept),
        "contaminated": dict(Counter(task for task, _ in found)),
        "ngrams": ngrams.fingerprint,
    }
    write_json(work.stats(DECONTAM, pid), stats)
    return {"contaminated": len(found)}


def drop_stale(work: WorkDir, pids: Sequence[str], fingerprint: str) -> None:
    """Remove the decontamination and mix outputs when a finished partition used other eval keys
    (the eval tasks' items changed): both stages then run again."""
    done = [work.stats(DECONTAM, pid) for pid in pids if exists(work.stats(DECONTAM, pid))]
    if all(read_json(path)["ngrams"] == fingerprint for path in done):
        return
    print("[decontam] the eval tasks' documents changed: redoing the decontam and mix stages", flush=True)
    remove_outputs(work.decontam_outputs())
