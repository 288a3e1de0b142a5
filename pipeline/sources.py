"""Readers for the five upstream corpora in their native schemas, normalized to the document schema.

Each input file is read as a stream of rows; a row that cannot become a document (malformed JSON,
invalid UTF-8, wrong schema, empty or huge text) is yielded as a `BadRow` with its reason instead of
raising, and so is a file that cannot be opened or breaks part-way.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec
import pyarrow.parquet as pq
import zstandard

from pipeline.config import ExcludeRule, SourceConfig

PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class Record:
    """One upstream row, normalized: `meta` holds the upstream metadata kept."""

    id: str
    text: str
    lang: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    row: int  # -1: the whole file
    reason: str
    raw: str = ""


@dataclass(frozen=True)
class Reader:
    """How one upstream corpus lays out a document (the table in docs/design.md)."""

    text_field: str
    meta_fields: tuple[str, ...]
    # Code is not language-identified and may be turned into fill-in-the-middle form when packed.
    is_code: bool = False
    # The folder holding the file names the language (one folder per language upstream).
    language_from_folder: bool = False
    # The upstream field whose value makes a stable document id, if any.
    id_field: str | None = None

    @property
    def lang(self) -> str:
        """A document's language before language ID: "code" for code, else unknown ("")."""
        return "code" if self.is_code else ""


READERS: dict[str, Reader] = {
    "refinedweb": Reader("content", ("url", "timestamp", "dump", "segment")),
    "redpajama": Reader("text", ("meta", "red_pajama_subset")),
    "pile": Reader("text", ("meta",)),
    "starcoder": Reader(
        "content",
        ("max_stars_repo_name", "max_stars_repo_path", "max_stars_count", "id"),
        is_code=True,
        language_from_folder=True,
        id_field="id",
    ),
    "culturax": Reader("text", ("url", "timestamp", "source"), language_from_folder=True),
}


def expand_paths(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files matched by `patterns` (sorted, de-duplicated), and (pattern, reason) for those matching none."""
    files: set[str] = set()
    missing: list[tuple[str, str]] = []
    for pattern in patterns:
        try:
            fs, _, paths = fsspec.get_fs_token_paths(pattern)
            matched = [p for p in paths if fs.isfile(p)]
        except ImportError:  # the protocol's package is not installed: a config problem, raised
            raise
        except Exception as e:  # unreachable storage: set aside like a missing file, the run goes on
            missing.append((pattern, f"cannot list: {type(e).__name__}: {e}"[:300]))
            continue
        if not matched:
            missing.append((pattern, "no file matches" if fs.exists(pattern) is False else "not a file"))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        files.update(p if protocol == "file" else f"{protocol}://{p}" for p in matched)
    return sorted(files), missing


def read_file(source: str, path: str, cfg: SourceConfig) -> Iterator[Record | BadRow]:
    """Rows of one file as `Record`s (or `BadRow`s), in file order."""
    rows = _parquet_rows(path) if path.endswith(".parquet") else _json_rows(path)
    tail = "/".join(PurePosixPath(path).parts[-2:])
    try:
        for index, raw in rows:
            if isinstance(raw, BadRow):
                yield raw
            else:
                yield _normalize(source, raw, index, tail, path, cfg)
    except Exception as e:  # a file that breaks part-way: keep what was read, set the rest aside
        yield BadRow(-1, f"unreadable file: {type(e).__name__}: {e}"[:500])


def excluded(record: Record, rules: list[ExcludeRule]) -> str | None:
    """The first exclusion rule the record matches, as `field=value`, or None."""
    for rule in rules:
        value: Any = record.meta
        for part in rule.field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and str(value) in rule.values:
            return f"{rule.field}={value}"
    return None


def _parquet_rows(path: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with fsspec.open(path, "rb") as f:
        index = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                yield index, row
                index += 1


def _open_lines(raw: IO[bytes], path: str) -> IO[bytes]:
    """A line-iterable binary stream, decompressing .zst and .gz on the fly."""
    if path.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    return raw


def _json_rows(path: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with fsspec.open(path, "rb") as raw, _open_lines(raw, path) as f:
        for index, line in enumerate(f):
            if not line.strip():
                yield index, BadRow(index, "blank line")
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield index, BadRow(index, "invalid utf-8", line[:200].decode("utf-8", "replace"))
                continue
            except json.JSONDecodeError as e:
                yield index, BadRow(index, f"malformed json: {e.msg}", line[:200].decode("utf-8", "replace"))
                continue
            if not isinstance(row, dict):
                yield index, BadRow(index, "wrong schema: not a JSON object", line[:200].decode())
                continue
            yield index, row


def _normalize(
    source: str, row: dict[str, Any], index: int, tail: str, path: str, cfg: SourceConfig
) -> Record | BadRow:
    reader = READERS[cfg.reader]
    text = row.get(reader.text_field)
    if not isinstance(text, str):
        return BadRow(index, f"wrong schema: `{reader.text_field}` is {type(text).__name__}, not a string")
    if not text.strip():
        return BadRow(index, "empty document")
    if len(text) > cfg.max_doc_chars:
        return BadRow(index, f"huge document: {len(text)} chars > max_doc_chars {cfg.max_doc_chars}")
    meta = {k: row[k] for k in reader.meta_fields if row.get(k) is not None}
    if isinstance(meta.get("meta"), str):  # RedPajama through HF datasets stores meta as a JSON string
        try:
            meta["meta"] = json.loads(meta["meta"])
        except json.JSONDecodeError:
            return BadRow(index, "wrong schema: `meta` is not valid JSON")
    if reader.language_from_folder:
        meta["language"] = PurePosixPath(path).parent.name
    upstream = row.get(reader.id_field) if reader.id_field else None
    doc_id = f"{source}/{upstream}" if upstream else f"{source}/{tail}#{index}"
    return Record(doc_id, text, reader.lang, meta)
