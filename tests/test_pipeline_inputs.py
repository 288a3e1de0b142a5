"""Hostile input loses nothing silently: truncated and multi-frame compressed files, truncated parquet,
odd lines, sources without input, every file in the report; quiet output; no Ray left by a killed job."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml
import zstandard
from conftest import ROOT, table_rows

from common import config as configs
from common.objectstore import READ_BLOCK, filesystem
from harness.inputs import cells_file, cells_table, documents, jsonl
from pipeline.cluster import running
from pipeline.config import DataConfig, SourceConfig
from pipeline.explain import explain
from pipeline.inputs import InputError
from pipeline.plan import Partition
from pipeline.read_filter import filter_partition
from pipeline.run import run
from pipeline.sources import FILE, BadRow, Record, SourceUnreachable, read_file
from pipeline.stage import Progress
from pipeline.workdir import WorkDir

PILE = SourceConfig(reader="pile", paths=["unused"], epochs=1)
STAGES = ("filter", "minhash", "buckets", "split", "mix")


def parquet(rows: list[dict]) -> pa.Table:
    return pa.table({"text": [r["text"] for r in rows]})


def read(path: Path | str) -> tuple[list[str], list[BadRow]]:
    """The texts read from one file, and its bad rows."""
    items = list(read_file("pile", str(path), PILE))
    return [i.text for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, BadRow)]


COMPRESSED = {
    "zstd frame": (".jsonl.zst", zstandard.ZstdCompressor().compress),
    "gzip member": (".json.gz", gzip.compress),
}


@pytest.mark.parametrize("frame", list(COMPRESSED))
@pytest.mark.parametrize("cut", [5, 40, 0.5, -1])
def test_truncated_compressed_file_keeps_its_rows_and_is_named_truncated(tmp_path, frame, cut):
    """Cut inside the header, inside the first block, half way, one byte short: the rows decoded before
    the cut are kept, and the file is one `truncated file` row, never a malformed last line."""
    suffix, compress = COMPRESSED[frame]
    originals = documents(600)
    data = compress(jsonl(originals))
    size = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[:size])
    texts, bad = read(path)
    assert texts == [d["text"] for d in originals[: len(texts)]]
    assert bad == [BadRow(FILE, f"truncated file: {frame} ends early after {size} bytes")]
    if cut == 0.5:
        assert 0 < len(texts) < len(originals)


@pytest.mark.parametrize("frame", list(COMPRESSED))
def test_every_frame_is_read_and_a_broken_next_frame_keeps_the_whole_one(tmp_path, frame):
    """The frame-by-frame reader that replaced zstandard's stream_reader and gzip.GzipFile reads every
    frame (member) of a file, and garbage after a whole frame costs none of its rows."""
    suffix, compress = COMPRESSED[frame]
    first, second = documents(300, seed=1), documents(300, seed=2)
    path = tmp_path / f"frames{suffix}"
    path.write_bytes(compress(jsonl(first)) + compress(jsonl(second)))
    assert read(path) == ([d["text"] for d in first + second], [])
    path.write_bytes(compress(jsonl(first)) + b"garbage after the frame")
    texts, bad = read(path)
    assert texts == [d["text"] for d in first]
    assert [(b.row, b.reason.split(":")[0]) for b in bad] == [(FILE, "unreadable file")]


@pytest.mark.parametrize("cut", [0, 3, 0.5, -1])
def test_truncated_parquet_is_named_truncated(tmp_path, cut):
    whole = tmp_path / "whole.parquet"
    pq.write_table(parquet(documents(300)), whole, row_group_size=100)
    data = whole.read_bytes()
    size = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[:size])
    assert read(path) == ([], [BadRow(FILE, f"truncated file: parquet footer missing after {size} bytes")])
    path.write_bytes(b"not parquet at all")
    assert read(path)[1][0].reason.startswith("unreadable file: ArrowInvalid")


def odd_lines() -> list[tuple[bytes, str | None]]:
    """Lines that each can break a reader, with the reason each must get (None: a good document)."""
    not_object = json.dumps(["x" * 197 + "é€"], ensure_ascii=False).encode()
    assert not_object[:200].decode("utf-8", "replace").endswith("\ufffd"), "a character must span byte 200"
    good = [jsonl([d]).rstrip() for d in documents(5)]
    return [
        (good[0], None),
        (not_object, "wrong schema: not a JSON object"),
        (good[1], None),
        (b"[" * 100_000, "malformed json: nested too deeply"),
        (good[2], None),
        (b'{"text": "a lone \\ud800 surrogate"}', "invalid utf-8: lone surrogate escape"),
        (good[3], None),
        (b'{"text": "\xff\xfe"}', "invalid utf-8"),
        (good[4], None),
    ]


def test_a_bad_line_is_one_bad_row(tmp_path):
    lines = odd_lines()
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    texts, bad = read(path)
    assert len(texts) == 5
    assert [(b.row, b.reason) for b in bad] == [(i, r) for i, (_, r) in enumerate(lines) if r is not None]


def test_explain_takes_the_odd_lines_one_by_one():
    cfg = DataConfig(sources={"pile": PILE})
    lines = odd_lines()
    results = list(explain(cfg, "pile", (line for line, _ in lines)))
    # The job's reasons, a lone surrogate escape included (it used to crash language ID), each on its line.
    assert [r.get("error") for r in results] == [reason for _, reason in lines]
    assert [r["line"] for r in results if "error" in r] == [2, 4, 6, 8]


def test_filter_stage_counts_rows_bad_and_kept_per_file(tmp_path):
    """Through the filter task (which writes parquet: a lone surrogate used to crash it), and with the
    counts of the file that the report lists."""
    lines = odd_lines()
    data = zstandard.ZstdCompressor().compress(b"\n".join(line for line, _ in lines) + b"\n")
    path = tmp_path / "odd.jsonl.zst"
    path.write_bytes(data[:-3])  # cut inside its only block: no row can be decoded
    work = WorkDir(tmp_path / "work")
    part = Partition("00000-pile", 0, "pile", str(path))
    assert filter_partition(part, {"pile": PILE}, work, rejects=True) == {
        "rows": 0,
        "kept": 0,
        "bad_rows": 0,
        "broken_files": 1,
    }
    path.write_bytes(data)
    stats = filter_partition(part, {"pile": PILE}, work, rejects=True)
    assert stats == {"rows": 9, "kept": 5, "bad_rows": 4, "broken_files": 0}
    bad = pq.read_table(work.bad(part.pid)).to_pylist()
    assert [(r["row"], r["reason"]) for r in bad] == [
        (i, r) for i, (_, r) in enumerate(lines) if r is not None
    ]
    stored = json.loads(work.stats("filter", part.pid).read_text())
    assert (stored["rows"], stored["bad_rows"], stored["truncated"], stored["file_error"]) == (
        9,
        4,
        False,
        None,
    )


def write_config(tmp_path: Path, sources: dict[str, dict], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "work"), "sources": sources}))
    return path


def corpus(tmp_path: Path) -> Path:
    """A folder with a good file, a zstd file cut half way, and a parquet file cut half way."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jsonl").write_bytes(jsonl(documents(20, seed=3)))
    zst = zstandard.ZstdCompressor().compress(jsonl(documents(600, seed=4)))
    (folder / "cut.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    pq.write_table(parquet(documents(50, seed=5)), folder / "whole.parquet")
    (folder / "cut.parquet").write_bytes((folder / "whole.parquet").read_bytes()[:2000])
    (folder / "whole.parquet").unlink()
    return folder


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_every_input_file_and_an_optional_empty_source_are_in_the_report(tmp_path):
    folder = corpus(tmp_path)
    sources = {
        "pile": {"reader": "pile", "paths": [f"{folder}/*"], "weight": 0.6},
        "extra": {
            "reader": "pile",
            "paths": [f"{tmp_path}/nowhere/*.jsonl"],
            "weight": 0.4,
            "optional": True,
        },
    }
    work = run(configs.load(write_config(tmp_path, sources), DataConfig))
    stats = json.loads((work / "stats.json").read_text())
    files = {Path(f["path"]).name: f for f in stats["files"]}
    assert set(files) == {"cut.jsonl.zst", "cut.parquet", "good.jsonl"}
    assert files["good.jsonl"] | {"path": None} == {
        "source": "pile",
        "path": None,
        "rows": 20,
        "bad_rows": 0,
        "kept": 20,
        "truncated": False,
        "file_error": None,
    }
    cut = files["cut.jsonl.zst"]
    assert cut["truncated"] and cut["file_error"].startswith("truncated file: zstd frame ends early after")
    assert 0 < cut["rows"] == cut["kept"] and cut["bad_rows"] == 0
    assert files["cut.parquet"]["truncated"] and files["cut.parquet"]["rows"] == 0
    # The partial last line of the cut file is part of its truncation, not a malformed row.
    assert (
        sorted(r["reason"].split(":")[0] for r in table_rows(work, "bad", ["reason"]))
        == ["truncated file"] * 2
    )
    assert stats["empty_sources"] == {
        "extra": {
            "optional": True,
            "why": f"none of its paths gives a file: {tmp_path}/nowhere/*.jsonl (no file matches)",
            "share": "its weight 0.4 is spread over the other sources in proportion to their weights",
        }
    }
    assert stats["mixture"]["pile"]["achieved_share"] == 1.0
    report = (work / "report.md").read_text()
    assert "## Sources that add nothing to the mixture" in report
    assert "| extra | yes | none of its paths gives a file:" in report
    assert f"| pile | {folder}/good.jsonl | 20 | 0 | 20 | no | - |" in report
    assert (
        f"| pile | {folder}/cut.jsonl.zst | {cut['rows']} | 0 | {cut['kept']} | yes | truncated file:"
        in report
    )


def test_required_source_matching_no_file_fails_before_ray_starts(tmp_path):
    sources = {
        "pile": {"reader": "pile", "paths": [f"{tmp_path}/*.jsonl"], "weight": 0.5},
        "extra": {"reader": "pile", "paths": [f"{tmp_path}/none/*.zst", "s3x://no/such/*"], "weight": 0.5},
    }
    (tmp_path / "a.jsonl").write_bytes(jsonl(documents(3)))
    config = write_config(tmp_path, sources)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(config)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode != 0
    assert result.stderr.startswith(
        f"error: source 'extra' has no input: none of its paths gives a file: {tmp_path}/none/*.zst (no file"
    ), result.stderr
    assert "Ray dashboard" not in result.stdout
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_required_source_with_no_readable_file_fails_before_dedup_unless_optional(tmp_path):
    folder = corpus(tmp_path)
    (folder / "good.jsonl").unlink()
    cut = folder / "cut.jsonl.zst"
    cut.write_bytes(cut.read_bytes()[:40])  # inside its first block: no row can be decoded
    sources = {
        "web": {"reader": "pile", "paths": [str(tmp_path / "web.jsonl")], "weight": 0.5},
        "pile": {"reader": "pile", "paths": [f"{folder}/*"], "weight": 0.5},
    }
    (tmp_path / "web.jsonl").write_bytes(jsonl(documents(10, seed=6)))
    cfg = configs.load(write_config(tmp_path, sources), DataConfig)
    with pytest.raises(InputError, match="source 'pile' has no input: no row of its 2 file") as error:
        run(cfg)
    assert "truncated file: parquet footer missing" in str(error.value)
    work = Path(cfg.work_dir)
    assert len(list((work / "stats" / "filter").glob("*.json"))) == 3 and not (work / "dedup").exists()

    # Marked optional, the same work dir goes on from where it stopped, and the report says so.
    optional = configs.load(write_config(tmp_path, sources), DataConfig, {"sources.pile.optional": True})
    stats = json.loads((run(optional) / "stats.json").read_text())
    assert stats["empty_sources"]["pile"]["optional"]
    assert stats["empty_sources"]["pile"]["why"].startswith("no row of its 2 file(s) became a document")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_output_is_one_line_per_stage_unless_verbose(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl(documents(30)))
    sources = {"pile": {"reader": "pile", "paths": [str(tmp_path / "a.jsonl")], "epochs": 1}}
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    results = {}
    for mode, flags in (("quiet", []), ("verbose", ["--verbose"])):
        (tmp_path / mode).mkdir()
        config = write_config(tmp_path / mode, sources)
        results[mode] = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", str(config), *flags],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
    quiet = results["quiet"]
    assert "INFO" not in quiet.stdout + quiet.stderr and "WARNING" not in quiet.stderr, quiet.stderr
    for stage in STAGES:
        assert len([line for line in quiet.stdout.splitlines() if line.startswith(f"[{stage}]")]) == 1, stage
    assert "[filter] 1/1 tasks: rows=30 kept=30 bad_rows=0 broken_files=0" in quiet.stdout
    assert "Running Dataset" in results["verbose"].stderr


def test_progress_is_one_line_rewritten_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for out in (io.StringIO(), Terminal()):
        progress = Progress("filter", 3, "tasks", done_before=1, out=out)
        progress.advance({"kept": 2})
        progress.advance({"kept": 3})
        progress.finish()
        text = out.getvalue()
        assert text.count("\n") == 1 and text.endswith("\n")
        assert "[filter] 3/3 tasks: kept=5, 1 done before" in text
        assert text.count("\r") == (3 if isinstance(out, Terminal) else 0)


@pytest.mark.slow
def test_killed_job_leaves_no_ray_processes_to_the_next_run(tmp_path):
    """SIGKILL of `python -m pipeline run` on local Ray: its agents outlive it; the next run stops them."""
    (tmp_path / "a.jsonl").write_bytes(jsonl(documents(30)))
    config = write_config(
        tmp_path, {"pile": {"reader": "pile", "paths": [str(tmp_path / "a.jsonl")], "epochs": 1}}
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # local Ray, started by the job
    command = [sys.executable, "-m", "pipeline", "run", str(config)]
    driver = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ray_processes: dict[str, psutil.Process] = {}
    try:
        deadline = time.time() + 120
        while "ray::RuntimeEnvAgent" not in ray_processes and time.time() < deadline:
            time.sleep(0.2)
            ray_processes |= descendants(driver.pid)
        assert "raylet" in ray_processes, "Ray did not start"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        time.sleep(2)
        assert any(map(running, ray_processes.values())), "Ray stopped with its driver: nothing to test"

        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        assert "[ray] stopping" in result.stdout
        assert not [name for name, p in ray_processes.items() if running(p)]
    finally:
        for p in ray_processes.values():
            if running(p):
                p.kill()


def descendants(pid: int) -> dict[str, psutil.Process]:
    """The processes below `pid` by name (one of each name is enough to tell whether Ray is gone)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.name()] = child
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_bad_parquet_cell_costs_its_row_only(tmp_path):
    """Issue 23 row 4: one invalid UTF-8 cell in row 30 of 60 cost all 60 rows (`broken_files=1`)."""
    path = tmp_path / "cells.parquet"
    kept = cells_file(path, 60, 25, {30: b"bad \xff\xfe cell", 40: None})
    texts, bad = read(path)
    assert texts == kept
    assert bad == [
        BadRow(30, "invalid utf-8: in `text`", "bad \ufffd\ufffd cell"),
        BadRow(40, "wrong schema: `text` is NoneType, not a string"),
    ]
    work = WorkDir(tmp_path / "work")
    part = Partition("00000-pile", 0, "pile", str(path))
    stats = filter_partition(part, {"pile": PILE}, work, rejects=True)
    assert stats == {"rows": 60, "kept": 58, "bad_rows": 2, "broken_files": 0}
    assert [(r["row"], r["reason"]) for r in pq.read_table(work.bad(part.pid)).to_pylist()] == [
        (30, "invalid utf-8: in `text`"),
        (40, "wrong schema: `text` is NoneType, not a string"),
    ]


def test_a_corrupt_row_group_costs_its_rows_and_is_named(tmp_path):
    """The page header of row group 1 of 3 overwritten: groups 0 and 2 are read, group 1 is one bad
    row standing for its 100 rows, and the file is not broken."""
    path = tmp_path / "groups.parquet"
    texts = cells_file(path, 300, 100, {})
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))
    read_texts, bad = read(path)
    assert read_texts == texts[:100] + texts[200:]
    assert [(b.row, b.rows) for b in bad] == [(100, 100)]
    assert bad[0].reason.startswith("unreadable row group: group 1, rows 100-199: ")
    work = WorkDir(tmp_path / "work")
    part = Partition("00000-pile", 0, "pile", str(path))
    stats = filter_partition(part, {"pile": PILE}, work, rejects=True)
    assert stats == {"rows": 300, "kept": 200, "bad_rows": 100, "broken_files": 0}
    stored = json.loads(work.stats("filter", part.pid).read_text())
    assert stored["reasons"]["bad"] == {"unreadable row group": 100} and stored["file_error"] is None


def test_parquet_cells_of_other_types_cost_their_row_only(tmp_path):
    """Metadata that JSON has no type for: a timestamp is kept as ISO 8601 text (RefinedWeb's parquet
    has one; its rows used to end the file with `unreadable file: TypeError`), one past Python's range
    costs its row, and so do bytes."""
    texts = [d["text"] for d in documents(4, seed=8)]
    dates = tmp_path / "dates.parquet"
    stamps = pa.array([0, 2**62, 0, 0], pa.timestamp("us"))
    pq.write_table(pa.table({"content": texts, "timestamp": stamps}), dates)
    items = list(
        read_file("refinedweb", str(dates), SourceConfig(reader="refinedweb", paths=["-"], epochs=1))
    )
    assert [(i.text, i.meta) for i in items if isinstance(i, Record)] == [
        (texts[i], {"timestamp": "1970-01-01T00:00:00"}) for i in (0, 2, 3)
    ]
    assert [(b.row, b.reason) for b in items if isinstance(b, BadRow)] == [
        (1, "wrong schema: `timestamp` cannot be read: date value out of range")
    ]
    blobs = tmp_path / "blobs.parquet"
    pq.write_table(pa.table({"text": texts[:2], "meta": pa.array([None, b"\x00"], pa.binary())}), blobs)
    assert read(blobs) == (
        [texts[0]],
        [BadRow(1, "wrong schema: metadata is not JSON: Object of type bytes is not JSON serializable")],
    )


PAGE_ROWS = 10
# How each kind of damage is done to the page holding a given row (pages of PAGE_ROWS rows, plain
# encoding, uncompressed): its offset from the row's value (a 4-byte length, then the text), its bytes,
# and what pyarrow says. A page's levels (6 bytes: their length, one run) sit between its header and
# its first value. A changed text byte is found only by the page checksum, which only that file has.
PAGE_DAMAGE = {
    "page header": (-10, b"\xff" * 4, "Deserializing page header failed"),
    "levels": (-6, b"\xff" * 4, "corrupt data page"),
    "text byte": (10, b"X", "CRC checksum verification failed"),
}


def damaged_pages_file(path: Path, rows: int, group_rows: int, row: int, damage: str) -> list[str]:
    """A parquet file of pages of PAGE_ROWS rows with the page holding `row` damaged; returns the texts."""
    table, texts = cells_table(rows, {})
    options = {"data_page_size": 1, "write_batch_size": PAGE_ROWS, "use_dictionary": False}
    checksums = damage == "text byte"
    pq.write_table(
        table, path, row_group_size=group_rows, compression="none", write_page_checksum=checksums, **options
    )
    offset, garbage, _ = PAGE_DAMAGE[damage]
    value = texts[row - row % PAGE_ROWS if offset < 0 else row].encode()
    data = path.read_bytes()
    at = data.index(struct.pack("<i", len(value)) + value) + offset
    path.write_bytes(data[:at] + garbage + data[at + len(garbage) :])
    return texts


@pytest.mark.parametrize("damage", list(PAGE_DAMAGE))
def test_a_corrupt_page_costs_its_rows_and_those_after_it_in_its_group_only(tmp_path, damage):
    """Row 137 of 300 in groups of 100: rows 100-129 of its group, before its page, are kept too; rows
    130-199 are one bad row standing for them (pyarrow cannot read on past a bad page: the reasons
    are in docs/reliability.md)."""
    path = tmp_path / "pages.parquet"
    texts = damaged_pages_file(path, 300, 100, 137, damage)
    read_texts, bad = read(path)
    assert read_texts == texts[:130] + texts[200:]
    assert [(b.row, b.rows) for b in bad] == [(130, 70)]
    assert bad[0].reason.startswith("unreadable row group: group 1, rows 130-199: ")
    assert PAGE_DAMAGE[damage][2] in bad[0].reason
    if damage == "text byte":
        work = WorkDir(tmp_path / "work")
        part = Partition("00000-pile", 0, "pile", str(path))
        stats = filter_partition(part, {"pile": PILE}, work, rejects=True)
        assert stats == {"rows": 300, "kept": 230, "bad_rows": 70, "broken_files": 0}


def test_a_corrupt_page_past_the_first_batches_of_a_group_keeps_the_rows_before_it(tmp_path):
    """A group of 2600 rows read in batches of 1024: the third batch breaks at row 2537's page; the two
    before it and rows 2048-2529 of the third are kept."""
    path = tmp_path / "big_group.parquet"
    texts = damaged_pages_file(path, 2600, 2600, 2537, "text byte")
    read_texts, bad = read(path)
    assert read_texts == texts[:2530]
    assert [(b.row, b.rows, b.reason.split(": ")[1]) for b in bad] == [(2530, 70, "group 0, rows 2530-2599")]


IPC = ("stream", "file")


def arrow_file(path: Path, table: pa.Table, flavour: str, batch_rows: int, **options) -> list[int]:
    """`table` as an Arrow IPC stream or file in batches of `batch_rows` rows; returns the byte offset
    at which each batch ends."""
    sink = io.BytesIO()
    new = pa.ipc.new_stream if flavour == "stream" else pa.ipc.new_file
    ends = []
    with new(sink, table.schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
            ends.append(sink.tell())
    path.write_bytes(sink.getvalue())
    return ends


@pytest.mark.parametrize("flavour", IPC)
def test_a_bad_arrow_cell_costs_its_row_only(tmp_path, flavour):
    """Invalid UTF-8 in a text and in a dictionary-encoded cell, a null text and a date past Python's
    range, in batches 0, 1, 2 and 3 of 4."""
    table, kept = cells_table(40, {5: b"bad \xff\xfe cell", 12: None})
    stamps, subsets = [0] * 40, [b"web"] * 40
    stamps[27], subsets[33] = 2**62, b"w\xffb"
    table = table.append_column("stamp", pa.array(stamps, pa.timestamp("us")))
    table = table.append_column("subset", pa.array(subsets).view(pa.string()).dictionary_encode())
    path = tmp_path / "cells.arrow"
    arrow_file(path, table, flavour, 10)
    texts, bad = read(path)
    assert texts == [t for t in kept if not t.startswith(("doc 27 ", "doc 33 "))]
    assert bad == [
        BadRow(5, "invalid utf-8: in `text`", "bad \ufffd\ufffd cell"),
        BadRow(12, "wrong schema: `text` is NoneType, not a string"),
        BadRow(27, "wrong schema: `stamp` cannot be read: date value out of range"),
        BadRow(33, "invalid utf-8: in `subset`"),
    ]
    work = WorkDir(tmp_path / "work")
    part = Partition("00000-pile", 0, "pile", str(path))
    stats = filter_partition(part, {"pile": PILE}, work, rejects=True)
    assert stats == {"rows": 40, "kept": 36, "bad_rows": 4, "broken_files": 0}


@pytest.mark.parametrize("flavour", IPC)
@pytest.mark.parametrize("cut", ["inside batch 2", "after batch 2", "one byte short"])
def test_truncated_arrow_keeps_the_batches_before_the_cut(tmp_path, flavour, cut):
    """A stream cut inside a message or at a batch boundary (no end-of-stream marker), and a file
    without its footer: the batches before the cut are read, and the file is one truncated row."""
    table, texts = cells_table(50, {})
    whole = tmp_path / "whole.arrow"
    ends = arrow_file(whole, table, flavour, 10)
    data = whole.read_bytes()
    size = {"inside batch 2": (ends[1] + ends[2]) // 2, "after batch 2": ends[2], "one byte short": -1}[cut]
    size %= len(data)
    path = tmp_path / "cut.arrow"
    path.write_bytes(data[:size])
    whole_batches = sum(end <= size for end in ends)
    assert whole_batches == {"inside batch 2": 2, "after batch 2": 3, "one byte short": 5}[cut]
    what = "arrow stream ends early" if flavour == "stream" else "arrow file footer missing"
    assert read(path) == (
        texts[: 10 * whole_batches],
        [BadRow(FILE, f"truncated file: {what} after {size} bytes")],
    )


def corrupt_batch(data: bytes, batch: pa.RecordBatch) -> bytes:
    """`data` with the second offset of the batch's text column (unique in the file) past its data."""
    lengths = [len(t) for t in batch.column("text").cast(pa.binary()).to_pylist()[:2]]
    offsets = struct.pack("<3i", 0, lengths[0], lengths[0] + lengths[1])
    at = data.index(offsets)
    assert data.count(offsets) == 1
    return data[: at + 4] + struct.pack("<i", 1 << 30) + data[at + 8 :]


@pytest.mark.parametrize("flavour", IPC)
def test_an_arrow_batch_with_broken_offsets_costs_its_rows_and_is_named(tmp_path, flavour):
    """Arrow takes IPC buffers as they are: an offset past the data read as is would read memory the
    batch does not own. The batch is checked first and costs its own rows; the next batch is read."""
    table, texts = cells_table(30, {})
    path = tmp_path / "offsets.arrow"
    arrow_file(path, table, flavour, 10)
    path.write_bytes(corrupt_batch(path.read_bytes(), table.slice(10, 10).to_batches()[0]))
    read_texts, bad = read(path)
    assert read_texts == texts[:10] + texts[20:]
    assert [(b.row, b.rows) for b in bad] == [(10, 10)]
    assert bad[0].reason.startswith("unreadable record batch: batch 1, rows 10-19: `text`: ")


@pytest.mark.parametrize("flavour", IPC)
def test_an_undecodable_arrow_batch_costs_its_rows_in_a_file_and_the_rest_in_a_stream(tmp_path, flavour):
    """Batch 1's compressed text buffer broken: a file's footer places every batch and the batch's
    other column tells its rows; a stream holds no row count outside the batch, so its rest is lost."""
    table, texts = cells_table(30, {})
    path = tmp_path / "zstd.arrow"
    ends = arrow_file(path, table, flavour, 10, compression="zstd")
    data = bytearray(path.read_bytes())
    # Each buffer of the batch is one zstd frame; the longest holds the texts.
    frames = [i for i in range(ends[0], ends[1]) if data.startswith(b"\x28\xb5\x2f\xfd", i)]
    texts_frame = max(
        zip(frames, [*frames[1:], ends[1]], strict=True), key=lambda frame: frame[1] - frame[0]
    )[0]
    data[texts_frame : texts_frame + 4] = b"\xff" * 4  # its magic number
    path.write_bytes(bytes(data))
    read_texts, bad = read(path)
    detail = "OSError: ZSTD decompression failed: Unknown frame descriptor"
    if flavour == "file":
        assert read_texts == texts[:10] + texts[20:]
        assert bad == [BadRow(10, f"unreadable record batch: batch 1, rows 10-19: {detail}", rows=10)]
    else:
        assert read_texts == texts[:10]
        assert bad == [BadRow(FILE, f"unreadable file: record batch 1 (from row 10): {detail}")]


def test_arrow_files_in_s3_read_as_local_ones(s3_bucket, tmp_path):
    """Both IPC flavours through ranged reads of an object (the file format seeks to its footer), whole
    and cut in half."""
    table, texts = cells_table(40, {7: b"bad \xff"})
    fs, bucket = filesystem(s3_bucket)
    for flavour in IPC:
        path = tmp_path / f"{flavour}.arrow"
        arrow_file(path, table, flavour, 10)
        fs.put_file(str(path), f"{bucket}/{flavour}.arrow")
        fs.pipe_file(f"{bucket}/cut-{flavour}.arrow", path.read_bytes()[: path.stat().st_size // 2])
        (tmp_path / f"cut-{flavour}.arrow").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        for name in (f"{flavour}.arrow", f"cut-{flavour}.arrow"):
            assert read(f"{s3_bucket}/{name}") == read(tmp_path / name), name
        assert read(f"{s3_bucket}/{flavour}.arrow")[0] == texts


@pytest.mark.parametrize("kind", ["stream.arrow", "file.arrow", "parquet"])
def test_an_input_replaced_while_it_is_read_stops_the_job_and_costs_no_row(s3_bucket, tmp_path, kind):
    """The store's refusal reaches a reader as an OSError, as a broken page or batch does: it used to be
    counted as one (`unreadable row group`), losing the rest of the file to the work dir for good."""
    text = os.urandom(2000).hex()
    table = pa.table({"text": [f"{i} {text}" for i in range(2 * READ_BLOCK // 4000)]})
    path = tmp_path / f"big.{kind}"
    if kind == "parquet":
        pq.write_table(table, path, row_group_size=500, compression="none")
    else:
        arrow_file(path, table, kind.split(".")[0], 500)
    fs, bucket = filesystem(s3_bucket)
    fs.put_file(str(path), f"{bucket}/{path.name}")
    rows = read_file("pile", f"{s3_bucket}/{path.name}", PILE)
    assert [next(rows).text for _ in range(3)] == table["text"][:3].to_pylist()
    fs.pipe_file(f"{bucket}/{path.name}", path.read_bytes()[::-1])
    with pytest.raises(SourceUnreachable, match="changed while it was read"):
        list(rows)


def test_a_hugging_face_dataset_saved_to_disk_is_read_whole(tmp_path):
    """`datasets.save_to_disk` writes the IPC stream format."""
    import datasets  # slow to import, and only this test needs it

    rows = documents(30, seed=10)
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    path = tmp_path / "saved" / "data-00000-of-00001.arrow"
    assert not path.read_bytes().startswith(b"ARROW1")
    assert read(path) == ([r["text"] for r in rows], [])
