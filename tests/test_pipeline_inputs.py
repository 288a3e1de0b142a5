"""Hostile input loses nothing silently: truncated and multi-frame compressed files, truncated parquet,
odd lines, sources without input, every file in the report; quiet output; no Ray left by a killed job."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
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
from pipeline.cluster import running
from pipeline.config import DataConfig, SourceConfig
from pipeline.explain import explain
from pipeline.inputs import InputError
from pipeline.plan import Partition
from pipeline.read_filter import filter_partition
from pipeline.run import run
from pipeline.sources import FILE, BadRow, Record, read_file
from pipeline.stage import Progress
from pipeline.workdir import WorkDir

PILE = SourceConfig(reader="pile", paths=["unused"], epochs=1)
STAGES = ("filter", "minhash", "buckets", "split", "mix")


def documents(n: int, seed: int = 0) -> list[dict]:
    """Pile rows of seeded random words: they compress poorly, so a file spans several zstd blocks."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(3000)]
    return [{"text": f"doc {i} " + " ".join(rng.choices(words, k=150)), "meta": {}} for i in range(n)]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def parquet(rows: list[dict]) -> pa.Table:
    return pa.table({"text": [r["text"] for r in rows]})


def read(path: Path) -> tuple[list[str], list[BadRow]]:
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


def cells_file(path: Path, rows: int, group_rows: int, odd: dict[int, bytes | None]) -> list[str]:
    """A pile parquet file whose text cells at the rows of `odd` hold the given bytes (invalid UTF-8, or
    None for a null); returns the texts of the other rows."""
    texts: list[bytes | None] = [d["text"].encode() for d in documents(rows, seed=7)]
    for row, cell in odd.items():
        texts[row] = cell
    # Arrow's view of binary as string does not check UTF-8: the bytes are written as they are.
    column = pa.array(texts, pa.binary()).view(pa.string())
    pq.write_table(
        pa.table({"text": column, "meta": pa.array([{"k": 1}] * rows)}), path, row_group_size=group_rows
    )
    return [t.decode() for i, t in enumerate(texts) if i not in odd]


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
