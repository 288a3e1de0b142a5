"""Parquet outputs of the stages and their schemas, written atomically through `pipeline.workfiles`.

A partition's stats file is written last, so its presence marks the partition as finished: a killed
run leaves at most temporary files, which the re-run removes.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.workfiles import WorkPath, as_path, atomic_write, publish, staging_file


class ParquetSink:
    """Rows appended in batches to one parquet file that appears only when `close` succeeds."""

    def __init__(self, path: str | WorkPath, schema: pa.Schema, batch_rows: int = 1024):
        self.path = as_path(path)
        self.schema, self.batch_rows = schema, batch_rows
        self.tmp = staging_file(self.path)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= self.batch_rows:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Append a whole table, after the rows added so far."""
        self._flush()
        self.writer.write_table(table)
        self.count += len(table)

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
        publish(self.tmp, self.path)


def write_table(path: str | WorkPath, table: pa.Table) -> None:
    atomic_write(as_path(path), lambda f: pq.write_table(table, f, compression="zstd"))


# The normalized document schema (docs/design.md) and the columns the stages add to it.
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("lang", pa.string()),
        ("meta", pa.string()),
    ]
)
FILTERED_SCHEMA = DOC_SCHEMA.append(pa.field("lang_score", pa.float32())).append(
    pa.field("n_tokens", pa.int64())
)
REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("reason", pa.string()),
        ("rule", pa.string()),
        ("text", pa.string()),
    ]
)
BAD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("path", pa.string()),
        ("row", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
