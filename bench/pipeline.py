"""The whole data job at scale: `pipeline run` + `pipeline pack` on local Ray, against datatrove.

    python -m bench.pipeline [--gb 0.5] [--cpus 2] [--object-store-gb 2.5] [--no-datatrove] [--keep DIR]

The corpus: real text (bench/corpus.py: the sample's documents, then /usr/share/doc, licences and the
installed Python sources, each once; past that, the same files again with every line salted by its
document) written in the five sources' native formats (RefinedWeb and CulturaX parquet, RedPajama
jsonl, the Pile jsonl.zst, StarCoderData parquet with the Python files), plus planted duplicates:
EXACT_RATE of the documents get an exact copy and NEAR_RATE a near copy with a share of its words
substituted, deleted or given a word after them (EDIT_RATES), each placed in a random source and
file (planted.json). Recall is over the planted pairs whose two documents both passed the filters,
and the target counts the near copies of 5-gram Jaccard similarity >= NEAR_JACCARD; precision counts
a dropped document as right when it is a planted copy, or when its Jaccard similarity with another
document of its component is at least NATURAL_JACCARD (real text has duplicates of its own). The
report also gives the config's `dedup.min_similarity` and how many LSH band edges it turned down.

Ours runs on a Ray head this script starts (`--cpus` CPUs, an object store of `--object-store-gb`).
Per stage it reports the wall time, the CPU seconds of the head's processes and the driver, docs/s
and MB/s per core of the stage's input (per CPU second: it holds on a shared machine), the peak RSS
of the largest Ray worker and of the driver (sampled every SAMPLE_S), and the bytes Ray spilled.
datatrove 0.10.1 then runs its equivalent on the same files (bench/datatrove_job.py, in
bench/.venv-datatrove with the readers' and the language filter's dependencies added): readers ->
LanguageFilter (lid.176 from the model file our pipeline uses, as nothing is downloaded) -> Gopher
repetition -> Gopher quality -> C4 -> writer (StarCoder's files: reader -> writer), then its four
MinHash stages (signatures, buckets, clusters, filter) with our 5-grams and 20 bands x 13 rows, on a
LocalPipelineExecutor with as many workers as Ray has CPUs, its CPU seconds sampled the same way.
Targets: ours >= 5x datatrove's docs/s per core; near-duplicate recall >= 0.95 and precision >= 0.99.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
import zstandard

from bench import corpus
from bench.filters import baseline_python

ROOT = Path(__file__).resolve().parents[1]
# datatrove's side of the comparison, run in the datatrove environment.
DATATROVE_JOB = Path(__file__).with_name("datatrove_job.py")
PYTHON = sys.executable
EXACT_RATE = 0.03
NEAR_RATE = 0.05
EDIT_RATES = (0.005, 0.01, 0.02)  # share of a near copy's words edited
NATURAL_JACCARD = 0.7
# The near copies the recall target counts: 20 bands x 13 rows find a pair of Jaccard similarity s with
# probability 1 - (1 - s^13)^20, 0.92 at 0.85 and 0.5 at 0.77; pairs below are reported apart.
NEAR_JACCARD = 0.85
FILE_MB = 64  # text per input file
SAMPLE_S = 0.5
# What datatrove needs beyond bench.filters' pins to read the five formats and run its language filter:
# the versions of this project's own environment.
DATATROVE_EXTRAS = [
    "orjson==3.13.0",
    "pyarrow==25.0.0",
    "zstandard==0.25.0",
    "fasttext-numpy2-wheel==0.9.2",
    "fasteners==0.20",
    "tokenizers==0.23.3",
    "xxhash==3.5.0",  # datatrove 0.10.1 hashes str, which xxhash 4 refuses
]
SOURCES = ("refinedweb", "redpajama", "pile", "culturax")  # prose; code goes to starcoder
CODE_LINE = re.compile(r"^(def|class|import|from \S+ import) ", re.M)


@dataclass
class Writer:
    """One source's files in its native format: rows are buffered to FILE_MB of text, then written."""

    source: str
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    files: int = 0

    def rel(self) -> str:
        n = self.files
        return {
            "refinedweb": f"data/train-{n:05d}.parquet",
            "redpajama": f"c4/c4-train.{n:05d}-of-01024.jsonl",
            "pile": f"train/{n:02d}.jsonl.zst",
            "starcoder": f"python/train-{n:05d}.parquet",
            "culturax": f"en/en_part_{n:05d}.parquet",
        }[self.source]

    def add(self, text: str, serial: int) -> str:
        """Buffer a document; returns the id the pipeline will give it."""
        rel = self.rel()
        index = len(self.rows)
        self.rows.append(self.row(text, serial))
        self.size += len(text.encode())
        if self.size >= FILE_MB * 1e6:
            self.flush()
        if self.source == "starcoder":
            return f"starcoder/{serial}"
        return f"{self.source}/{'/'.join(rel.split('/')[-2:])}#{index}"

    def row(self, text: str, serial: int) -> dict[str, Any]:
        url = f"https://bench.example/{serial}"
        if self.source == "refinedweb":
            return {"content": text, "url": url, "timestamp": "2023-01-01T00:00:00Z", "dump": "bench"}
        if self.source == "redpajama":
            return {"text": text, "meta": {"source": "c4", "url": url}, "red_pajama_subset": "c4"}
        if self.source == "pile":
            return {"text": text, "meta": {"pile_set_name": "Pile-CC"}}
        if self.source == "starcoder":
            return {
                "content": text,
                "max_stars_repo_name": "bench",
                "max_stars_repo_path": url,
                "id": str(serial),
            }
        return {"text": text, "url": url, "timestamp": "2023-01-01", "source": "mC4"}

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.folder / self.source / self.rel()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(self.rows), path, compression="zstd")
        else:
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows).encode()
            path.write_bytes(
                zstandard.ZstdCompressor(level=3).compress(lines) if path.suffix == ".zst" else lines
            )
        self.rows, self.size, self.files = [], 0, self.files + 1


def real_texts() -> itertools.chain[str]:
    """Distinct real documents, then salted passes over the same files without end."""
    return itertools.chain(corpus.all_documents(), corpus.salted_documents())


def near_copy(text: str, rate: float, rng: random.Random) -> str:
    """`text` with about `rate` of its words substituted, deleted or given a word inserted after them,
    line breaks kept (the line-based filters see the same layout)."""
    words = text.split()
    vocab = words[:: max(1, len(words) // 200)] or ["the"]
    out_lines = []
    for line in text.split("\n"):
        out = []
        for word in line.split(" "):
            if word and rng.random() < rate:
                edit = rng.randrange(3)
                if edit == 0:
                    out.append(rng.choice(vocab))
                elif edit == 2:
                    out += [word, rng.choice(vocab)]
            else:
                out.append(word)
        out_lines.append(" ".join(out))
    return "\n".join(out_lines)


def build_corpus(folder: Path, gb: float, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Writes the corpus; returns the planted pairs (copy id, original id, kind, edit rate) and totals."""
    rng = random.Random(seed)
    writers = {s: Writer(s, folder) for s in (*SOURCES, "starcoder")}
    planted: list[dict[str, Any]] = []
    target, size, docs = gb * 1e9, 0, 0
    for serial, text in enumerate(real_texts()):
        if size >= target:
            break
        if len(text) > 500_000 or len(text.split()) < 20:
            continue  # huge files (set aside as bad input) and stubs say nothing about throughput
        source = "starcoder" if CODE_LINE.search(text) else rng.choice(SOURCES)
        original = writers[source].add(text, serial * 4)
        size, docs = size + len(text.encode()), docs + 1
        for kind, rate, k in (("exact", 0.0, 1), ("near", rng.choice(EDIT_RATES), 2)):
            if rng.random() < (EXACT_RATE if kind == "exact" else NEAR_RATE):
                copy = text if kind == "exact" else near_copy(text, rate, rng)
                where = "starcoder" if source == "starcoder" else rng.choice(SOURCES)
                copy_id = writers[where].add(copy, serial * 4 + k)
                planted.append({"copy": copy_id, "original": original, "kind": kind, "edit": rate})
                size, docs = size + len(copy.encode()), docs + 1
    for w in writers.values():
        w.flush()
    return planted, {"docs": docs, "mb": size / 1e6}


def write_config(folder: Path) -> Path:
    sample = yaml.safe_load((ROOT / "configs" / "data" / "sample.yaml").read_text())
    globs = {
        "refinedweb": ["refinedweb/data/*.parquet"],
        "redpajama": ["redpajama/c4/*.jsonl"],
        "pile": ["pile/train/*.jsonl.zst"],
        "starcoder": ["starcoder/*/*.parquet"],
        "culturax": ["culturax/*/*.parquet"],
    }
    for name, src in sample["sources"].items():
        src["paths"] = [str(folder / "corpus" / g) for g in globs[name]]
        src.pop("exclude", None)
    # CulturaX's files here hold English (the machine has little real text in its languages).
    sample["sources"]["culturax"]["filters"]["langid"]["languages"].append("en")
    sample["work_dir"] = str(folder / "work")
    sample["decontam"]["documents"] = str(folder / "eval_documents.jsonl")
    sample["pack"]["out_dir"] = str(folder / "shards")
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(sample, sort_keys=False))
    return path


def is_ray_worker(cmdline: list[str]) -> bool:
    """A process that runs Ray tasks: Ray titles it `ray::IDLE` or `ray::<task>`; its agents are not."""
    title = cmdline[0] if cmdline else ""
    return title.startswith("ray::") and not title.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))


class Sampler:
    """Sampled in a thread every SAMPLE_S, and handed out per stage by `take`: the peak RSS of the largest
    Ray worker and of the driver, and the CPU seconds of every process of the Ray head and the driver
    (per-core rates from CPU time hold on a machine that other jobs share)."""

    def __init__(self, head: psutil.Process, is_worker: Callable[[list[str]], bool] = lambda cmdline: True):
        # A worker is a process under `head` whose command line `is_worker` accepts.
        self.head, self.driver, self.is_worker = head, None, is_worker
        self.worker_peak = self.driver_peak = 0
        self.cpu_s = 0.0
        self.seen: dict[int, float] = {}  # pid -> CPU seconds at the last sample
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            workers = driver = 0
            cpu = 0.0
            procs = [self.head, *self.head.children(recursive=True)]
            for proc in procs + ([self.driver] if self.driver else []):
                try:
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    if proc is self.driver:
                        driver = rss
                    elif proc is not self.head and self.is_worker(proc.cmdline()):
                        workers = max(workers, rss)
                except psutil.Error:
                    continue
                total = times.user + times.system
                cpu += total - self.seen.get(proc.pid, 0.0)
                self.seen[proc.pid] = total
            with self.lock:
                self.worker_peak = max(self.worker_peak, workers)
                self.driver_peak = max(self.driver_peak, driver)
                self.cpu_s += cpu

    def take(self) -> dict[str, float]:
        with self.lock:
            taken = {"worker": self.worker_peak, "driver": self.driver_peak, "cpu": self.cpu_s}
            self.worker_peak = self.driver_peak = 0
            self.cpu_s = 0.0
        return taken


STAGE_LINE = re.compile(r"^\[(?P<name>[^\]]+)\] .*?, (?P<s>[\d.]+)s$")
STAGE_NAMES = {"filter": "read+filter"}
Stats = dict[str, dict[str, float]]


def run_stages(cmd: list[str], env: dict[str, str], sampler: Sampler, log: Path, stages: Stats) -> None:
    """Runs a pipeline command; adds to `stages`, per stage (from its progress lines, or `cmd[3]` for
    a command without them): wall seconds, CPU seconds and RSS peaks."""
    last = time.monotonic()
    sampler.take()

    def close(name: str) -> None:
        nonlocal last
        taken, now = sampler.take(), time.monotonic()
        stage = stages.setdefault(name, {"s": 0.0, "cpu": 0.0, "worker": 0, "driver": 0})
        stage["s"] += now - last  # the driver's work between stages counts to the next stage
        stage["cpu"] += taken["cpu"]
        stage["worker"] = max(stage["worker"], taken["worker"])
        stage["driver"] = max(stage["driver"], taken["driver"])
        last = now

    with open(log, "a") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        sampler.driver = psutil.Process(proc.pid)
        for line in proc.stdout:
            out.write(line)
            match = STAGE_LINE.match(line.strip())
            if match and cmd[3] == "run":
                name = match["name"]
                close("components" if name.startswith("components") else STAGE_NAMES.get(name, name))
        if proc.wait():
            sys.exit(f"error: {' '.join(cmd)} failed, see {log}")
        time.sleep(2 * SAMPLE_S)  # the last samples of the command
        close(cmd[3] if cmd[3] == "pack" else "run (rest)")


def spilled_mib(address: str) -> float:
    out = subprocess.run(
        [str(Path(PYTHON).parent / "ray"), "memory", "--stats-only", "--address", address],
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Spilled ([\d.]+) MiB", out)
    return float(match[1]) if match else 0.0


def text_totals(files: list[Path]) -> tuple[int, float]:
    """Documents and MB of text in parquet files with a `text` column."""
    docs, size = 0, 0
    for f in files:
        text = pq.read_table(f, columns=["text"]).column("text")
        docs += len(text)
        size += pc.sum(pc.binary_length(text.cast(pa.large_binary()))).as_py() or 0
    return docs, size / 1e6


def start_head(folder: Path, cpus: int, store_gb: float) -> tuple[subprocess.Popen, str]:
    port = 46000 + os.getpid() % 1000
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [
            str(Path(PYTHON).parent / "ray"),
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={cpus}",
            f"--object-store-memory={int(store_gb * 1e9)}",
            f"--temp-dir={folder / 'ray'}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--block",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    for _ in range(120):
        time.sleep(1)
        if (
            subprocess.run(
                [str(Path(PYTHON).parent / "ray"), "status", "--address", address],
                capture_output=True,
                env=env,
            ).returncode
            == 0
        ):
            return head, address
    head.terminate()
    sys.exit("error: the Ray head did not start in 120 s")


def run_ours(folder: Path, cpus: int, store_gb: float) -> tuple[Stats, float]:
    config = write_config(folder)
    head, address = start_head(folder, cpus, store_gb)
    # Pack's MLflow run goes to the benchmark's folder, not to the project's store.
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": tracking}
    sampler = Sampler(psutil.Process(head.pid), is_ray_worker)
    stages: Stats = {}
    try:
        # Written before the job, as `make data` does; not part of the measured stages.
        subprocess.run(
            [PYTHON, "-m", "evaluation", "documents", "--data-config", str(config)],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        for command in ("run", "pack"):
            run_stages(
                [PYTHON, "-m", "pipeline", command, str(config)], env, sampler, folder / "ours.log", stages
            )
        spilled = spilled_mib(address)
    finally:
        sampler.stop.set()
        head.terminate()  # --block: the head stops the Ray processes it started
        head.wait(60)
    return stages, spilled


def stage_inputs(work: Path, totals: dict[str, float]) -> dict[str, tuple[int, float]]:
    """Documents and MB of text each stage reads."""
    filtered = text_totals(sorted((work / "filtered").glob("*.parquet")))
    deduped = text_totals(sorted((work / "train").glob("*.parquet")))
    mixed = text_totals(sorted((work / "mixed").glob("*.parquet")))
    inputs = {
        "read+filter": (int(totals["docs"]), totals["mb"]),
        "decontam": deduped,
        "mix": deduped,
        "pack": mixed,
    }
    for name in ("minhash", "buckets", "components", "split", "run (rest)"):
        inputs[name] = filtered
    return inputs


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the word 5-gram sets of two normalized texts, as dedup's MinHash estimates it."""
    from pipeline.normalize import normalize_for_dedup

    def shingles(text: str) -> set[str]:
        words = normalize_for_dedup(text).split()
        return {" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def dedup_quality(folder: Path, planted: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall of the planted pairs that both reached dedup, and precision of what dedup dropped."""
    from pipeline.config import DataConfig
    from pipeline.plan import make_plan

    work = folder / "work"
    cfg = DataConfig.model_validate(yaml.safe_load((folder / "bench.yaml").read_text()))
    texts: dict[int, tuple[str, str]] = {}  # node -> (id, text), of the documents dedup saw
    for part in make_plan(cfg).partitions:
        path = work / "filtered" / f"{part.pid}.parquet"
        if path.exists():
            table = pq.read_table(path, columns=["id", "text"])
            for row, (i, t) in enumerate(
                zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
            ):
                texts[(part.index << 32) | row] = (i, t)
    by_id = dict(texts.values())
    dropped = pq.read_table(work / "dedup" / "dropped").to_pylist()
    dropped_ids = {texts[r["node"]][0] for r in dropped}
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    planted_ids = set()
    for p in planted:
        if p["copy"] in by_id and p["original"] in by_id:
            found = p["copy"] in dropped_ids or p["original"] in dropped_ids
            planted_ids |= {p["copy"], p["original"]}
            if p["kind"] == "exact":
                keys = ["exact"]
            else:
                similar = jaccard(by_id[p["copy"]], by_id[p["original"]]) >= NEAR_JACCARD
                keys = [
                    f"near, {p['edit']:.1%} of words edited",
                    f"near, Jaccard {'>=' if similar else '<'} {NEAR_JACCARD}",
                ]
            for key in keys:
                recall[key][0] += found
                recall[key][1] += 1
    # A document whose root is not like it may still be a near copy of another member of its component.
    members = defaultdict(list)
    for r in dropped:
        members[r["root"]] += [r["root"], r["node"]]
    natural, false = 0, []
    for r in dropped:
        doc_id, text = texts[r["node"]]
        if doc_id in planted_ids:
            continue
        similar = max(jaccard(text, texts[m][1]) for m in set(members[r["root"]]) - {r["node"]})
        if similar >= NATURAL_JACCARD:
            natural += 1
        else:
            false.append(similar)
    # The buckets stage's last progress line has the totals.
    dissimilar = re.findall(r"^\[buckets\] .*dissimilar=([\d,]+)", (folder / "ours.log").read_text(), re.M)
    return {
        "recall": dict(recall),
        "dropped": len(dropped),
        "natural": natural,
        "false": sorted(false),
        "min_similarity": cfg.dedup.min_similarity,
        "dissimilar": int(dissimilar[-1].replace(",", "")) if dissimilar else 0,
    }


def datatrove_python() -> Path:
    python = baseline_python()
    probe = "import orjson, pyarrow, zstandard, fasttext, fasteners, xxhash, tokenizers"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode:
        print(f"adding {' '.join(DATATROVE_EXTRAS)} to {python.parents[1]} (first run only)", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *DATATROVE_EXTRAS], check=True)
    return python


def run_datatrove(folder: Path, cpus: int) -> tuple[Stats, dict[str, int]]:
    """datatrove's job on the same files: per stage wall and CPU seconds (its process tree, sampled like
    ours), and the documents kept after its filters and after its dedup."""
    from importlib import resources

    from pipeline.langid import MODEL_FILE, MODEL_PACKAGE

    model = resources.files(MODEL_PACKAGE) / MODEL_FILE
    args = [str(folder / "corpus"), str(folder / "datatrove"), str(cpus), str(model)]
    stages: Stats = {}
    with open(folder / "datatrove.log", "w") as log:
        proc = subprocess.Popen(
            # -P: the folder of the script (bench/, which has a pipeline.py) is not put on sys.path.
            [str(datatrove_python()), "-P", str(DATATROVE_JOB), *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        sampler = Sampler(psutil.Process(proc.pid))
        sampler.take()
        for line in proc.stdout:
            match = STAGE_LINE.match(line.strip())
            if match:
                taken = sampler.take()
                stages[match["name"]] = {"s": float(match["s"]), **taken}
            elif line.startswith("{"):
                kept = json.loads(line)
        sampler.stop.set()
        if proc.wait():
            sys.exit(f"error: datatrove's job failed, see {folder / 'datatrove.log'}")
    return stages, kept


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=0.5)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--object-store-gb", type=float, default=2.5)
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--keep", type=Path, help="build and keep everything in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.keep.parent if args.keep else None) as tmp:
        folder = args.keep or Path(tmp)
        start = time.monotonic()
        planted, totals = build_corpus(folder / "corpus", args.gb)
        (folder / "planted.json").write_text(json.dumps(planted))
        print(
            f"corpus: {totals['docs']:,} documents, {totals['mb']:,.0f} MB of text, {len(planted):,} planted "
            f"copies ({time.monotonic() - start:.0f} s to build); {args.cpus} CPUs; load {os.getloadavg()}"
        )
        stages, spilled = run_ours(folder, args.cpus, args.object_store_gb)
        report_ours(stages, spilled, stage_inputs(folder / "work", totals), args)
        report_dedup(dedup_quality(folder, planted))
        run_cpu = sum(s["cpu"] for name, s in stages.items() if name != "pack")
        ours_rate = totals["docs"] / run_cpu
        if args.no_datatrove:
            return
        theirs, kept = run_datatrove(folder, args.cpus)
        theirs_rate = totals["docs"] / sum(s["cpu"] for s in theirs.values())
        print(f"\ndatatrove 0.10.1 (LocalPipelineExecutor, {args.cpus} workers), load {os.getloadavg()}:")
        for name, s in theirs.items():
            worker = s["worker"] / 2**20
            print(
                f"  {name:22s} {s['s']:7.1f} s wall {s['cpu']:7.1f} CPU s, largest worker {worker:,.0f} MiB"
            )
        print(
            f"  whole job: {theirs_rate:,.1f} docs/s per core; kept after filters "
            f"{kept['filtered']:,}, after dedup {kept['deduped']:,}"
        )
        ratio = ours_rate / theirs_rate
        print(
            f"\nspeed ratio (ours / datatrove, docs/s per core of `pipeline run`): {ratio:.1f}x (target 5x)"
        )


def report_ours(stages: Stats, spilled: float, inputs: dict[str, tuple[int, float]], args: Any) -> None:
    print(
        f"\nours ({args.cpus} CPUs, object store {args.object_store_gb} GB; spilled {spilled:,.0f} MiB), "
        "load "
        f"{os.getloadavg()}; per core = per CPU second of the Ray processes and the driver:"
    )
    print(
        f"  {'stage':12s} {'wall s':>7s} {'CPU s':>7s} {'docs/s/core':>11s} {'MB/s/core':>9s} "
        f"{'worker RSS':>10s} {'driver RSS':>10s}"
    )
    for name, s in stages.items():
        docs, mb = inputs.get(name, inputs["read+filter"])
        cpu = max(s["cpu"], SAMPLE_S)  # a stage shorter than a sample has no CPU time measured
        print(
            f"  {name:12s} {s['s']:7.1f} {s['cpu']:7.1f} {docs / cpu:11,.0f} {mb / cpu:9.2f} "
            f"{s['worker'] / 2**20:6,.0f} MiB {s['driver'] / 2**20:6,.0f} MiB"
        )
    run = [s for name, s in stages.items() if name != "pack"]
    docs, mb = inputs["read+filter"]
    run_cpu, pack_cpu = sum(s["cpu"] for s in run), stages["pack"]["cpu"]
    peak = max(s["worker"] for s in stages.values())
    print(
        f"  whole `pipeline run`: {sum(s['s'] for s in run):.0f} s wall, {run_cpu:.0f} CPU s: "
        f"{docs / run_cpu:,.1f} docs/s and {mb / run_cpu:.3f} MB/s per core "
        f"({docs / (run_cpu + pack_cpu):,.1f} docs/s with pack); peak worker RSS {peak / 2**20:,.0f} MiB"
    )


def report_dedup(quality: dict[str, Any]) -> None:
    print("\ndedup against the planted copies (pairs whose two documents both passed the filters):")
    print(
        f"  LSH candidates verified at min_similarity {quality['min_similarity']}: "
        f"{quality['dissimilar']:,} band edges turned down"
    )
    for key, (hit, n) in sorted(quality["recall"].items()):
        print(f"  recall {key}: {hit / max(n, 1):.4f} ({hit:,} of {n:,})")
    hit, n = quality["recall"].get(f"near, Jaccard >= {NEAR_JACCARD}", (0, 0))
    print(f"  near-duplicate recall (Jaccard >= {NEAR_JACCARD}) {hit / max(n, 1):.4f} (target >= 0.95)")
    d, false = quality["dropped"], quality["false"]
    best = f" (their best Jaccard: {', '.join(f'{j:.2f}' for j in false)})" if false else ""
    print(
        f"  dropped {d:,}: planted {d - quality['natural'] - len(false):,}, natural duplicates "
        f"(5-gram Jaccard >= {NATURAL_JACCARD} with a document of their component) {quality['natural']:,}, "
        f"neither {len(false):,}{best}: "
        f"precision {(d - len(false)) / max(d, 1):.4f} (target >= 0.99)"
    )


if __name__ == "__main__":
    main()
