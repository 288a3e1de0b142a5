"""`python -m pipeline explain --source NAME DOCS.jsonl`: one source's filter chain, document by document.

It calls `filters.run_chain` with the chain built from the same config section as the Ray job, so a
decision here is the decision there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from common.config import ConfigError
from pipeline.config import DataConfig
from pipeline.filters import Doc, build_chain, run_chain
from pipeline.sources import READERS, BadRow, parse_line, unwritable


def explain(cfg: DataConfig, source: str, lines: Iterable[bytes]) -> Iterator[dict]:
    """One result per input line: id, lang, lang_score, kept, reason, rule and every filter's decision;
    a line the data job would set aside as a bad row (invalid UTF-8, a lone surrogate escape, malformed
    JSON, no string `text`) gives its line number and the job's reason instead."""
    if source not in cfg.sources:
        raise ConfigError(f"unknown source {source!r}; the config has: {', '.join(cfg.sources)}")
    src = cfg.sources[source]
    chain = build_chain(src.filters)
    lang = READERS[src.reader].lang
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        row = _read_line(n, line)
        if isinstance(row, BadRow):
            yield {"id": str(n), "line": n + 1, "kept": False, "reason": "bad_input", "error": row.reason}
            continue
        doc = Doc(str(row.get("id", n)), row["text"], source, lang=lang)
        outcome = run_chain(chain, doc, evaluate_all=True)
        yield {
            "id": doc.id,
            "lang": doc.lang,
            "lang_score": round(doc.lang_score, 4),
            "kept": outcome.kept,
            "reason": outcome.reason,
            "rule": outcome.rule,
            "filters": {name: {"kept": d.kept, "rule": d.rule} for name, d in outcome.decisions.items()},
        }


def _read_line(n: int, line: bytes) -> dict[str, Any] | BadRow:
    """The line's JSON object, its `text` a string the job could write; else the bad row the job makes of
    it (`sources.parse_line`, then the job's checks of the text)."""
    row = parse_line(n, line)
    if isinstance(row, BadRow):
        return row
    text = row.get("text")
    if not isinstance(text, str):
        return BadRow(n, f"wrong schema: `text` is {type(text).__name__}, not a string")
    if (problem := unwritable(text, {})) is not None:
        return BadRow(n, problem)
    return row
