"""The hostile-user probe (issue 23): what a careless or hostile user does through the real entry points,
each case judged against the rule the project promises (docs/design.md: Files, Locks, Checkpoints,
Export; docs/reliability.md; docs/serving.md).

    python -m bench.probe [--only PATTERN] [--keep DIR]

Every case is a small function that runs the command lines (`python -m pipeline|training|evaluation|
serving`) in subprocesses, or talks raw HTTP to a running server, in a fresh temporary folder, and prints
one markdown table row: number, kind, what was done, what the rule expects, what happened, and the
verdict (handled / NOT handled). What several cases need (the sample data job's work dir and shards, a
micro model trained 8 steps, a tiny random export and a server on it) is made once, when a case first
asks for it. A summary line ends the table; the exit status is 1 when any case is not handled.

`--only PATTERN` runs the cases whose function name matches the regular expression; `--keep DIR` works
in DIR (created) and leaves it there, for a look at what a case left behind. Full disks and read-only
paths are real small tmpfs mounts (root or CAP_SYS_ADMIN); where mounting fails those cases are skipped.
It is not part of `make test` or `make bench`: it takes about 10 minutes on 2 cores
(docs/reliability.md holds its last table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gzip
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard

from harness.disks import CannotMount, tmpfs
from harness.inputs import cells_file, documents, jsonl
from harness.micro import MICRO_MODEL
from harness.server import running_server
from harness.slow_client import RESET, completion_head, health_beside_idle, health_latencies, trickle
from harness.tiny_export import make_tiny_export

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "configs/data/sample.yaml"
TINY_TRAIN = ROOT / "configs" / "train" / "tiny.yaml"
KEY, NAME, CONTEXT = "probe-key", "tiny", 2048
HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS, MAX_BODY = 2.0, 3.0, 100, 1 << 20
SLACK = 3.0  # a busy machine fires the server's timers late, never early


class NotHandled(Exception):
    """The case's outcome breaks the rule; the message is what was observed."""


def require(condition: object, observed: str) -> None:
    if not condition:
        raise NotHandled(observed)


@dataclass
class Case:
    name: str
    kind: str
    did: str
    expected: str
    run: Callable[[Probe], str]


CASES: list[Case] = []


def case(kind: str, did: str, expected: str) -> Callable[[Callable[[Probe], str]], Callable[[Probe], str]]:
    """Register a case: `did` and `expected` are its row's cells; the function returns what it observed."""

    def register(fn: Callable[[Probe], str]) -> Callable[[Probe], str]:
        CASES.append(Case(fn.__name__, kind, did, expected, fn))
        return fn

    return register


# -- the shared setup ---------------------------------------------------------------------------------


class Probe:
    """The temporary folder, the environment of the commands, and what several cases share, each made
    when first asked for."""

    def __init__(self, root: Path, stack: contextlib.ExitStack):
        self.root, self.stack = root, stack
        self._count = 0

    def folder(self, name: str) -> Path:
        self._count += 1
        path = self.root / f"{self._count:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def adopt(self, name: str, value: object) -> None:
        """Take what a case made as the shared `name` (one of the cached properties below), unless that
        was made already: a case that must make one anyway saves the probe making it again."""
        self.__dict__.setdefault(name, value)

    def made(self, name: str) -> object:
        """The shared `name` if it has been made, else None."""
        return self.__dict__.get(name)

    def short(self, text: str, limit: int = 150) -> str:
        """`text` on one line with the temporary folder as `$T`, cut to `limit` characters."""
        text = " ".join(str(text).split()).replace(str(self.root), "$T")
        return text if len(text) <= limit else text[: limit - 1] + "…"

    @functools.cached_property
    def mlflow_uri(self) -> str:
        """One sqlite store for every command; created here so no two first users race to create it."""
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        uri = f"sqlite:///{self.root / 'mlflow.db'}"
        mlflow.MlflowClient(uri).search_experiments()
        return uri

    @functools.cached_property
    def env(self) -> dict[str, str]:
        """The commands' environment: the probe's MLflow store and unbuffered output (for the markers a
        case waits for). Each data job starts its own local Ray, as a user's does."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SERVING_API_KEY")}
        return env | {"MLFLOW_TRACKING_URI": self.mlflow_uri, "PYTHONUNBUFFERED": "1"}

    def cli(self, *args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", *map(str, args)]
        return subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def spawn(self, *args: object, log: Path) -> subprocess.Popen:
        """A command in its own process group (for `kill -9` of the group), its output in `log`."""
        with log.open("w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", *map(str, args)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # -- the data job ----------------------------------------------------------------------------------

    @functools.cached_property
    def eval_documents(self) -> Path:
        """The eval documents of the sample's decontam tasks, as `make data` writes them before a run."""
        path = self.folder("eval-documents") / "documents.jsonl"
        done = self.cli("evaluation", "documents", "--tasks", "stablelm2_cloze,stablelm2_gen", "--out", path)
        setup_ok(done, "evaluation documents")
        return path

    def pipeline(self, command: str, *settings: str) -> subprocess.CompletedProcess[str]:
        """`python -m pipeline COMMAND` on the sample config with `settings` as `--set`s."""
        sets = [x for s in (f"decontam.documents={self.eval_documents}", *settings) for x in ("--set", s)]
        return self.cli("pipeline", command, SAMPLE, *sets)

    def spawn_pipeline(self, command: str, *settings: str, log: Path) -> subprocess.Popen:
        sets = [x for s in (f"decontam.documents={self.eval_documents}", *settings) for x in ("--set", s)]
        return self.spawn("pipeline", command, SAMPLE, *sets, log=log)

    @functools.cached_property
    def sample_work(self) -> Path:
        """A finished `pipeline run` of the sample: the reference a resumed run must equal."""
        work = self.folder("sample") / "work"
        setup_ok(self.pipeline("run", f"work_dir={work}"), "pipeline run")
        return work

    @functools.cached_property
    def shards(self) -> Path:
        """The sample's packed shards."""
        out = self.folder("shards") / "shards"
        setup_ok(
            self.pipeline("pack", f"work_dir={self.sample_work}", f"pack.out_dir={out}"), "pipeline pack"
        )
        return out

    # -- training ----------------------------------------------------------------------------------------

    def train_config(self, folder: Path, **sections: object) -> Path:
        """configs/train/tiny.yaml at micro size on the sample shards (8 steps, a checkpoint every 2,
        fp32), checkpointing in `folder`/ckpt; `sections` merge into its sections."""
        raw = yaml.safe_load(TINY_TRAIN.read_text())
        raw["model"] |= MICRO_MODEL
        raw["data"] |= {"shards": str(self.shards), "window": 32}
        raw["schedule"] = {"warmup_steps": 2, "total_steps": 8}
        raw["checkpoint"] = {"dir": str(folder / "ckpt"), "interval": 2, "keep_last": 2}
        raw["eval"] = {"interval": 4, "batches": 1}
        raw["log"] = {"interval": 1, "experiment": "probe"}
        raw["precision"] = "fp32"
        for section, values in sections.items():
            raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
        path = folder / "train.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    @functools.cached_property
    def trained(self) -> tuple[Path, dict[int, str]]:
        """A straight 8-step run: its checkpoint dir (steps 6 and 8) and its loss at each step."""
        folder = self.folder("trained")
        done = self.cli("training", "train", self.train_config(folder))
        setup_ok(done, "training train")
        return folder / "ckpt", losses(done.stdout)

    def checkpoint_copy(self, folder: Path) -> Path:
        """A copy of the trained run's checkpoint dir in `folder`/ckpt, for a case to damage."""
        return Path(shutil.copytree(self.trained[0], folder / "ckpt"))

    # -- bad inputs ------------------------------------------------------------------------------------

    @functools.cached_property
    def inputs(self) -> tuple[Path, dict, dict[str, dict], list[dict]]:
        """One `pipeline run` over a folder of bad files beside a good one (`make_inputs_run`): the work
        dir, stats.json, its per-file records by name, and the bad rows."""
        return make_inputs_run(self)

    # -- serving -----------------------------------------------------------------------------------------

    @functools.cached_property
    def tiny_export(self) -> Path:
        return make_tiny_export(self.folder("tiny-export") / "hf", seed=0, max_position_embeddings=CONTEXT)

    def corrupt_export(self, how: str) -> Path:
        folder = Path(shutil.copytree(self.tiny_export, self.folder(f"export-{how}") / "hf"))
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        if how == "truncated":
            weights.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            weights.write_bytes(b"")
        else:  # the header's length is right, its JSON is not
            header = b'{"not": "a header"'
            weights.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + len(header) :])
        return folder

    @functools.cached_property
    def server(self) -> str:
        """`python -m serving` on the tiny export with short timeouts and the probe's API key."""
        folder = self.folder("server")
        (folder / "serve.yaml").write_text(
            f"served_model_name: {NAME}\ndevice: cpu\ndtype: float32\nheader_timeout_s: {HEADER_TIMEOUT}\n"
            f"body_timeout_s: {BODY_TIMEOUT}\nmax_connections: {MAX_CONNECTIONS}\n"
            f"max_body_bytes: {MAX_BODY}\n"
        )
        log = self.stack.enter_context((folder / "server.log").open("w+"))
        env = self.env | {"SERVING_API_KEY": KEY}
        return self.stack.enter_context(
            running_server(self.tiny_export, folder / "serve.yaml", env=env, log=log)
        )

    def post(
        self, body: object, path: str = "/v1/completions", key: str | None = KEY, timeout: object = 120
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{self.server}{path}", json=body, headers=headers, timeout=timeout)

    def raw_post(self, content: object, path: str = "/v1/completions") -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        return httpx.post(f"{self.server}{path}", content=content, headers=headers, timeout=120)


class SetupFailed(Exception):
    """What several cases share could not be made: a defect of its own, shown as the case's error."""


def setup_ok(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SetupFailed(f"{what} exited {done.returncode}: {tail[0]}")


def losses(stdout: str) -> dict[int, str]:
    """The training loss printed at each step, as printed."""
    return {int(m[1]): m[2] for m in re.finditer(r"^step (\d+)/\d+ \| loss ([\d.]+)", stdout, re.M)}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder)."""
    paths = sorted(root.rglob("*"))
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else None for path in paths}


def wait_for(condition: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def kill_group(proc: subprocess.Popen) -> None:
    """`kill -9` the process group `proc` leads, unless `proc` has ended (its group id could be
    another's by now), and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def error_line(
    p: Probe,
    done: subprocess.CompletedProcess[str],
    *needles: object,
    code: int | None = None,
    first: bool = False,
) -> str:
    """Judge a refused command: a non-zero exit (`code` if given), no traceback, and a last stderr line
    (`first`: the first) that is an error naming each of `needles`; returns what was observed."""
    lines = done.stderr.strip().splitlines()
    last = (lines[0] if first else lines[-1]) if lines else "(nothing on stderr)"
    observed = f"exit {done.returncode}, {len(lines)} stderr line(s): {p.short(last)}"
    require(
        "Traceback" not in done.stderr + done.stdout, f"a traceback, exit {done.returncode}: {p.short(last)}"
    )
    require(done.returncode == code if code is not None else done.returncode != 0, observed)
    require(last.startswith("error"), observed)
    for needle in needles:
        require(str(needle) in last, f"{observed} (does not name {p.short(str(needle), 60)})")
    return observed


def openai_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> str:
    """Judge an HTTP refusal: `status` with OpenAI's error object (and its `code` / `param`)."""
    observed = f"{response.status_code} {response.text[:110]}"
    require(response.status_code == status, observed)
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise NotHandled(f"{observed} (not OpenAI's error shape)") from None
    require(
        isinstance(error, dict) and {"message", "type", "code"} <= set(error) and error["message"], observed
    )
    require(code is None or error["code"] == code, observed)
    require(param is None or error.get("param") == param, observed)
    return f"{response.status_code} {error['code']}" + (f" param={error.get('param')}" if param else "")


def healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=10).status_code == 200
    return False


def metric(url: str, name: str, *labels: str) -> float:
    """The sum of the Prometheus samples of `name` whose labels hold each of `labels`."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


# == the 13 rows of docs/reliability.md, as written there ================================================


@case(
    "locks (row 3)",
    "a second `pipeline run` in the work dir of a running one",
    "refused before it touches a file; the first finishes",
)
def two_pipeline_runs_in_one_work_dir(p: Probe) -> str:
    folder = p.folder("two-runs")
    work = folder / "work"
    first = p.spawn_pipeline("run", f"work_dir={work}", log=folder / "first.log")
    try:
        require(wait_for(lambda: (work / ".lock").exists() and (work / "plan.json").exists(), 120), "no lock")
        observed = error_line(
            p, p.pipeline("run", f"work_dir={work}"), f"{work} is in use by another job (pid {first.pid}"
        )
        require(first.wait(timeout=300) == 0, f"{observed}; the first exited {first.returncode}")
    finally:
        kill_group(first)
    require((work / "_SUCCESS.json").exists(), "the first run did not finish")
    p.adopt("sample_work", work)  # a finished sample run: the reference for later cases
    return observed + "; the first finished"


@case(
    "locks (row 2)",
    "two `training train` on one `checkpoint.dir`, the second started 2 s after the first",
    "the one that comes second refused in one line naming the holder; the other finishes",
)
def two_trainers_on_one_checkpoint_dir(p: Probe) -> str:
    folder = p.folder("two-trainers")
    config = p.train_config(folder)
    jobs = [p.spawn("training", "train", config, log=folder / "first.log")]
    time.sleep(2)  # both import DeepSpeed for seconds: either may reach the lock first
    jobs.append(p.spawn("training", "train", config, log=folder / "second.log"))
    try:
        codes = [job.wait(timeout=300) for job in jobs]
    finally:
        for job in jobs:
            kill_group(job)
    logs = [(folder / name).read_text() for name in ("first.log", "second.log")]
    refused = 1 if "is in use by another job" in logs[1] else 0
    holder = 1 - refused
    latest = folder / "ckpt" / "latest"
    if codes[holder] == 0 and latest.exists() and latest.read_text().strip() == "step_00000008":
        # The one that trained is the straight 8-step run later cases resume and compare with.
        p.adopt("trained", (folder / "ckpt", losses(logs[holder])))
    lines = logs[refused].strip().splitlines()
    line = next((x for x in lines if x.startswith("error: ")), "(no error line)")
    after = " / ".join(lines[lines.index(line) + 1 :]) if line in lines else ""
    observed = f"exit codes {codes}; the refused one printed: {p.short(line, 100)}"
    observed += f", then: {p.short(after, 80)}" if after else ""
    require(codes[refused] == 2 and codes[holder] == 0 and "Traceback" not in "".join(logs), observed)
    require(not after, observed)
    require(
        line.startswith(f"error: {folder / 'ckpt'} is in use by another job (pid {jobs[holder].pid} "),
        observed,
    )
    require(p.made("trained") and p.trained[0] == folder / "ckpt", observed + "; no step 8")
    return observed + "; the other finished at step 8"


@case(
    "output paths (row 1)",
    "`training export CK d`, `d` holding important.txt",
    "refused in one line; `d` untouched",
)
def export_into_a_folder_of_other_files(p: Probe) -> str:
    d = p.folder("export-into-d") / "d"
    d.mkdir()
    (d / "important.txt").write_text("x\n")
    observed = error_line(p, p.cli("training", "export", p.trained[0], d), "--overwrite", code=2)
    require(tree(d.parent) == {"d": None, "d/important.txt": b"x\n"}, "d's files changed")
    return observed + "; d untouched"


@case("output paths (row 1)", "`training export CKDIR CKDIR`", "refused in one line; every `step_*` kept")
def export_onto_its_checkpoint_dir(p: Probe) -> str:
    ckpt = p.checkpoint_copy(p.folder("export-onto-ckpt"))
    before = tree(ckpt)
    observed = error_line(p, p.cli("training", "export", ckpt, ckpt), code=2)
    require(tree(ckpt) == before, f"{observed}; the checkpoint dir changed")
    return observed + "; unchanged"


@case(
    "output paths (row 1)",
    "`training export CK out --overwrite`, `out` a plain file",
    "refused; the file as it was, no `.old`",
)
def export_over_a_plain_file(p: Probe) -> str:
    folder = p.folder("export-over-file")
    (folder / "out").write_text("mine")
    observed = error_line(p, p.cli("training", "export", p.trained[0], folder / "out", "--overwrite"), code=2)
    require(tree(folder) == {"out": b"mine"}, f"{observed}; left {sorted(tree(folder))}")
    return observed + "; nothing else there"


@case(
    "locks (row 3)",
    "`pipeline pack` into an out_dir whose `.lock` a killed pack left (dead pid, this host)",
    "taken over with a one-line warning; packs",
)
def a_stale_lock_is_taken_over(p: Probe) -> str:
    out = p.folder("stale-lock") / "shards"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = {
        "host": socket.gethostname(),
        "pid": dead.pid,
        "started": "2026-01-01T00:00:00+00:00",
        "command": "x",
    }
    (out / ".lock").write_text(json.dumps(record))
    done = p.pipeline("pack", f"work_dir={p.sample_work}", f"pack.out_dir={out}")
    output = (done.stderr + done.stdout).splitlines()
    warning = next((line for line in output if "taking over the lock" in line), "")
    require(done.returncode == 0, f"exit {done.returncode}: {p.short(done.stderr.strip()[-150:])}")
    require(warning and (out / "manifest.json").exists(), "no warning, or no manifest")
    return f"exit 0: {p.short(warning, 110)}"


def make_inputs_run(p: Probe) -> tuple[Path, dict, dict[str, dict], list[dict]]:
    folder = p.folder("inputs")
    src = folder / "in"
    src.mkdir()
    (src / "good.jsonl").write_bytes(jsonl(documents(20, seed=3)))
    cells_file(src / "cells.parquet", 60, 25, {30: b"bad \xff\xfe cell"})  # row 4, as written
    cells_file(src / "nulls.parquet", 10, 10, {3: None})
    cells_file(src / "groups.parquet", 300, 100, {})
    offset = pq.ParquetFile(src / "groups.parquet").metadata.row_group(1).column(0).data_page_offset
    data = bytearray((src / "groups.parquet").read_bytes())
    data[offset : offset + 32] = b"\xff" * 32
    (src / "groups.parquet").write_bytes(bytes(data))
    zst = zstandard.ZstdCompressor().compress(jsonl(documents(600, seed=4)))
    (src / "cut.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    gz = gzip.compress(jsonl(documents(300, seed=5)))
    (src / "cut.json.gz").write_bytes(gz[: len(gz) // 2])
    pq.write_table(pa.table({"text": [d["text"] for d in documents(50, seed=6)]}), src / "whole.parquet")
    (src / "nofooter.parquet").write_bytes((src / "whole.parquet").read_bytes()[:2000])
    (src / "whole.parquet").unlink()
    good = json.dumps(documents(1, seed=9)[0])
    lines = [good, '{"text": "cut', '{"text": ["a list"]}', '{"text": ""}', "null", "[1, 2]", good]
    (src / "lines.jsonl").write_text("\n".join(lines) + "\n")
    (src / "empty.jsonl").write_bytes(b"")
    (src / "notzstd.jsonl.zst").write_bytes(b"not zstd at all")
    sources = {
        "pile": {"reader": "pile", "paths": [f"{src}/*", f"{src}/missing.jsonl.zst"], "weight": 0.6},
        "extra": {"reader": "pile", "paths": [f"{folder}/nowhere/*.jsonl"], "weight": 0.4, "optional": True},
    }
    config = folder / "inputs.yaml"
    config.write_text(yaml.safe_dump({"work_dir": str(folder / "work"), "sources": sources}))
    done = p.cli("pipeline", "run", config)
    setup_ok(done, "pipeline run on the bad inputs")
    work = folder / "work"
    stats = json.loads((work / "stats.json").read_text())
    files = {Path(f["path"]).name: f for f in stats["files"]}
    bad = [r for f in sorted((work / "bad").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return work, stats, files, bad


def file_fate(p: Probe, name: str) -> tuple[dict, list[str]]:
    """The per-file record of `name` in the inputs run and the reasons of its bad rows."""
    _, _, files, bad = p.inputs
    require(name in files, f"{name} is not in stats.json's files")
    return files[name], [r["reason"] for r in bad if Path(r["path"]).name == name]


def fate_text(record: dict, reasons: list[str]) -> str:
    keys = ("rows", "kept", "bad_rows", "truncated")
    text = ", ".join(f"{k}={record[k]}" for k in keys)
    if record["file_error"]:
        text += f", file_error={record['file_error'][:60]!r}"
    return text + (f"; bad: {sorted({r[:40] for r in reasons})}" if reasons else "")


@case(
    "bad inputs (row 4)",
    "one cell of invalid UTF-8 in a 60-row parquet file (in a job with the other bad files)",
    "59 kept, 1 bad with its reason",
)
def a_bad_parquet_cell(p: Probe) -> str:
    record, reasons = file_fate(p, "cells.parquet")
    observed = fate_text(record, reasons)
    require(
        record["rows"] == 60 and record["kept"] == 59 and reasons == ["invalid utf-8: in `text`"], observed
    )
    return observed


@case(
    "config ranges (row 5)",
    "`pipeline run --set dedup.ngram=0`",
    "refused at load naming the key and its range",
)
def dedup_ngram_zero(p: Probe) -> str:
    work = p.root / "never-ngram"
    observed = error_line(p, p.pipeline("run", "dedup.ngram=0", f"work_dir={work}"), "dedup.ngram")
    require(not work.exists(), "the work dir was made")
    return observed


@case(
    "config ranges (row 5)",
    "`pipeline run --set dedup.rows=-1`",
    "refused at load naming the key and its range",
)
def dedup_rows_negative(p: Probe) -> str:
    return error_line(
        p, p.pipeline("run", "dedup.rows=-1", f"work_dir={p.root / 'never-rows'}"), "dedup.rows"
    )


@case(
    "full disk (row 6)",
    "`pipeline run` with its work dir on a 2 MB tmpfs; the tmpfs grown to 32 MB and the same command again",
    "one line naming the path and the free space; the rerun finishes",
)
def pipeline_run_on_a_full_disk(p: Probe) -> str:
    with tmpfs(p.folder("full-run") / "disk", "2m") as disk:
        work = disk / "work"
        observed = error_line(
            p, p.pipeline("run", f"work_dir={work}"), disk, "no space left on device", " free of "
        )
        require(not (work / "_SUCCESS.json").exists(), "a _SUCCESS.json on the full disk")
        subprocess.run(["mount", "-o", "remount,size=32m", str(disk)], check=True)
        again = p.pipeline("run", f"work_dir={work}")
        require(
            again.returncode == 0 and (work / "_SUCCESS.json").exists(),
            f"{observed}; the rerun exited {again.returncode}",
        )
    return observed + "; rerun: exit 0"


@case(
    "full disk (row 6)",
    "`pipeline pack` with its out_dir on a 1 MB tmpfs",
    "one line naming the path and the free space; no manifest",
)
def pack_on_a_full_disk(p: Probe) -> str:
    with tmpfs(p.folder("full-pack") / "disk", "1m") as disk:
        out = disk / "shards"
        done = p.pipeline("pack", f"work_dir={p.sample_work}", f"pack.out_dir={out}")
        observed = error_line(p, done, disk, "no space left on device", " free of ")
        require(not (out / "manifest.json").exists(), "a manifest on the full disk")
    return observed


@case(
    "full disk (row 7)",
    "`training train` with `checkpoint.dir` on a 256 KB tmpfs",
    "one line; no `checksums.json` or `latest` left",
)
def checkpoint_on_a_full_disk(p: Probe) -> str:
    folder = p.folder("full-ckpt")
    with tmpfs(folder / "disk", "256k") as disk:
        config = p.train_config(folder, checkpoint={"dir": str(disk / "ckpt")})
        observed = error_line(p, p.cli("training", "train", config), disk / "ckpt", "no space left on device")
        left = [str(x.relative_to(disk)) for x in (disk / "ckpt").glob("*/checksums.json")]
        require(not (disk / "ckpt" / "latest").exists() and not left, f"{observed}; left latest or {left}")
    return observed


@case(
    "read-only (row 8)", "`pipeline run` with its work dir on a read-only mount", "one line naming the path"
)
def pipeline_run_read_only(p: Probe) -> str:
    with tmpfs(p.folder("ro-run") / "ro", "64k", read_only=True) as ro:
        return error_line(p, p.pipeline("run", f"work_dir={ro / 'work'}"), ro / "work", "read-only")


@case(
    "read-only (row 8)", "`pipeline pack` with its out_dir on a read-only mount", "one line naming the path"
)
def pack_read_only(p: Probe) -> str:
    with tmpfs(p.folder("ro-pack") / "ro", "64k", read_only=True) as ro:
        done = p.pipeline("pack", f"work_dir={p.sample_work}", f"pack.out_dir={ro / 'shards'}")
        return error_line(p, done, ro / "shards", "read-only")


@case(
    "read-only (row 8)",
    "`training train` with `checkpoint.dir` on a read-only mount",
    "one line naming the path",
)
def checkpoint_read_only(p: Probe) -> str:
    folder = p.folder("ro-ckpt")
    with tmpfs(folder / "ro", "64k", read_only=True) as ro:
        config = p.train_config(folder, checkpoint={"dir": str(ro / "ckpt")})
        return error_line(p, p.cli("training", "train", config), ro / "ckpt", "read-only")


@case("read-only (row 8)", "`training export` into a read-only mount", "one line naming the path")
def export_read_only(p: Probe) -> str:
    with tmpfs(p.folder("ro-export") / "ro", "64k", read_only=True) as ro:
        return error_line(p, p.cli("training", "export", p.trained[0], ro / "hf"), ro, "read-only")


@case(
    "explain (row 9)",
    '`pipeline explain` on lines `"\\udfff"`, good, Latin-1 bytes, good',
    "each bad line reported as the job counts it; the next explained",
)
def explain_a_lone_surrogate(p: Probe) -> str:
    docs = p.folder("explain") / "x.jsonl"
    good = json.dumps({"id": "good", "text": "The harbour is the oldest part of the village. " * 4}).encode()
    docs.write_bytes(
        b"\n".join([b'{"id": "s", "text": "\\udfff"}', good, b'{"text": "caf\xe9"}', good]) + b"\n"
    )
    done = p.cli("pipeline", "explain", "--source", "refinedweb", docs)
    require(
        done.returncode == 0 and "Traceback" not in done.stderr,
        f"exit {done.returncode}: {p.short(done.stderr[-150:])}",
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    reasons = [r.get("reason") for r in results]
    observed = f"exit 0; {len(results)} results, reasons {reasons}"
    require(len(results) == 4 and reasons[0] == reasons[2] == "bad_input" and "lang" in results[1], observed)
    return observed


@case(
    "non-finite loss (row 10)",
    "`training train --set optim.lr=1e9` in a new checkpoint dir",
    "stops; says there is no checkpoint to go back to",
)
def nonfinite_before_any_save(p: Probe) -> str:
    folder = p.folder("lr-1e9")
    config = p.train_config(folder, max_nonfinite_in_row=2)
    done = p.cli("training", "train", config, "--set", "optim.lr=1e9")
    observed = error_line(p, done)
    named = re.search(r"the last good checkpoint is (\S+)", done.stderr)
    if named:  # a save before the losses went non-finite: it must be there and complete
        require((Path(named[1]) / "checksums.json").exists(), observed + "; names a checkpoint not written")
    else:
        require(f"there is no complete checkpoint in {folder / 'ckpt'}" in done.stderr, observed)
    return observed


@case(
    "non-finite loss (row 10)",
    "`--set optim.lr=1e9` resuming the 8-step run (to 12 steps)",
    "names the newest checkpoint written (step 8)",
)
def nonfinite_after_good_steps(p: Probe) -> str:
    folder = p.folder("lr-1e9-resumed")
    p.checkpoint_copy(folder)
    config = p.train_config(folder, max_nonfinite_in_row=2, schedule={"warmup_steps": 2, "total_steps": 12})
    done = p.cli("training", "train", config, "--set", "optim.lr=1e9")
    return error_line(p, done, f"the last good checkpoint is {folder / 'ckpt' / 'step_00000008'}")


def evaluate(p: Probe, model: Path, output: Path) -> subprocess.CompletedProcess[str]:
    """`evaluation run` of `model` on two cloze questions, its results in `output`."""
    return p.cli(
        "evaluation",
        "run",
        "--model",
        model,
        "--tasks",
        "stablelm2_cloze",
        "--limit",
        "2",
        "--output",
        output,
    )


def serve_refused(p: Probe, *args: object) -> subprocess.CompletedProcess[str]:
    """`python -m serving` with `args`, on a port already taken: a server that did start fails at once."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        return p.cli("serving", *args, "--port", taken.getsockname()[1], timeout=300)


@case(
    "corrupt export (row 11)",
    "`evaluation run` on an export whose `model.safetensors` is cut in half",
    "one line naming the file",
)
def truncated_export_in_evaluation(p: Probe) -> str:
    folder = p.corrupt_export("truncated")
    return error_line(p, evaluate(p, folder, folder.parent / "eval"), folder / "model.safetensors")


@case(
    "corrupt export (row 11)",
    "`python -m serving` on an empty `model.safetensors`",
    "one line naming the file; does not start",
)
def empty_export_in_serving(p: Probe) -> str:
    folder = p.corrupt_export("empty")
    return error_line(p, serve_refused(p, "--model", folder), folder / "model.safetensors")


@case(
    "corrupt export (row 11)",
    "`training import-hf` of a `model.safetensors` with a bad header",
    "one line naming the file",
)
def bad_header_export_in_import(p: Probe) -> str:
    folder = p.corrupt_export("bad-header")
    config = p.train_config(folder.parent)
    return error_line(p, p.cli("training", "import-hf", folder, config), folder / "model.safetensors")


async def trickle_with_health(url: str, clients: list) -> tuple[list, list[tuple[int, float]]]:
    """Run the trickling `clients` while asking /health every 0.2 s: their results and /health's."""
    slow = asyncio.ensure_future(asyncio.gather(*clients))
    health = await health_latencies(url, slow)
    return await slow, health


@case(
    "slow clients (row 12)",
    f"50 clients sending headers a byte a second (header_timeout_s {HEADER_TIMEOUT:g})",
    "each cut off with a 408 in time; /health answers throughout",
)
def slow_headers(p: Probe) -> str:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n"
    results, health = asyncio.run(
        trickle_with_health(p.server, [trickle(p.server, b"", request, 1.0) for _ in range(50)])
    )
    closed = [t for t, _ in results if t is not None]
    late = max(closed, default=float("inf"))
    slowest = max(s for _, s in health)
    answered = sum(a.startswith(b"HTTP/1.1 408 ") for _, a in results)
    resets = sum(a == RESET for _, a in results)  # a 408 the client's kernel dropped (see `trickle`)
    observed = (
        f"{len(closed)}/50 cut off, the last after {late:.1f} s ({answered} read the 408, {resets} reset)"
    )
    observed += f"; /health x{len(health)}, slowest {slowest:.2f} s"
    require(len(closed) == 50 and late < HEADER_TIMEOUT + SLACK, observed)
    require(answered + resets == 50, observed + "; other answers")
    require(all(status == 200 for status, _ in health) and max(s for _, s in health) < 1.0, observed)
    return observed


@case(
    "slow clients (row 12)",
    f"3 clients sending a body a byte every 2 s (body_timeout_s {BODY_TIMEOUT:g})",
    "cut off with 408 `request_timeout`",
)
def slow_bodies(p: Probe) -> str:
    body = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 1}).encode()
    clients = [trickle(p.server, completion_head(p.server, KEY, body), body, 2.0) for _ in range(3)]
    results, health = asyncio.run(trickle_with_health(p.server, clients))
    closed = [t for t, _ in results if t is not None]
    observed = f"{len(closed)}/3 cut off after {max(closed, default=0):.1f} s"
    require(len(closed) == 3 and max(closed) < BODY_TIMEOUT + SLACK, observed)
    for _, answer in results:
        if answer == RESET:
            continue
        head, _, rest = answer.partition(b"\r\n\r\n")
        require(head.startswith(b"HTTP/1.1 408 "), f"{observed}; answered {head[:40]!r}")
        require(json.loads(rest)["error"]["code"] == "request_timeout", f"{observed}; {rest[:80]!r}")
    require(all(status == 200 for status, _ in health), f"{observed}; /health failed")
    answered = sum(a != RESET for _, a in results)
    return observed + f", {answered} read a 408 request_timeout, {3 - answered} reset"


@case(
    "slow clients (row 12)",
    f"{MAX_CONNECTIONS} idle connections open, then a request",
    "503 past `max_connections`; served again once they are shed",
)
def past_max_connections(p: Probe) -> str:
    below = asyncio.run(health_beside_idle(p.server, MAX_CONNECTIONS - 1))
    at = asyncio.run(health_beside_idle(p.server, MAX_CONNECTIONS))
    after = wait_for(lambda: healthy(p.server), HEADER_TIMEOUT + SLACK, step=0.2)
    observed = f"{MAX_CONNECTIONS - 1} idle: {below}; {MAX_CONNECTIONS} idle: {at}; then 200: {after}"
    require(below == 200 and at == 503 and after, observed)
    return observed


@case(
    "context (row 13)",
    f"a prompt of the full context ({CONTEXT} tokens), `max_tokens: 0`, `echo`, `logprobs: 1`",
    "200, every token scored",
)
def full_context_is_scored(p: Probe) -> str:
    response = p.post(
        {"model": NAME, "prompt": [9906] * CONTEXT, "max_tokens": 0, "echo": True, "logprobs": 1}
    )
    require(response.status_code == 200, f"{response.status_code} {response.text[:120]}")
    scored = response.json()["choices"][0]["logprobs"]["token_logprobs"]
    require(len(scored) == CONTEXT, f"200 with {len(scored)} logprobs")
    return f"200, {len(scored)} token logprobs"


@case(
    "context (row 13)",
    f"a prompt of {CONTEXT} tokens with `max_tokens: 1`",
    "400 `context_length_exceeded`, param max_tokens",
)
def prompt_plus_max_tokens_past_the_context(p: Probe) -> str:
    response = p.post({"model": NAME, "prompt": [9906] * CONTEXT, "max_tokens": 1, "echo": True})
    return openai_error(response, 400, "context_length_exceeded", "max_tokens")


# == kill -9 and resume ===================================================================================


def same_tables(reference: Path, work: Path) -> list[str]:
    """The folders of the data job's outputs whose tables differ between two work dirs."""
    differ = []
    for folder in ("mixed", "valid", "rejects", "bad", "dups", "contaminated"):
        names = sorted(f.name for f in (reference / folder).glob("*.parquet"))
        if names != sorted(f.name for f in (work / folder).glob("*.parquet")) or not all(
            pq.read_table(work / folder / n).equals(pq.read_table(reference / folder / n)) for n in names
        ):
            differ.append(folder)
    return differ


@case(
    "kill -9 and resume",
    "`kill -9` of `pipeline run`'s process group (its own local Ray) after 3 filter tasks; the command again",
    "the rerun's tables equal an unbroken run's; no `.tmp` left",
)
def pipeline_killed_in_filter(p: Probe) -> str:
    reference = p.sample_work
    folder = p.folder("kill-filter")
    work = folder / "work"
    job = p.spawn_pipeline("run", f"work_dir={work}", log=folder / "killed.log")

    def filtered() -> int:
        return len(list((work / "stats" / "filter").glob("*.json")))

    marked = wait_for(lambda: filtered() >= 3, 180, step=0.02)
    kill_group(job)
    require(marked and not (work / "_SUCCESS.json").exists(), "not killed part-way through filtering")
    at_kill = filtered()
    again = p.pipeline("run", f"work_dir={work}")
    stopped = "; it stopped the killed job's Ray" if "[ray] stopping" in again.stdout else ""
    observed = f"killed after {at_kill}/20 filter tasks; rerun exit {again.returncode}{stopped}"
    require(again.returncode == 0, f"{observed}: {p.short(again.stderr.strip()[-150:])}")
    differ, tmp = same_tables(reference, work), list(work.rglob("*.tmp"))
    require(not differ and not tmp, f"{observed}; differ: {differ}; left {len(tmp)} .tmp")
    return observed + ", tables equal, no .tmp"


@case(
    "kill -9 and resume",
    "`kill -9` of `pipeline run` once its dedup components are done (in split/decontam); again",
    "the rerun's tables equal an unbroken run's",
)
def pipeline_killed_after_dedup(p: Probe) -> str:
    reference = p.sample_work
    folder = p.folder("kill-split")
    work, log = folder / "work", folder / "killed.log"
    job = p.spawn_pipeline("run", f"work_dir={work}", log=log)
    marked = wait_for(lambda: "[components roots]" in log.read_text(), 240, step=0.02)
    kill_group(job)
    require(marked and not (work / "_SUCCESS.json").exists(), "not killed after dedup")
    stage = [line.split("]")[0] + "]" for line in log.read_text().splitlines() if line.startswith("[")][-1]
    again = p.pipeline("run", f"work_dir={work}")
    observed = f"killed after {stage}; rerun exit {again.returncode}"
    require(again.returncode == 0, f"{observed}: {p.short(again.stderr.strip()[-150:])}")
    differ = same_tables(reference, work)
    require(not differ, f"{observed}; differ: {differ}")
    return observed + ", tables equal"


def arrow_files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*.arrow"))}


@case(
    "kill -9 and resume",
    "`kill -9` of `pipeline pack` once its validation split is being written; again",
    "the rerun's shards byte-identical to an unbroken pack's",
)
def pack_killed(p: Probe) -> str:
    reference = p.shards
    folder = p.folder("kill-pack")
    out = folder / "shards"
    job = p.spawn_pipeline(
        "pack", f"work_dir={p.sample_work}", f"pack.out_dir={out}", log=folder / "killed.log"
    )
    marked = wait_for(lambda: (out / "valid").exists(), 180, step=0.01)
    kill_group(job)
    require(marked and not (out / "manifest.json").exists(), "not killed part-way")
    left = sorted(str(x.relative_to(out)) for x in out.rglob("*"))
    again = p.pipeline("pack", f"work_dir={p.sample_work}", f"pack.out_dir={out}")
    observed = f"killed leaving {p.short(str(left), 120)}; rerun exit {again.returncode}"
    require(again.returncode == 0, f"{observed}: {p.short(again.stderr.strip()[-150:])}")
    require(arrow_files(out) == arrow_files(reference), f"{observed}; shards differ")
    return observed + f", {len(arrow_files(out))} shard files identical"


def train_killed(
    p: Probe, name: str, marker: Callable[[Path], bool], sig: int = signal.SIGKILL
) -> tuple[Path, Path, int]:
    """Start the 8-step run in a new folder, send `sig` to its group once `marker(folder)`: the folder,
    its config and the exit status."""
    folder = p.folder(name)
    config = p.train_config(folder)
    job = p.spawn("training", "train", config, log=folder / "killed.log")
    marked = wait_for(lambda: marker(folder), 240, step=0.01)
    if sig == signal.SIGKILL:
        kill_group(job)
    elif job.poll() is None:
        os.killpg(job.pid, sig)
        job.wait(timeout=300)
    require(marked, "the marker never appeared")
    return folder, config, job.returncode


def resumed_equal(p: Probe, config: Path, what: str) -> str:
    """Resume `config`: it must finish with the straight run's losses from where it resumed."""
    straight = p.trained[1]
    again = p.cli("training", "train", config)
    got = losses(again.stdout)
    observed = f"{what}; rerun exit {again.returncode}, resumed at step {min(got, default=0)}"
    require(again.returncode == 0 and 8 in got, f"{observed}: {p.short(again.stderr.strip()[-150:])}")
    require(all(got[s] == straight[s] for s in got), f"{observed}; losses differ from the straight run")
    return observed + ", losses equal the straight run's"


@case(
    "kill -9 and resume",
    "`kill -9` of `training train` mid-step (once step 3 is printed); again",
    "resumes from the newest checkpoint; losses equal a straight run's",
)
def trainer_killed_mid_step(p: Probe) -> str:
    folder, config, _ = train_killed(p, "kill-step", lambda f: "step 3/" in (f / "killed.log").read_text())
    return resumed_equal(
        p, config, f"killed at step 3, latest {(folder / 'ckpt' / 'latest').read_text().strip()}"
    )


@case(
    "kill -9 and resume",
    "`kill -9` of `training train` the moment its step-4 checkpoint appears on disk (mid-save); again",
    "resumes from a complete checkpoint; losses equal a straight run's",
)
def trainer_killed_mid_save(p: Probe) -> str:
    def saving(folder: Path) -> bool:
        return (folder / "ckpt").exists() and any(
            "step_00000004" in x.name for x in (folder / "ckpt").iterdir()
        )

    folder, config, _ = train_killed(p, "kill-save", saving)
    seen = sorted(x.name for x in (folder / "ckpt").iterdir())
    return resumed_equal(p, config, f"killed with {seen}")


@case(
    "kill -9 and resume",
    "SIGTERM to `training train` (a preemption) once step 3 is printed",
    "exit 143 after saving a checkpoint of the step it stopped at",
)
def trainer_preempted(p: Probe) -> str:
    folder, _, code = train_killed(
        p, "sigterm", lambda f: "step 3/" in (f / "killed.log").read_text(), signal.SIGTERM
    )
    latest = (
        (folder / "ckpt" / "latest").read_text().strip() if (folder / "ckpt" / "latest").exists() else None
    )
    observed = f"exit {code}, latest {latest}"
    require(code == 143 and latest and latest >= "step_00000003", observed)
    require((folder / "ckpt" / latest / "checksums.json").exists(), observed + " (incomplete)")
    return observed + " (complete)"


# == damaged checkpoints ==================================================================================


@case(
    "damaged checkpoints",
    "the newest checkpoint's `mp_rank_00_model_states.pt` cut in half; `training train` again",
    "falls back to the previous with a line; finishes with the straight run's losses",
)
def truncated_file_in_the_newest_checkpoint(p: Probe) -> str:
    folder = p.folder("truncated-ckpt")
    weights = p.checkpoint_copy(folder) / "step_00000008" / "mp_rank_00_model_states.pt"
    os.truncate(weights, weights.stat().st_size // 2)
    config = p.train_config(folder)
    return resumed_equal(p, config, "truncated")


@case(
    "damaged checkpoints",
    "`latest` naming `step_00000010`, which does not exist; `training train`",
    "a line naming it; uses step 8",
)
def latest_names_a_missing_checkpoint(p: Probe) -> str:
    folder = p.folder("latest-missing")
    (p.checkpoint_copy(folder) / "latest").write_text("step_00000010")
    done = p.cli("training", "train", p.train_config(folder))
    line = next((x for x in done.stdout.splitlines() if "does not exist" in x), "")
    observed = f"exit {done.returncode}: {p.short(line, 110)}"
    require(done.returncode == 0 and "using step_00000008 instead" in line, observed)
    return observed


@case(
    "damaged checkpoints",
    "every `checksums.json` removed (no complete checkpoint); `training train`",
    "exit 2, one line: no complete checkpoint",
)
def no_complete_checkpoint(p: Probe) -> str:
    folder = p.folder("none-complete")
    for checksums in p.checkpoint_copy(folder).glob("step_*/checksums.json"):
        checksums.unlink()
    done = p.cli("training", "train", p.train_config(folder))
    require("Traceback" not in done.stderr, "a traceback")
    require(done.returncode == 2, f"exit {done.returncode}")
    first = next((x for x in done.stderr.splitlines() if x.startswith("error: ")), "")
    require("no complete checkpoint to resume from" in first, p.short(first))
    return f"exit 2: {p.short(first, 110)}"


@case(
    "damaged checkpoints",
    "resume with `model.hidden_size` 64 -> 128",
    "refused naming the checkpoint and `old -> new`",
)
def resume_with_a_changed_model(p: Probe) -> str:
    folder = p.folder("changed-config")
    p.checkpoint_copy(folder)
    done = p.cli("training", "train", p.train_config(folder), "--set", "model.hidden_size=128")
    require("Traceback" not in done.stderr and done.returncode == 2, f"exit {done.returncode}")
    require("  model.hidden_size: 64 -> 128" in done.stderr.splitlines(), p.short(done.stderr[-150:]))
    first = next(x for x in done.stderr.splitlines() if x.startswith("error: "))
    return f"exit 2: {p.short(first, 100)} / model.hidden_size: 64 -> 128"


@case(
    "damaged checkpoints",
    "`training export CK/step_00000008 out` with that step's model states cut in half",
    "refused in one line; no export",
)
def export_of_a_truncated_checkpoint(p: Probe) -> str:
    folder = p.folder("export-truncated")
    step = p.checkpoint_copy(folder) / "step_00000008"
    os.truncate(step / "mp_rank_00_model_states.pt", 1000)
    observed = error_line(p, p.cli("training", "export", step, folder / "hf"), "step_00000008")
    require(not (folder / "hf").exists(), observed + "; an export was written")
    return observed


@case(
    "damaged checkpoints",
    "the trainer's own `trainer.json` replaced by `{`; `training train`",
    "falls back to step 6 with a line, or one error line",
)
def garbled_trainer_state(p: Probe) -> str:
    folder = p.folder("garbled-state")
    (p.checkpoint_copy(folder) / "step_00000008" / "trainer.json").write_text("{")
    done = p.cli("training", "train", p.train_config(folder))
    line = next((x for x in done.stdout.splitlines() if "step_00000008 is incomplete" in x), "")
    observed = f"exit {done.returncode}: {p.short(line or done.stderr.strip()[-120:], 120)}"
    require("Traceback" not in done.stderr and done.returncode == 0 and line, observed)
    return observed


# == truncated and bad inputs ============================================================================


@case(
    "bad inputs",
    "a `.jsonl.zst` cut half way (with the other bad files)",
    "its whole rows kept; the file named truncated",
)
def cut_zstd(p: Probe) -> str:
    record, reasons = file_fate(p, "cut.jsonl.zst")
    observed = fate_text(record, reasons)
    require(record["truncated"] and 0 < record["kept"] == record["rows"], observed)
    return observed


@case("bad inputs", "a `.json.gz` cut half way", "its whole rows kept; the file named truncated")
def cut_gzip(p: Probe) -> str:
    record, reasons = file_fate(p, "cut.json.gz")
    observed = fate_text(record, reasons)
    require(record["truncated"] and 0 < record["kept"] == record["rows"], observed)
    return observed


@case(
    "bad inputs", "a parquet file without its footer (first 2000 bytes)", "named truncated; the job goes on"
)
def parquet_without_footer(p: Probe) -> str:
    record, reasons = file_fate(p, "nofooter.parquet")
    observed = fate_text(record, reasons)
    require(record["truncated"] and record["rows"] == 0, observed)
    return observed


@case("bad inputs", "a parquet file with a null text cell", "that row set aside with its reason, 9 kept")
def parquet_null_cell(p: Probe) -> str:
    record, reasons = file_fate(p, "nulls.parquet")
    observed = fate_text(record, reasons)
    require(record["kept"] == 9 and len(reasons) == 1 and "wrong schema" in reasons[0], observed)
    return observed


@case(
    "bad inputs",
    "a parquet file of 3 row groups, group 1's page header overwritten",
    "groups 0 and 2 kept; group 1 one bad record naming it",
)
def parquet_corrupt_row_group(p: Probe) -> str:
    record, reasons = file_fate(p, "groups.parquet")
    observed = fate_text(record, reasons)
    require(
        record["kept"] == 200 and reasons and reasons[0].startswith("unreadable row group: group 1"), observed
    )
    return observed


@case(
    "bad inputs",
    "JSON lines: a cut line, a list text, an empty text, `null`, `[1, 2]` between 2 good",
    "2 kept; each bad line set aside with its reason",
)
def bad_json_lines(p: Probe) -> str:
    record, reasons = file_fate(p, "lines.jsonl")
    observed = fate_text(record, reasons)
    require(record["kept"] == 2 and len(reasons) == 5, observed)
    return observed


@case("bad inputs", "an empty `.jsonl` file", "counted with 0 rows; no error")
def empty_file(p: Probe) -> str:
    record, reasons = file_fate(p, "empty.jsonl")
    observed = fate_text(record, reasons)
    require(record["rows"] == 0 and not record["file_error"], observed)
    return observed


@case("bad inputs", "a `.jsonl.zst` that is not zstd", "the file set aside as unreadable, named")
def not_zstd(p: Probe) -> str:
    record, reasons = file_fate(p, "notzstd.jsonl.zst")
    observed = fate_text(record, reasons)
    require(record["rows"] == 0 and (record["file_error"] or reasons), observed)
    return observed


@case(
    "bad inputs",
    "a source path matching no file, and an optional source matching none",
    "listed in stats.json and the report; the job finishes",
)
def missing_and_optional_sources(p: Probe) -> str:
    work, stats, _, _ = p.inputs
    missing = [f"{m['source']}: {Path(m['path']).name}" for m in stats["missing_inputs"]]
    empty = stats.get("empty_sources", {})
    observed = f"missing_inputs {missing}; empty_sources {sorted(empty)}"
    require("pile: missing.jsonl.zst" in missing and "extra" in empty, observed)
    require("extra" in (work / "report.md").read_text(), observed + "; not in report.md")
    return observed + "; in report.md"


@case(
    "bad inputs",
    "a required source whose paths match no file",
    "one line naming the source and pattern, before Ray starts",
)
def required_source_without_files(p: Probe) -> str:
    folder = p.folder("required-missing")
    sources = {"pile": {"reader": "pile", "paths": [f"{folder}/none/*.zst"], "epochs": 1}}
    (folder / "c.yaml").write_text(yaml.safe_dump({"work_dir": str(folder / "work"), "sources": sources}))
    done = p.cli("pipeline", "run", folder / "c.yaml")
    observed = error_line(p, done, "source 'pile' has no input", f"{folder}/none/*.zst")
    require("Ray dashboard" not in done.stdout and not (folder / "work").exists(), observed + "; Ray started")
    return observed


@case("bad inputs", "`pipeline explain` on a file that does not exist", "one line naming it")
def explain_missing_file(p: Probe) -> str:
    missing = p.root / "no-such.jsonl"
    return error_line(p, p.cli("pipeline", "explain", "--source", "refinedweb", missing), missing)


@case("bad inputs", "`pipeline explain --source nosuch`", "one line naming the source")
def explain_unknown_source(p: Probe) -> str:
    docs = p.folder("explain-nosuch") / "x.jsonl"
    docs.write_text(json.dumps({"text": "The harbour is the oldest part of the village."}) + "\n")
    return error_line(p, p.cli("pipeline", "explain", "--source", "nosuch", docs), "nosuch")


# == damaged shards ======================================================================================


def shards_copy(p: Probe, name: str) -> tuple[Path, Path]:
    folder = p.folder(name)
    return folder, Path(shutil.copytree(p.shards, folder / "shards"))


def train_on(p: Probe, folder: Path, shards: Path) -> subprocess.CompletedProcess[str]:
    config = p.train_config(folder, data={"shards": str(shards), "window": 32})
    return p.cli("training", "train", config)


def before_any_step(p: Probe, done: subprocess.CompletedProcess[str], *needles: str) -> str:
    observed = error_line(p, done, *needles, code=2)
    require(not losses(done.stdout), observed + "; it trained")
    return observed


@case(
    "damaged shards",
    "one byte of `shard-00000.arrow` flipped; `training train`",
    "exit 2 before any step, naming the shard and sha256",
)
def corrupt_shard(p: Probe) -> str:
    folder, shards = shards_copy(p, "corrupt-shard")
    data = bytearray((shards / "shard-00000.arrow").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (shards / "shard-00000.arrow").write_bytes(bytes(data))
    return before_any_step(p, train_on(p, folder, shards), "shard-00000.arrow", "sha256")


@case("damaged shards", "`shard-00000.arrow` cut to 100 bytes", "exit 2 before any step, naming the shard")
def truncated_shard(p: Probe) -> str:
    folder, shards = shards_copy(p, "truncated-shard")
    path = shards / "shard-00000.arrow"
    path.write_bytes(path.read_bytes()[:100])
    return before_any_step(p, train_on(p, folder, shards), "shard-00000.arrow")


@case("damaged shards", "`manifest.json` deleted", "exit 2 before any step: no manifest.json")
def missing_manifest(p: Probe) -> str:
    folder, shards = shards_copy(p, "no-manifest")
    (shards / "manifest.json").unlink()
    return before_any_step(p, train_on(p, folder, shards), "manifest.json")


@case(
    "damaged shards",
    "the manifest's tokenizer fingerprint changed (shards of another tokenizer)",
    "exit 2 before any step: not the expected tokenizer",
)
def shards_of_another_tokenizer(p: Probe) -> str:
    folder, shards = shards_copy(p, "other-tokenizer")
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "0" * 64
    (shards / "manifest.json").write_text(json.dumps(manifest))
    return before_any_step(p, train_on(p, folder, shards), "tokenizer")


@case("damaged shards", "`data.seq_len: 2048` on shards packed at 4096", "exit 2 before any step naming both")
def shards_of_another_width(p: Probe) -> str:
    folder = p.folder("other-width")
    config = p.train_config(folder, data={"seq_len": 2048, "window": 32})
    return before_any_step(p, p.cli("training", "train", config), "4096")


@case(
    "damaged shards",
    "`pipeline inspect` on a folder whose `manifest.json` is `{not json`",
    "one line: not a valid manifest",
)
def inspect_a_garbled_manifest(p: Probe) -> str:
    _, shards = shards_copy(p, "inspect-garbled")
    (shards / "manifest.json").write_text("{not json")
    return error_line(p, p.cli("pipeline", "inspect", shards), "manifest")


@case(
    "damaged shards",
    "`training train` on shards whose `manifest.json` is `{not json`",
    "exit 2 before any step, one line: not a valid manifest",
)
def train_on_a_garbled_manifest(p: Probe) -> str:
    folder, shards = shards_copy(p, "train-garbled")
    (shards / "manifest.json").write_text("{not json")
    return before_any_step(p, train_on(p, folder, shards), "manifest")


# == malformed HTTP ======================================================================================


@case("malformed HTTP", "POST /v1/completions with the body `{`", "400 in OpenAI's error shape")
def body_not_json(p: Probe) -> str:
    return openai_error(p.raw_post(b"{"), 400)


@case("malformed HTTP", "bodies `[1, 2]` and `null`", "400 each")
def body_not_an_object(p: Probe) -> str:
    return " / ".join(openai_error(p.raw_post(raw), 400) for raw in (b"[1, 2]", b"null"))


@case(
    "malformed HTTP",
    f"a body of {MAX_BODY + 1} bytes (`max_body_bytes` {MAX_BODY})",
    "413 `request_too_large`",
)
def body_too_large(p: Probe) -> str:
    empty = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 1, "user": ""}).encode()
    body = empty[:-2] + b"x" * (MAX_BODY + 1 - len(empty)) + empty[-2:]
    return openai_error(p.raw_post(body), 413, "request_too_large")


@case("malformed HTTP", "a chunked body (no Content-Length) of 4 MiB", "413 before it is all read")
def chunked_body_too_large(p: Probe) -> str:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny", "prompt": "hi", "user": "'
        for _ in range(4):
            yield b"x" * (1 << 20)
        yield b'"}'

    return openai_error(p.raw_post(chunks()), 413, "request_too_large")


@case("malformed HTTP", "`model` naming another model (a path on the server's disk)", "404 `model_not_found`")
def unknown_model(p: Probe) -> str:
    return openai_error(
        p.post({"model": str(p.tiny_export), "prompt": "hi", "max_tokens": 1}), 404, "model_not_found"
    )


@case("malformed HTTP", "no API key, then a wrong one", "401 each; /health still open")
def wrong_api_key(p: Probe) -> str:
    body = {"model": NAME, "prompt": "hi", "max_tokens": 1}
    observed = " / ".join(openai_error(p.post(body, key=key), 401) for key in (None, "wrong"))
    require(healthy(p.server), observed + "; /health failed")
    return observed


@case("malformed HTTP", 'a prompt holding `"\\udfff"` (no UTF-8 form)', "400 naming the prompt, never 500")
def prompt_without_utf8_form(p: Probe) -> str:
    body = json.dumps({"model": NAME, "prompt": "a \udfff b", "max_tokens": 2}).encode()
    return openai_error(p.raw_post(body), 400, param="prompt")


@case(
    "malformed HTTP",
    "`n: 17` (`max_n` 16), and 300 prompts (`max_sequences` 256)",
    "400 naming the parameter",
)
def too_many_sequences(p: Probe) -> str:
    first = openai_error(p.post({"model": NAME, "prompt": "hi", "n": 17}), 400, param="n")
    second = openai_error(p.post({"model": NAME, "prompt": ["hi"] * 300, "max_tokens": 1}), 400)
    return f"{first} / {second}"


@case(
    "malformed HTTP",
    "`max_tokens: -1`, `temperature: 2.5`, `logprobs: 6`, `best_of: 2`",
    "400 naming each parameter",
)
def out_of_range_parameters(p: Probe) -> str:
    cases = [("max_tokens", -1), ("temperature", 2.5), ("logprobs", 6), ("best_of", 2)]
    return " / ".join(
        openai_error(p.post({"model": NAME, "prompt": "hi", key: value}), 400, param=key)
        for key, value in cases
    )


@case(
    "malformed HTTP",
    "`/v1/chat/completions` with `messages` a string, then a message of role `wizard`",
    "400 each",
)
def malformed_chat(p: Probe) -> str:
    bodies = [
        {"model": NAME, "messages": "hi"},
        {"model": NAME, "messages": [{"role": "wizard", "content": "x"}]},
    ]
    return " / ".join(openai_error(p.post(b, path="/v1/chat/completions"), 400) for b in bodies)


@case(
    "malformed HTTP",
    "a raw socket sending `HELLO /x\\r\\n\\r\\n` and binary garbage",
    "answered 4xx or closed; the server serves on",
)
def garbage_request_line(p: Probe) -> str:
    host, port = p.server.removeprefix("http://").split(":")
    answers = []
    for garbage in (b"HELLO /x\r\n\r\n", bytes(range(256)) * 4):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(garbage)
            with contextlib.suppress(OSError):
                answers.append(sock.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed")
    observed = f"answers {answers}"
    require(all(a == "closed" or a.startswith("HTTP/1.1 4") for a in answers), observed)
    response = p.post({"model": NAME, "prompt": "hi", "max_tokens": 1})
    require(response.status_code == 200, f"{observed}; then {response.status_code}")
    return observed + "; then 200"


@case("malformed HTTP", "`/detokenize` of id 100999 (no such token)", "400 naming `tokens`")
def detokenize_unknown_id(p: Probe) -> str:
    return openai_error(p.post({"tokens": [1, 100_999]}, path="/detokenize"), 400, param="tokens")


# == clients that leave ===================================================================================


def cancelled(url: str) -> float:
    return metric(url, "serving_sequences_finished_total", 'reason="cancelled"')


@case(
    "clients that leave",
    f"64 streaming clients asking {CONTEXT - 10} tokens, each hanging up after its first event",
    "all 64 slots freed (cancelled); /health ok; the next request served",
)
def streaming_clients_hang_up(p: Probe) -> str:
    before = cancelled(p.server)
    body = {"model": NAME, "prompt": "hi", "max_tokens": CONTEXT - 10, "stream": True}

    def leave() -> bool:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.stream("POST", f"{p.server}/v1/completions", json=body, headers=headers, timeout=120) as r:
            return next(r.iter_lines()).startswith("data: ")

    with ThreadPoolExecutor(64) as pool:
        first_events = sum(pool.map(lambda _: leave(), range(64)))
    freed = wait_for(lambda: cancelled(p.server) - before >= 64, 120, step=0.2)
    observed = f"{first_events} first events; {cancelled(p.server) - before:.0f} cancelled"
    require(first_events == 64 and freed, observed)
    response = p.post({"model": NAME, "prompt": "hi", "max_tokens": 2})
    require(healthy(p.server) and response.status_code == 200, f"{observed}; then {response.status_code}")
    return observed + "; then 200"


@case(
    "clients that leave",
    f"a client giving up (0.5 s read timeout) on a plain {CONTEXT - 10}-token request",
    "its slot freed; counted as 499",
)
def plain_client_gives_up(p: Probe) -> str:
    before = cancelled(p.server)
    gone_before = metric(p.server, "serving_requests_total", 'status="499"')
    with contextlib.suppress(httpx.ReadTimeout):
        p.post(
            {"model": NAME, "prompt": "hi", "max_tokens": CONTEXT - 10}, timeout=httpx.Timeout(60, read=0.5)
        )
    freed = wait_for(lambda: cancelled(p.server) > before, 60, step=0.2)
    counted = wait_for(
        lambda: metric(p.server, "serving_requests_total", 'status="499"') > gone_before, 60, step=0.2
    )
    observed = f"slot freed: {freed}; 499 counted: {counted}"
    require(freed and counted, observed)
    return observed


# == overrides and configs ===============================================================================


@case("overrides and configs", "`pipeline run --set foo`", "one line: expected KEY=VALUE")
def malformed_override(p: Probe) -> str:
    return error_line(p, p.cli("pipeline", "run", SAMPLE, "--set", "foo"), "expected KEY=VALUE")


@case("overrides and configs", "`pipeline run --set dedup.nosuch=1`", "one line naming the key")
def unknown_override_key(p: Probe) -> str:
    return error_line(p, p.cli("pipeline", "run", SAMPLE, "--set", "dedup.nosuch=1"), "nosuch")


@case("overrides and configs", "`pipeline pack --set pack.seq_len=abc`", "one line naming the key")
def wrong_type_override(p: Probe) -> str:
    return error_line(p, p.cli("pipeline", "pack", SAMPLE, "--set", "pack.seq_len=abc"), "pack.seq_len")


@case(
    "overrides and configs", "`training train --set batch.micro_batch=0`", "exit 2, one line naming the key"
)
def train_key_out_of_range(p: Probe) -> str:
    config = p.train_config(p.folder("micro-batch-0"))
    return error_line(
        p, p.cli("training", "train", config, "--set", "batch.micro_batch=0"), "batch.micro_batch", code=2
    )


@case(
    "overrides and configs",
    "`training train` on a config file that does not exist",
    "one line naming the path",
)
def missing_config_file(p: Probe) -> str:
    missing = p.root / "nowhere.yaml"
    return error_line(p, p.cli("training", "train", missing), missing)


@case(
    "overrides and configs",
    "`pipeline run` on a YAML file with a syntax error",
    "an error naming the file (the parser's pointer to the spot may follow); no traceback",
)
def yaml_syntax_error(p: Probe) -> str:
    config = p.folder("bad-yaml") / "c.yaml"
    config.write_text("work_dir: [unclosed\nsources: {}\n")
    return error_line(p, p.cli("pipeline", "run", config), config, "not valid YAML", first=True)


@case(
    "overrides and configs",
    "`python -m serving` with `max_batch_size: 0` in its config",
    "one line naming the key; does not start",
)
def serving_key_out_of_range(p: Probe) -> str:
    config = p.folder("serve-config") / "serve.yaml"
    config.write_text("max_batch_size: 0\n")
    return error_line(p, serve_refused(p, "--model", p.tiny_export, "--config", config), "max_batch_size")


@case("overrides and configs", "`evaluation run --tasks no_such_task`", "one line naming the task")
def unknown_eval_task(p: Probe) -> str:
    out = p.folder("eval-unknown") / "eval"
    done = p.cli("evaluation", "run", "--model", p.tiny_export, "--tasks", "no_such_task", "--output", out)
    return error_line(p, done, "no_such_task")


# == more of the 13's kinds ==============================================================================


def refused_over_other_files(
    p: Probe, out: Path, command: Callable[[Path], subprocess.CompletedProcess[str]]
) -> str:
    """Run `command` on the output folder `out`, made holding a file of the user's: it must be refused in
    one line naming `out`, the file kept."""
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    observed = error_line(p, command(out), out)
    require(tree(out) == {"notes.txt": b"mine"}, observed + f"; left {sorted(tree(out))}")
    return observed + "; kept"


@case(
    "output paths",
    "`pipeline pack` into an out_dir holding other files",
    "refused in one line; the files kept",
)
def pack_into_a_folder_of_other_files(p: Probe) -> str:
    return refused_over_other_files(
        p,
        p.folder("pack-into-other") / "shards",
        lambda out: p.pipeline("pack", f"work_dir={p.sample_work}", f"pack.out_dir={out}"),
    )


@case(
    "output paths",
    "`evaluation run --output d`, `d` holding other files",
    "refused before any work; the files kept",
)
def eval_into_a_folder_of_other_files(p: Probe) -> str:
    return refused_over_other_files(
        p, p.folder("eval-into-other") / "d", lambda out: evaluate(p, p.tiny_export, out)
    )


@case(
    "read-only", "`evaluation run --output` on a read-only mount", "one line naming the path, before any work"
)
def eval_read_only(p: Probe) -> str:
    with tmpfs(p.folder("ro-eval") / "ro", "64k", read_only=True) as ro:
        return error_line(p, evaluate(p, p.tiny_export, ro / "eval"), ro, "read-only")


@case(
    "full disk",
    "`training export` into a 64 KB tmpfs",
    "one line naming the path and free space; nothing left there",
)
def export_on_a_full_disk(p: Probe) -> str:
    with tmpfs(p.folder("full-export") / "disk", "64k") as disk:
        observed = error_line(
            p, p.cli("training", "export", p.trained[0], disk / "hf"), disk, "no space left"
        )
        require(not list(disk.iterdir()), observed + f"; left {[x.name for x in disk.iterdir()]}")
    return observed


@case(
    "corrupt export",
    "`python -m serving` on an export whose `config.json` is `{`",
    "one line naming the file; does not start",
)
def garbled_export_config(p: Probe) -> str:
    folder = Path(shutil.copytree(p.tiny_export, p.folder("export-config") / "hf"))
    (folder / "config.json").write_text("{")
    return error_line(p, serve_refused(p, "--model", folder), "config.json")


@case(
    "corrupt export",
    "`python -m serving` on an export whose `arcade100k.tiktoken` is cut mid-line",
    "one line naming the file; does not start",
)
def truncated_ranks_file_in_serving(p: Probe) -> str:
    folder = export_with_truncated_ranks(p)
    return error_line(p, serve_refused(p, "--model", folder), "arcade100k.tiktoken")


def export_with_truncated_ranks(p: Probe) -> Path:
    folder = Path(shutil.copytree(p.tiny_export, p.folder("export-ranks") / "hf"))
    ranks = folder / "arcade100k.tiktoken"
    data = ranks.read_bytes()
    ranks.write_bytes(data[: len(data) // 2 + 3])
    return folder


@case(
    "corrupt export",
    "`evaluation run` on an export whose `arcade100k.tiktoken` is cut mid-line",
    "one line naming the file",
)
def truncated_ranks_file_in_evaluation(p: Probe) -> str:
    folder = export_with_truncated_ranks(p)
    return error_line(p, evaluate(p, folder, folder.parent / "eval"), "arcade100k.tiktoken")


# -- the run --------------------------------------------------------------------------------------------


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_case(p: Probe, number: int, c: Case) -> str:
    started = time.monotonic()
    try:
        observed, verdict = c.run(p), "handled"
    except NotHandled as e:
        observed, verdict = str(e), "**NOT handled**"
    except CannotMount as e:
        observed, verdict = str(e), "skipped"
    except Exception as e:  # the probe's own failure, or a setup the case needs: shown, counted as failed
        observed, verdict = f"probe error: {type(e).__name__}: {p.short(str(e), 200)}", "**probe error**"
    seconds = time.monotonic() - started
    row = [number, c.kind, c.did, c.expected, p.short(observed, 400), verdict, f"{seconds:.0f}"]
    print("| " + " | ".join(cell(x) for x in row) + " |", flush=True)
    return verdict


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"^model name\s*: (.*)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    cpu = models[0] if models else platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help="run only the cases whose function name matches this regular expression"
    )
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    try:
        only = re.compile(args.only or "")
    except re.error as e:
        parser.error(f"--only {args.only!r}: {e}")
    if args.keep and args.keep.exists():
        parser.error(f"--keep {args.keep}: it exists; name a new folder")
    chosen = [(n, c) for n, c in enumerate(CASES, 1) if only.search(c.name)]
    started = time.monotonic()
    when = f"{datetime.datetime.now():%Y-%m-%d %H:%M}"
    print(
        f"hostile-user probe: {len(chosen)} of {len(CASES)} cases, {when}, {machine()}, commit {commit()}\n"
    )
    print("| # | kind | what was done | expected | observed | verdict | s |")
    print("|---|---|---|---|---|---|---|")
    if args.keep:
        args.keep.mkdir(parents=True)
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="probe-"))
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        probe = Probe(root, stack)
        verdicts = [run_case(probe, n, c) for n, c in chosen]
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    summary = ", ".join(f"{n} {v.strip('*')}" for v, n in counts.items())
    print(f"\n{len(verdicts)} cases: {summary}; {time.monotonic() - started:.0f} s")
    return 0 if set(verdicts) <= {"handled", "skipped"} else 1


if __name__ == "__main__":
    sys.exit(main())
