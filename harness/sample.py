"""The bundled sample corpus (data/sample/, five sources in their native formats) read as plain texts,
for tests and benchmarks that want real documents without running the pipeline. The sample plants
unreadable files and malformed lines on purpose; they are skipped here (the pipeline's tests check
that the pipeline sets them aside)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

__all__ = ["SAMPLE", "sample_texts"]

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
TEXT_FIELDS = ("text", "content")  # the five readers' text fields


def sample_texts() -> Iterator[tuple[str, str]]:
    """(source folder, text) of every readable document of the sample, in file order."""
    for path in sorted(SAMPLE.rglob("*")):
        source = path.relative_to(SAMPLE).parts[0]
        if path.suffix == ".parquet":
            yield from ((source, text) for text in _parquet_texts(path))
        elif path.name.endswith((".jsonl", ".json.gz", ".jsonl.zst")) and path.parent != SAMPLE:
            yield from ((source, text) for text in _json_texts(path))


def _parquet_texts(path: Path) -> Iterator[str]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return
    field = next((f for f in TEXT_FIELDS if f in table.column_names), None)
    if field:
        yield from (t for t in table.column(field).to_pylist() if isinstance(t, str))


def _json_texts(path: Path) -> Iterator[str]:
    raw = path.read_bytes()
    try:
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        elif path.suffix == ".zst":
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    except (OSError, EOFError, zstandard.ZstdError):
        return
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        text = next((row[f] for f in TEXT_FIELDS if isinstance(row, dict) and f in row), None)
        if isinstance(text, str):
            yield text
