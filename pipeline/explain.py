"""`python -m pipeline explain --source NAME DOCS.jsonl`: one source's filter chain, document by document.

It calls `filters.run_chain` with the chain built from the same config section as the Ray job, so a
decision here is the decision there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from common.config import ConfigError
from pipeline.config import DataConfig
from pipeline.filters import Doc, build_chain, run_chain
from pipeline.sources import READERS


def explain(cfg: DataConfig, source: str, lines: IO[str]) -> Iterator[dict]:
    """One result per input line: id, lang, lang_score, kept, reason, rule and every filter's decision."""
    if source not in cfg.sources:
        raise ConfigError(f"unknown source {source!r}; the config has: {', '.join(cfg.sources)}")
    src = cfg.sources[source]
    chain = build_chain(src.filters)
    lang = READERS[src.reader].lang
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row["text"]
            if not isinstance(text, str):
                raise TypeError("`text` is not a string")
        except (json.JSONDecodeError, RecursionError, KeyError, TypeError) as e:  # one bad line, not all
            yield {"id": str(n), "kept": False, "reason": "bad_input", "error": f"{type(e).__name__}: {e}"}
            continue
        doc = Doc(str(row.get("id", n)), text, source, lang=lang)
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
