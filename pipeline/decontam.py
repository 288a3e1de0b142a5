"""Stage 6: remove training documents that share a word n-gram with a document of an evaluation task.

The eval side is built once, on the driver (`eval_ngrams`): every evaluation document of the configured
lm-eval tasks (the bundled ones, and lm-eval's own whose data set is on this machine) as the model is
scored on it: its text, the target delimiter and the right answer (or the task's own
`doc_to_decontamination_query`). Text is normalised as lm-eval's and GPT-3's decontamination
normalise it: lowercased, punctuation deleted, split on whitespace. An eval document's keys are its
`ngram`-word windows; one shorter than that is a single key matched whole (GPT-3's rule). The keys
travel to the partition tasks as word ids with 64-bit window hashes: the hashes find candidate windows
of a training document, the word ids confirm them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.config import ConfigError
from common.files import read_json, write_json
from pipeline.config import DecontamConfig
from pipeline.layout import WorkDir, remove_outputs
from pipeline.mix import doc_counts
from pipeline.plan import Partition
from pipeline.stage import Stage, partition_stage
from pipeline.storage import write_table
from pipeline.text import delete_punctuation

if TYPE_CHECKING:
    from lm_eval.api.task import Task

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
    """The keys of every configured task's evaluation documents. A task whose data set is not on this
    machine is named in one warning line and skipped; an unknown task name is a ConfigError."""
    ngrams = EvalNgrams(cfg.ngram)
    if not cfg.tasks:
        print("[decontam] no eval tasks configured (decontam.tasks): every document is kept", flush=True)
        return ngrams.freeze()
    for task, text in _eval_documents(cfg.tasks, ngrams.missing):
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


def _eval_documents(names: Sequence[str], missing: list[str]) -> Iterator[tuple[str, str]]:
    """(task, text) of each evaluation document; appends the names whose data are absent to `missing`."""
    # Data sets come from the local cache only, as for `python -m evaluation`; set before lm-eval loads.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.api.group import Group

    from evaluation.tasks import MissingDataError, load_tasks, task_manager

    manager = task_manager(names)
    for name in names:
        try:
            loaded = load_tasks(manager, {name: None})
        except MissingDataError:
            missing.append(name)
            continue
        except ValueError as e:
            raise ConfigError(f"decontam.tasks: {e}") from e
        for item in loaded:
            for task in item.get_all_tasks() if isinstance(item, Group) else [item]:
                for doc in task.eval_docs:
                    yield task.config.task, _scored_text(task, doc)


def _scored_text(task: Task, doc: dict) -> str:
    """The text the model is scored on: context, delimiter and right answer (lm-eval's own query
    when the task defines one)."""
    if task.should_decontaminate():
        return str(task.doc_to_decontamination_query(doc))
    text, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(text, int):  # Winogrande-style: the right context by index, one shared continuation
            text = choices[text]
        elif isinstance(target, int):
            target = choices[target]
    if isinstance(target, list):
        target = target[0] if target else ""
    return f"{text}{task.config.target_delimiter}{target}"


def decontam_stage(work: WorkDir, parts: Sequence[Partition], ngrams: EvalNgrams) -> Stage[Partition]:
    return partition_stage(DECONTAM, work, parts, lambda part: decontam_partition(part, work, ngrams))


def decontam_partition(part: Partition, work: WorkDir, ngrams: EvalNgrams) -> dict[str, int]:
    """Stage-6 task: split one train partition into its clean documents and its contaminated ones."""
    pid = part.pid
    train = pq.read_table(work.train(pid))
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
    done = [work.stats(DECONTAM, pid) for pid in pids if work.stats(DECONTAM, pid).exists()]
    if all(read_json(path)["ngrams"] == fingerprint for path in done):
        return
    print("[decontam] the eval tasks' documents changed: redoing the decontam and mix stages", flush=True)
    remove_outputs(work.decontam_outputs())
