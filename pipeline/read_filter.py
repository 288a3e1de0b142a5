"""Stage 1, one task per input file: read, normalize, exclude, filter, count tokens.

Writes `filtered/<pid>.parquet` (kept documents), `rejects/<pid>.parquet` (dropped, with reason),
`bad/<pid>.parquet` (input that could not become a document) and, last, `stats/filter/<pid>.json`:
the flow of documents and tokens, the drop reasons, and what became of the file itself (rows read,
bad, kept, and whether it broke part-way: truncated or unreadable).
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tokenizer
from pipeline.cluster import ray_cpus
from pipeline.config import DataConfig, SourceConfig
from pipeline.filters import Doc, Filter, build_chain, run_chain
from pipeline.plan import Partition
from pipeline.sources import FILE, TRUNCATED, BadRow, Record, excluded, read_file
from pipeline.stage import Stage, partition_stage
from pipeline.storage import BAD_SCHEMA, FILTERED_SCHEMA, REJECT_SCHEMA, ParquetSink
from pipeline.workdir import WorkDir
from pipeline.workfiles import write_json

FILTER = "filter"


@functools.cache
def _encoder() -> tokenizer.Arcade100k:
    if (cpus := ray_cpus()) is not None:  # one encoding thread per CPU Ray gave this worker
        tokenizer.limit_threads(cpus)
    return tokenizer.load()


def count_tokens(text: str) -> int:
    return len(_encoder().encode_ordinary(text))


class Flow:
    """Documents and tokens still present after each step, per source: the report's stage table."""

    def __init__(self) -> None:
        self.docs: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()

    def add(self, step: str, tokens: int) -> None:
        self.docs[step] += 1
        self.tokens[step] += tokens

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {step: {"docs": self.docs[step], "tokens": self.tokens[step]} for step in self.docs}


def filter_document(
    doc: Doc, chain: list[Filter], flow: Flow, tokens: int
) -> tuple[bool, str | None, str | None, int]:
    """Run the chain, recording the flow; returns (kept, reason, rule, tokens of the final text)."""
    outcome = run_chain(chain, doc)
    for name, decision in outcome.decisions.items():
        if not decision.kept:
            break
        if decision.text is not None:  # the filter rewrote the text, so its token count changes here
            tokens = count_tokens(decision.text)
        flow.add(name, tokens)
    return outcome.kept, outcome.reason, outcome.rule, tokens


def filter_stage(cfg: DataConfig, work: WorkDir, parts: Sequence[Partition]) -> Stage[Partition]:
    sources, rejects = cfg.sources, cfg.write_rejects
    return partition_stage(FILTER, work, parts, lambda part: filter_partition(part, sources, work, rejects))


def filter_partition(
    part: Partition, sources: dict[str, SourceConfig], work: WorkDir, rejects: bool
) -> dict[str, int]:
    """Stage-1 task for one input file; returns (and stores) its stats."""
    task = _FileFilter(part, sources[part.source], work, rejects)
    for item in read_file(part.source, part.path, task.cfg):
        if isinstance(item, BadRow):
            task.add_bad_row(item)
        else:
            task.add_record(item)
    stats = task.finish()
    write_json(work.stats(FILTER, part.pid), stats)
    return {
        "rows": stats["rows"],
        "kept": stats["kept_docs"],
        "bad_rows": stats["bad_rows"],
        "broken_files": int(stats["file_error"] is not None),
    }


class _FileFilter:
    """One input file through the stage: its kept, dropped and bad outputs, and the counts of its stats."""

    def __init__(self, part: Partition, cfg: SourceConfig, work: WorkDir, rejects: bool):
        self.part, self.cfg = part, cfg
        self.chain = build_chain(cfg.filters)
        self.kept = ParquetSink(work.filtered(part.pid), FILTERED_SCHEMA)
        self.dropped = ParquetSink(work.rejects(part.pid), REJECT_SCHEMA) if rejects else None
        self.bad = ParquetSink(work.bad(part.pid), BAD_SCHEMA)
        self.flow, self.reasons = Flow(), defaultdict(Counter)
        self.rows, self.file_error = 0, None
        self.tail = "/".join(Path(part.path).parts[-2:])  # a bad row's id: source/<folder>/<file>#<row>

    def add_bad_row(self, item: BadRow) -> None:
        """Input that could not become a document, or (row FILE) why the file ended early."""
        doc_id = f"{self.part.source}/{self.tail}#{item.row}"
        counted_as = item.reason.split(":")[0]
        self._set_aside(doc_id, item.row, item.reason, item.raw, counted_as, rows=item.rows)
        if item.row == FILE:
            self.file_error = item.reason
        else:
            self.rows += item.rows

    def add_record(self, item: Record) -> None:
        """Exclude, filter and count one document, then keep or drop it."""
        self.rows += 1
        meta = json.dumps(item.meta, ensure_ascii=False)
        doc = Doc(item.id, item.text, self.part.source, lang=item.lang, meta=meta)
        tokens = count_tokens(doc.text)
        self.flow.add("read", tokens)
        rule = excluded(item, self.cfg.exclude)
        if rule is not None:
            self._drop(doc, "exclude", rule)
            return
        self.flow.add("exclude", tokens)
        try:
            keep, reason, rule, tokens = filter_document(doc, self.chain, self.flow, tokens)
        except Exception as e:  # a document that breaks a filter is set aside, not the whole run
            error = f"filter error: {e!r}"
            self._set_aside(doc.id, item.row, error, doc.text[:200], counted_as="filter error")
            return
        if keep:
            self._keep(doc, tokens)
        else:
            self._drop(doc, reason, rule)

    def _keep(self, doc: Doc, tokens: int) -> None:
        row = {"id": doc.id, "text": doc.text, "source": doc.source, "lang": doc.lang, "meta": doc.meta}
        self.kept.add({**row, "lang_score": doc.lang_score, "n_tokens": tokens})

    def _drop(self, doc: Doc, reason: str | None, rule: str | None) -> None:
        self.reasons[reason][rule or ""] += 1
        if self.dropped is not None:
            row = {"id": doc.id, "source": doc.source, "lang": doc.lang, "lang_score": doc.lang_score}
            self.dropped.add({**row, "reason": reason, "rule": rule, "text": doc.text})

    def _set_aside(
        self, doc_id: str, row: int, reason: str, raw: str, counted_as: str, rows: int = 1
    ) -> None:
        """One entry in bad/, standing for `rows` input rows (those of a row group that broke)."""
        source, path = self.part.source, self.part.path
        self.bad.add({"id": doc_id, "source": source, "path": path, "row": row, "reason": reason, "raw": raw})
        self.reasons["bad"][counted_as] += rows

    def finish(self) -> dict[str, Any]:
        """Close the outputs; returns the file's stats."""
        for sink in (self.kept, self.dropped, self.bad):
            if sink is not None:
                sink.close()
        return {
            "pid": self.part.pid,
            "source": self.part.source,
            "path": self.part.path,
            "flow": self.flow.as_dict(),
            "reasons": {k: dict(v) for k, v in self.reasons.items()},
            "kept_docs": self.kept.count,
            # The file: rows read (documents and bad rows, those of an unreadable row group too), and why
            # it ended early, if it did.
            "rows": self.rows,
            "bad_rows": self.reasons["bad"].total() - (self.file_error is not None),
            "truncated": self.file_error is not None and self.file_error.startswith(TRUNCATED),
            "file_error": self.file_error,
        }
