"""What a run found of its inputs, and the rule for a source that has none.

A source has no input when no row of it became a document: no pattern of its `paths` matched a file,
or every file it has was cut short, unreadable, empty or all bad rows. Such a source stops the job
with `InputError`, unless the config marks it `optional: true`; then the job runs without it and the
report says so. The job knows it twice: when planning, if no pattern of a source matches a file
(before Ray starts), and after the filter stage otherwise (before deduplication).

A pattern that matches nothing while another pattern of the same source matches does not stop the
job: a source's patterns often name optional parts (a language, a crawl) that a mirror may lack.
It is printed when planning and listed in the report's missing inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.config import DataConfig

# Files named in an error message; the report lists them all.
FILES_NAMED = 3


class InputError(Exception):
    """A required source has no input, or no source has any; printed as `error: ...`."""


def file_outcomes(filtered: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every input file with what became of it, from the filter stage's stats (by pid, in plan order)."""
    return [
        {
            "source": s["source"],
            "path": s["path"],
            "rows": s["rows"],
            "bad_rows": s["bad_rows"],
            "kept": s["kept_docs"],
            "truncated": s["truncated"],
            "file_error": s["file_error"],
        }
        for _, s in sorted(filtered.items())
    ]


def sources_without_input(
    cfg: DataConfig,
    sources_listed: Iterable[str],
    missing: Sequence[Mapping[str, str]],
    filtered: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Each source with no input, and why: none of its patterns matched a file (`sources_listed` are the
    sources with files), or, once the filter stage's stats are known, no row of its files became a
    document."""
    listed = set(sources_listed)
    files = file_outcomes(filtered or {})
    why = {}
    for name in cfg.sources:
        if name not in listed:
            why[name] = _unmatched(name, missing)
        elif filtered is not None and not _documents(name, filtered):
            why[name] = _unread([f for f in files if f["source"] == name])
    return why


def require_input(cfg: DataConfig, without: Mapping[str, str]) -> None:
    """Raise InputError for every required source in `without`, or when no source has any input."""
    required = {name: why for name, why in without.items() if not cfg.sources[name].optional}
    if required:
        raise InputError(
            "; ".join(f"source {name!r} has no input: {why}" for name, why in required.items())
            + " (set `optional: true` on the source to run without it, or fix its `paths` or files; a work"
            " dir does not read a file twice, so replaced files need a new work_dir)"
        )
    if set(without) == set(cfg.sources):
        raise InputError("no source has any input: " + "; ".join(f"{n}: {w}" for n, w in without.items()))


def _documents(source: str, filtered: Mapping[str, dict[str, Any]]) -> int:
    return sum(s["flow"].get("read", {}).get("docs", 0) for s in filtered.values() if s["source"] == source)


def _unmatched(source: str, missing: Sequence[Mapping[str, str]]) -> str:
    patterns = "; ".join(f"{m['path']} ({m['reason']})" for m in missing if m["source"] == source)
    return f"none of its paths gives a file: {patterns}"


def _unread(files: list[dict[str, Any]]) -> str:
    """Why none of a source's files gave a document, naming the first few."""
    named = [f"{f['path']}: {f['file_error'] or _rows(f['rows'])}" for f in files[:FILES_NAMED]]
    more = f"; and {len(files) - FILES_NAMED} more" if len(files) > FILES_NAMED else ""
    return f"no row of its {len(files)} file(s) became a document ({'; '.join(named)}{more})"


def _rows(rows: int) -> str:
    return f"{rows} rows, all bad" if rows else "empty"
