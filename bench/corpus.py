"""The benchmark corpus: the bundled sample's documents (multilingual prose, code) plus Python
sources from the installed packages, so that every machine with `make setup` has the same >= 20 MB."""

from __future__ import annotations

import io
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
TEXT_FIELDS = ("text", "content")


def _sample_documents() -> Iterator[str]:
    for path in sorted(SAMPLE.rglob("*")):
        if path.suffix == ".parquet":
            try:
                table = pq.read_table(path)
            except pa.ArrowInvalid:
                continue  # the sample plants unreadable files on purpose
            field = next((f for f in TEXT_FIELDS if f in table.column_names), None)
            if field:
                yield from (t for t in table.column(field).to_pylist() if isinstance(t, str))
        elif path.name.endswith((".jsonl", ".jsonl.zst")):
            raw = path.read_bytes()
            if path.suffix == ".zst":
                raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
            for line in raw.decode("utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the sample plants malformed lines on purpose
                text = next((row[f] for f in TEXT_FIELDS if isinstance(row, dict) and f in row), None)
                if isinstance(text, str):
                    yield text


def _python_sources() -> Iterator[str]:
    site = Path(sysconfig.get_paths()["purelib"])
    for package in ("transformers", "torch", "ray", "mlflow", "pyarrow"):
        for path in sorted((site / package).rglob("*.py")):
            yield path.read_text(encoding="utf-8", errors="replace")


def documents(min_mb: float = 20.0, prose_share: float = 0.5) -> list[str]:
    """At least `min_mb` MB of documents, about `prose_share` of them (by bytes) from the sample
    corpus, repeated if the sample is smaller, and the rest Python code."""
    prose = [d for d in _sample_documents() if d]
    if not prose:
        raise SystemExit(f"no documents under {SAMPLE}: the bundled sample corpus is missing")
    target = int(min_mb * 1e6)
    docs: list[str] = []
    size = 0
    while size < target * prose_share:
        for d in prose:
            docs.append(d)
            size += len(d.encode())
    for source in _python_sources():
        if size >= target:
            break
        docs.append(source)
        size += len(source.encode())
    return docs


def megabytes(docs: list[str]) -> float:
    return sum(len(d.encode()) for d in docs) / 1e6
