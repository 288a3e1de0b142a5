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
from common.files import write_json
from pipeline.cluster import ray_cpus
from pipeline.config import DataConfig, SourceConfig
from pipeline.filters import Doc, Filter, build_chain, run_chain
from pipeline.layout import WorkDir
from pipeline.plan import Partition
from pipeline.sources import FILE, TRUNCATED, BadRow, excluded, read_file
from pipeline.stage import Stage, partition_stage
from pipeline.storage import BAD_SCHEMA, FILTERED_SCHEMA, REJECT_SCHEMA, ParquetSink

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
        if name == "c4":  # C4 keeps only its good lines, so the token count changes here
            tokens = count_tokens(doc.text)
        flow.add(name, tokens)
    return outcome.kept, outcome.reason, outcome.rule, tokens


def _bad_row(doc_id: str, source: str, path: str, row: int, reason: str, raw: str) -> dict[str, Any]:
    return {"id": doc_id, "source": source, "path": path, "row": row, "reason": reason, "raw": raw}


def filter_stage(cfg: DataConfig, work: WorkDir, parts: Sequence[Partition]) -> Stage[Partition]:
    sources, rejects = cfg.sources, cfg.write_rejects
    return partition_stage(FILTER, work, parts, lambda part: filter_partition(part, sources, work, rejects))


def filter_partition(
    part: Partition, sources: dict[str, SourceConfig], work: WorkDir, rejects: bool
) -> dict[str, int]:
    """Stage-1 task for one input file; returns (and stores) its stats."""
    pid, source, path = part.pid, part.source, part.path
    cfg = sources[source]
    chain = build_chain(cfg.filters)
    kept = ParquetSink(work.filtered(pid), FILTERED_SCHEMA)
    dropped = ParquetSink(work.rejects(pid), REJECT_SCHEMA) if rejects else None
    bad = ParquetSink(work.bad(pid), BAD_SCHEMA)
    flow, reasons = Flow(), defaultdict(Counter)
    tail = "/".join(Path(path).parts[-2:])
    rows, file_error = 0, None
    for item in read_file(source, path, cfg):
        if isinstance(item, BadRow):
            bad.add(_bad_row(f"{source}/{tail}#{item.row}", source, path, item.row, item.reason, item.raw))
            reasons["bad"][item.reason.split(":")[0]] += 1
            if item.row == FILE:
                file_error = item.reason
            else:
                rows += 1
            continue
        rows += 1
        doc = Doc(item.id, item.text, source, lang=item.lang, meta=json.dumps(item.meta, ensure_ascii=False))
        tokens = count_tokens(doc.text)
        flow.add("read", tokens)
        rule = excluded(item, cfg.exclude)
        if rule is not None:
            keep, reason = False, "exclude"
        else:
            flow.add("exclude", tokens)
            try:
                keep, reason, rule, tokens = filter_document(doc, chain, flow, tokens)
            except Exception as e:  # a document that breaks a filter is set aside, not the whole run
                bad.add(_bad_row(doc.id, source, path, item.row, f"filter error: {e!r}", doc.text[:200]))
                reasons["bad"]["filter error"] += 1
                continue
        if keep:
            kept.add(
                {
                    "id": doc.id,
                    "text": doc.text,
                    "source": source,
                    "lang": doc.lang,
                    "meta": doc.meta,
                    "lang_score": doc.lang_score,
                    "n_tokens": tokens,
                }
            )
            continue
        reasons[reason][rule or ""] += 1
        if dropped is not None:
            dropped.add(
                {
                    "id": doc.id,
                    "source": source,
                    "lang": doc.lang,
                    "lang_score": doc.lang_score,
                    "reason": reason,
                    "rule": rule,
                    "text": doc.text,
                }
            )
    for sink in (kept, dropped, bad):
        if sink is not None:
            sink.close()
    bad_rows = bad.count - (file_error is not None)
    stats = {
        "pid": pid,
        "source": source,
        "path": path,
        "flow": flow.as_dict(),
        "reasons": {k: dict(v) for k, v in reasons.items()},
        "kept_docs": kept.count,
        # The file: rows read (documents and bad rows), and why it ended early, if it did.
        "rows": rows,
        "bad_rows": bad_rows,
        "truncated": file_error is not None and file_error.startswith(TRUNCATED),
        "file_error": file_error,
    }
    write_json(work.stats(FILTER, pid), stats)
    return {
        "rows": rows,
        "kept": kept.count,
        "bad_rows": bad_rows,
        "broken_files": int(file_error is not None),
    }
