"""Readers for the five upstream corpora in their native schemas, normalized to the document schema.

Each input file (JSON lines, parquet, Arrow IPC) is read as a stream of rows; a row that cannot become
a document (malformed JSON, invalid UTF-8 in a line or a cell, wrong schema, empty or huge text) is
yielded as a `BadRow` with its reason instead of raising, and never costs the rows after it. A parquet
row group that cannot be read (a corrupt page) keeps its rows before the bad page and is one `BadRow`
standing for the rest, named with the group and the rows; the next group is read. An Arrow record
batch that cannot be read is one `BadRow` for its rows where its length is known, else the file ends
there. A file that cannot be opened or breaks part-way ends with one `BadRow(FILE, ...)` after the
rows read before the break: `truncated file` when it was cut short (a compressed frame, a footer or
an Arrow stream's end is missing), `unreadable file` otherwise.

A file is read as it is parsed, never fetched whole first: an object-storage URL (`s3://...`) is read
in ranged requests of `READ_BLOCK` bytes, a parquet file's footer and then one row group at a time,
an Arrow file one record batch at a time.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from common.objectstore import filesystem, is_url, open_stream, storage_error
from pipeline.config import ExcludeRule, SourceConfig

PARQUET_BATCH_ROWS = 1024
PARQUET_MAGIC = b"PAR1"
# An Arrow IPC file is its magic, padding to 8 bytes, an IPC stream, the footer, and the magic again.
ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_START = 8
ARROW_STREAM_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # a stream's last message: length 0
# Compressed bytes handed to a decompressor at a time (bounds what one call expands to), and the size
# of the buffer lines are cut from.
COMPRESSED_CHUNK = 1 << 16
# Bytes of a bad line kept in the bad-row file.
PREVIEW_BYTES = 200
# `BadRow.row` of a problem of the whole file (the rest of it from where it broke).
FILE = -1
TRUNCATED = "truncated file"
UNREADABLE = "unreadable file"


@dataclass(frozen=True)
class Record:
    """One upstream row, normalized: `meta` holds the upstream metadata kept."""

    id: str
    text: str
    lang: str
    meta: dict[str, Any]
    row: int  # its place in the file, for the bad-row entry when a filter breaks on it


@dataclass(frozen=True)
class BadRow:
    row: int  # FILE: the whole file
    reason: str
    raw: str = ""
    rows: int = 1  # input rows it stands for: more for the rest of an unreadable parquet row group


class TruncatedFile(Exception):
    """The input ended inside a compressed frame or before the parquet footer: the file was cut short."""


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
            fs, inner = filesystem(pattern)
            matched = [p for p in fs.glob(inner) if fs.isfile(p)]
            if not matched:
                missing.append((pattern, _unmatched(fs, inner, pattern)))
        except ImportError:  # the protocol's package is not installed: a config problem, raised
            raise
        except Exception as e:  # unreachable storage: set aside like a missing file, the run goes on
            missing.append((pattern, f"cannot list: {_storage_problem(e, pattern)}"[:300]))
            continue
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        files.update(p if protocol == "file" else f"{protocol}://{p}" for p in matched)
    return sorted(files), missing


def _unmatched(fs: fsspec.AbstractFileSystem, inner: str, pattern: str) -> str:
    """Why a pattern matched no file. A listing of an unknown bucket is empty, not an error: it is
    told apart here, so that the message names the bucket rather than the files."""
    if is_url(pattern) and not fs.exists(inner.split("/", 1)[0]):
        return f"bucket {inner.split('/', 1)[0]!r} does not exist"
    return "no file matches" if fs.exists(inner) is False else "not a file"


def _storage_problem(error: Exception, url: str) -> str:
    """What went wrong reaching `url`: the storage's one line when it explains it, else the error."""
    line = storage_error(error, url) if is_url(url) else None
    return line.removeprefix("error: ") if line else f"{type(error).__name__}: {error}"


class SourceUnreachable(Exception):
    """An input URL that the object store did not serve (credentials, bucket, permission, an object gone
    or replaced since it was listed): stops the job with the store's one line. Set aside as an unreadable
    file instead, it would be lost to the work dir for good: a re-run does not read a finished file
    again, and the cause is the store, not the file."""


def read_file(source: str, path: str, cfg: SourceConfig) -> Iterator[Record | BadRow]:
    """Rows of one file as `Record`s (or `BadRow`s), in file order; a file that breaks part-way ends
    with one `BadRow(FILE, ...)` saying why, after every row read before the break. A URL the store
    refuses to serve raises SourceUnreachable."""
    if path.endswith(".parquet"):
        rows = _parquet_rows(path)
    elif path.endswith(".arrow"):
        rows = _arrow_rows(path)
    else:
        rows = _json_rows(path)
    tail = "/".join(PurePosixPath(path).parts[-2:])
    try:
        for index, raw in rows:
            if isinstance(raw, BadRow):
                yield raw
            else:
                yield _normalize(source, raw, index, tail, path, cfg)
    except TruncatedFile as e:  # the partial last row is part of the truncation, not a row of its own
        yield BadRow(FILE, f"{TRUNCATED}: {e}")
    except Exception as e:  # a file that breaks part-way: keep what was read, set the rest aside
        if is_url(path) and (line := storage_error(e, path)) is not None:
            raise SourceUnreachable(line) from e
        yield BadRow(FILE, f"{UNREADABLE}: {type(e).__name__}: {e}"[:500])


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
    """Row group by row group, so that a group that cannot be read costs its own rows only, and of
    those only the rows from its first unreadable page on (docs/reliability.md says why not fewer)."""
    with open_stream(path) as f:
        parquet = _open_parquet(f)
        index = 0
        for group in range(parquet.num_row_groups):
            start, end = index, index + parquet.metadata.row_group(group).num_rows
            try:
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group]):
                    yield from enumerate(_batch_rows(batch, index), index)
                    index += batch.num_rows
            except (OSError, pa.ArrowException) as e:  # a corrupt page or column chunk
                if _refused(e, path):
                    raise
                failed = min(end, index + PARQUET_BATCH_ROWS)
                batch = _readable_rows(parquet, group, index - start, failed - start)
                yield from enumerate(_batch_rows(batch, index), index)
                index += batch.num_rows
                lost = f"group {group}, rows {index}-{end - 1}"
                reason = f"unreadable row group: {lost}: {type(e).__name__}: {e}"[:500]
                yield index, BadRow(index, reason, rows=end - index)
            index = end


def _readable_rows(parquet: pq.ParquetFile, group: int, done: int, failed: int) -> pa.RecordBatch:
    """The rows of `group` from row `done` (those before it were read) up to its first row that cannot
    be read, which comes before row `failed` (a first batch of `failed` rows did not read). pyarrow
    reads a column chunk from its first page on and cannot skip one, so the longest first batch that
    reads is found by bisection: at most log2(PARQUET_BATCH_ROWS) tries, each decoding the group up to
    its size again."""
    good, bad = done, failed
    found = pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
    while bad - good > 1:
        size = (good + bad) // 2
        try:
            found = next(parquet.iter_batches(batch_size=size, row_groups=[group])).slice(done)
            good = size
        except (OSError, pa.ArrowException):
            bad = size
    return found


def _refused(error: Exception, path: str) -> bool:
    """Whether `error` is the store not serving `path` (which `read_file` raises as SourceUnreachable)
    rather than bytes that cannot be decoded: both reach a reader as an OSError."""
    return is_url(path) and storage_error(error, path) is not None


def _batch_rows(batch: pa.RecordBatch, start: int) -> list[dict[str, Any] | BadRow]:
    """The rows of a batch as dicts; one holding a cell Python cannot take (invalid UTF-8 in a string,
    a date out of range) is a `BadRow` naming the column, and costs only itself."""
    try:
        return batch.to_pylist()
    except (UnicodeDecodeError, ValueError, OverflowError):
        return [_cells(batch, i, start + i) for i in range(batch.num_rows)]


def _cells(batch: pa.RecordBatch, i: int, index: int) -> dict[str, Any] | BadRow:
    """Row `i` of the batch read cell by cell, or the `BadRow` naming its first cell Python cannot take."""
    row = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except UnicodeDecodeError:
            return BadRow(index, f"invalid utf-8: in `{name}`", _cell_preview(column, i))
        except (ValueError, OverflowError) as e:
            return BadRow(index, f"wrong schema: `{name}` cannot be read: {e}"[:500])
    return row


def _cell_preview(column: pa.Array, i: int) -> str:
    """The start of a string cell's bytes (a nested column's is not shown)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _preview(column.cast(pa.binary())[i].as_py())
    return ""


def _open_parquet(f: IO[bytes]) -> pq.ParquetFile:
    """The file's reader. A file that starts like parquet but lacks the footer at its end (the schema
    and the row-group index) was cut short; without the footer none of its rows can be found. A page
    whose writer stored its checksum is checked: a changed byte costs the page's rows, not wrong text."""
    try:
        return pq.ParquetFile(f, page_checksum_verification=True)
    except pa.ArrowInvalid:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        head = f.read(len(PARQUET_MAGIC))
        f.seek(max(0, size - len(PARQUET_MAGIC)))
        if head == PARQUET_MAGIC[: len(head)] and f.read() != PARQUET_MAGIC:
            raise TruncatedFile(f"parquet footer missing after {size} bytes") from None
        raise


def _arrow_rows(path: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """Record batch by record batch, from the IPC file format (it starts with `ARROW1`) or the stream
    format (what `datasets.save_to_disk` writes)."""
    with open_stream(path) as f:
        if f.read(len(ARROW_FILE_MAGIC)) == ARROW_FILE_MAGIC:
            yield from _arrow_file_rows(f, path)
        else:
            yield from _arrow_stream_rows(f, 0, path)


def _arrow_file_rows(f: IO[bytes], path: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """The footer indexes every batch, so a batch that cannot be decoded is skipped, counted as its rows
    when one of its columns alone can be decoded (the row count is in its header). Without the footer
    the file was cut short: the stream inside it keeps the batches before the cut."""
    size = f.seek(0, io.SEEK_END)
    try:
        reader = pa.ipc.open_file(f)
    except pa.ArrowInvalid:
        f.seek(size - len(ARROW_FILE_MAGIC))
        if f.read() == ARROW_FILE_MAGIC:
            raise
        try:
            ended = yield from _arrow_stream_rows(f, ARROW_STREAM_START, path)
        except TruncatedFile:
            ended = True
        if ended:  # else a batch that cannot be decoded ended it, and its `BadRow` says so
            raise TruncatedFile(f"arrow file footer missing after {size} bytes") from None
        return
    index = 0
    for number in range(reader.num_record_batches):
        try:
            batch = reader.get_batch(number)
        except (OSError, pa.ArrowException) as e:
            if _refused(e, path):
                raise
            if (rows := _batch_length(f, number, len(reader.schema))) is None:
                yield index, _rest_lost(number, index, e)
                return
            yield index, _lost_batch(number, index, rows, f"{type(e).__name__}: {e}")
            index += rows
            continue
        yield from _arrow_batch_rows(batch, number, index)
        index += batch.num_rows


def _batch_length(f: IO[bytes], number: int, fields: int) -> int | None:
    """The rows of batch `number` of an IPC file, from the first column that decodes alone, or None."""
    for field in range(fields):
        options = pa.ipc.IpcReadOptions(included_fields=[field])
        try:
            return pa.ipc.open_file(f, options=options).get_batch(number).num_rows
        except (OSError, pa.ArrowException):
            continue
    return None


def _arrow_stream_rows(
    f: IO[bytes], start: int, path: str
) -> Generator[tuple[int, dict[str, Any] | BadRow], None, bool]:
    """The batches of an IPC stream from byte `start`; returns whether it was read to its end. A batch
    that cannot be decoded ends the file (one `BadRow(FILE, ...)`): the stream does not say how many
    rows it held, so no row after it would have its place. A stream that ends inside a message or
    without its end-of-stream marker was cut short."""
    size = f.seek(0, io.SEEK_END)
    f.seek(start)
    index, number = 0, 0
    try:
        reader = pa.ipc.open_stream(f)
        while True:
            batch = reader.read_next_batch()
            yield from _arrow_batch_rows(batch, number, index)
            index, number = index + batch.num_rows, number + 1
    except StopIteration:
        end = f.tell()
        f.seek(max(start, end - len(ARROW_STREAM_END)))
        if f.read(len(ARROW_STREAM_END)) != ARROW_STREAM_END:
            raise TruncatedFile(f"arrow stream ends early after {size} bytes") from None
        return True
    except (OSError, pa.ArrowException) as e:
        if _refused(e, path):
            raise
        if f.tell() >= size:  # the reader ran out of bytes inside a message
            raise TruncatedFile(f"arrow stream ends early after {size} bytes") from None
        yield index, _rest_lost(number, index, e)
        return False


def _arrow_batch_rows(
    batch: pa.RecordBatch, number: int, index: int
) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """The rows of a batch, or one `BadRow` for them all when its buffers do not hold together (an
    offset past the data): reading such a batch reads memory it does not own."""
    if (problem := _unsound(batch)) is not None:
        yield index, _lost_batch(number, index, batch.num_rows, problem)
    else:
        yield from enumerate(_batch_rows(batch, index), index)


def _unsound(batch: pa.RecordBatch) -> str | None:
    """Why the batch's buffers do not hold together, or None. Parquet decoding makes sound arrays, but
    IPC buffers are taken as they are on disk. Invalid UTF-8 alone is no such problem: it costs its
    rows only (`_batch_rows`)."""
    try:
        batch.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            column.view(_bytes_type(column.type)).validate(full=True)
        except pa.ArrowException as e:
            return f"`{name}`: {e}"
    return None


def _bytes_type(kind: pa.DataType) -> pa.DataType:
    """`kind` with each string type in it made its binary twin: the same buffers, whose full validation
    checks offsets and lengths but not UTF-8. Types not named here (unions, list views) keep their
    strings, and their check: there invalid UTF-8 costs the batch."""
    if pa.types.is_string(kind):
        return pa.binary()
    if pa.types.is_large_string(kind):
        return pa.large_binary()
    if pa.types.is_string_view(kind):
        return pa.binary_view()
    if pa.types.is_struct(kind):
        return pa.struct([_bytes_field(field) for field in kind])
    if pa.types.is_map(kind):
        return pa.map_(_bytes_field(kind.key_field), _bytes_field(kind.item_field))
    if pa.types.is_list(kind):
        return pa.list_(_bytes_field(kind.value_field))
    if pa.types.is_large_list(kind):
        return pa.large_list(_bytes_field(kind.value_field))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_bytes_field(kind.value_field), kind.list_size)
    if pa.types.is_dictionary(kind):
        return pa.dictionary(kind.index_type, _bytes_type(kind.value_type), kind.ordered)
    return kind


def _bytes_field(field: pa.Field) -> pa.Field:
    return field.with_type(_bytes_type(field.type))


def _lost_batch(number: int, index: int, rows: int, problem: str) -> BadRow:
    """One `BadRow` standing for the rows of a record batch that cannot be read, named."""
    reason = f"unreadable record batch: batch {number}, rows {index}-{index + rows - 1}: {problem}"
    return BadRow(index, reason[:500], rows=rows)


def _rest_lost(number: int, index: int, error: Exception) -> BadRow:
    """The file from a record batch of unknown length on: the rest is unreadable."""
    reason = f"{UNREADABLE}: record batch {number} (from row {index}): {type(error).__name__}: {error}"
    return BadRow(FILE, reason[:500])


class _Decompressor(Protocol):
    """What zstandard's ZstdDecompressionObj and zlib's Decompress share: one frame at a time."""

    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


class _Frames(io.RawIOBase):
    """The decompressed bytes of every frame (zstd) or member (gzip) of a compressed stream.

    zstandard's stream_reader ends quietly when the input stops inside a frame, and gzip raises a bare
    EOFError. Here the input ending inside a frame, or before the first one, raises TruncatedFile, once
    every byte decoded before the cut has been returned.
    """

    def __init__(self, raw: IO[bytes], new_frame: Callable[[], _Decompressor], frame: str):
        self._raw, self._new_frame, self._name = raw, new_frame, frame
        self._frame: _Decompressor | None = None  # the frame being decoded
        self._frames = 0  # frames decoded whole
        self._read = 0  # compressed bytes read
        self._next = b""  # compressed bytes read past the end of a frame: the start of the next one
        self._out = memoryview(b"")  # decoded bytes not yet returned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._next:
                data, self._next = self._next, b""
            else:
                data = self._raw.read(COMPRESSED_CHUNK)
                self._read += len(data)
            if not data:
                if self._frame is not None or not self._frames:
                    raise TruncatedFile(f"{self._name} ends early after {self._read} bytes")
                return 0
            self._out = memoryview(self._decode(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decode(self, data: bytes) -> bytes:
        """Decode `data` up to the end of the current frame; what follows it waits for the next call,
        so that the bytes of a whole frame are returned before a broken next one raises."""
        if self._frame is None:
            self._frame = self._new_frame()
        out = self._frame.decompress(data)
        if self._frame.eof:
            self._next, self._frame = self._frame.unused_data, None
            self._frames += 1
        return out


def _open_lines(raw: IO[bytes], path: str) -> IO[bytes]:
    """A line-iterable binary stream, decompressing .zst and .gz on the fly."""
    if path.endswith(".zst"):
        frames = _Frames(raw, zstandard.ZstdDecompressor().decompressobj, "zstd frame")
    elif path.endswith(".gz"):
        frames = _Frames(raw, functools.partial(zlib.decompressobj, wbits=16 + zlib.MAX_WBITS), "gzip member")
    else:
        return raw
    return io.BufferedReader(frames, buffer_size=COMPRESSED_CHUNK)


def _json_rows(path: str) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with open_stream(path) as raw, _open_lines(raw, path) as f:
        for index, line in enumerate(f):
            yield index, parse_line(index, line)


def parse_line(index: int, line: bytes) -> dict[str, Any] | BadRow:
    """One JSON line as an object, or the `BadRow` saying why not; never raises, so that one odd line
    costs itself only, not the rest of its file."""
    if not line.strip():
        return BadRow(index, "blank line")
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return BadRow(index, "invalid utf-8", _preview(line))
    except json.JSONDecodeError as e:
        return BadRow(index, f"malformed json: {e.msg}", _preview(line))
    except RecursionError:
        return BadRow(index, "malformed json: nested too deeply", _preview(line))
    if not isinstance(row, dict):
        return BadRow(index, "wrong schema: not a JSON object", _preview(line))
    return row


def _preview(line: bytes) -> str:
    """The start of a bad line for the bad-row file; a character cut in two at the end is replaced."""
    return line[:PREVIEW_BYTES].decode("utf-8", "replace")


def unwritable(text: str, meta: dict[str, Any]) -> str | None:
    """Why the document cannot be written, or None: a JSON escape can decode to a lone UTF-16 surrogate
    (`"\\ud800"`), which no parquet writer accepts, and a parquet cell can hold what JSON cannot (bytes)."""
    try:
        text.encode("utf-8")
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "invalid utf-8: lone surrogate escape"
    except TypeError as e:
        return f"wrong schema: metadata is not JSON: {e}"
    return None


def _jsonable(value: Any) -> Any:
    """A metadata value as JSON holds it: a parquet date or time (RefinedWeb's `timestamp`) as ISO 8601
    text. JSON input has none, so its metadata is unchanged."""
    if isinstance(value, datetime.date | datetime.time):  # a datetime is a date
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


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
        except (json.JSONDecodeError, RecursionError):
            return BadRow(index, "wrong schema: `meta` is not valid JSON")
    meta = _jsonable(meta)
    if (problem := unwritable(text, meta)) is not None:
        return BadRow(index, problem)
    if reader.language_from_folder:
        meta["language"] = PurePosixPath(path).parent.name
    upstream = row.get(reader.id_field) if reader.id_field else None
    doc_id = f"{source}/{upstream}" if upstream else f"{source}/{tail}#{index}"
    return Record(doc_id, text, reader.lang, meta, index)
