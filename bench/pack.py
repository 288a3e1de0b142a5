"""Tokenize + pack throughput, end to end on the same documents and the same CPUs:

- ours: `pipeline.pack_job` on Ray (read parquet, encode with fastokens as `tokenizer.load()` picks it,
  check 1% against tiktoken, shuffle windows, pack, write Arrow shards);
- the reference: raw `tiktoken.encode_ordinary_batch` over the same texts already in memory, and our
  engine's `encode_batch` beside it (the limit of the encode step);
- the common alternative: `datasets.map` with the exported HF fast tokenizer, then the usual
  `group_texts` packing map and `save_to_disk`.

    python -m bench.pack [--mb 120] [--cpus N] [--no-datasets]

The documents are distinct (bench/corpus.py) and each tokenizer sees them once. The job packs them into
two shuffle windows per CPU (a real run has thousands). Ray's cluster start is reported apart and
not counted; a first pack job on 50 other documents, one file per CPU, starts the Ray workers and
loads Arcade100k in each (as any long job would have) and is reported apart too. A pack job's fixed
cost is then small (tasks on those workers), so the ratio to raw tiktoken changes little with --mb.
Targets: >= 3x raw tiktoken and >= 3x the datasets.map path.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEQ_LEN = 4096


def write_corpus(docs: list[str], folder: Path, files: int) -> None:
    folder.mkdir(parents=True)
    ids = [f"bench/{i}" for i in range(len(docs))]
    for f in range(files):
        table = pa.table(
            {"id": ids[f::files], "text": docs[f::files], "source": ["bench"] * len(ids[f::files])}
        )
        pq.write_table(table, folder / f"part-{f:03d}.parquet")


def run_ours(work: Path, out: Path, cpus: int, docs: int) -> tuple[float, int]:
    from pipeline.config import DataConfig
    from pipeline.pack_job import pack_split

    window = max(1, math.ceil(docs / (2 * cpus)))
    cfg = DataConfig.model_validate(
        {
            "work_dir": str(work),
            "sources": {"bench": {"reader": "refinedweb", "paths": ["unused"], "weight": 1.0}},
            "pack": {"seq_len": SEQ_LEN, "out_dir": str(out), "encoders": cpus, "shuffle_window": window},
        }
    )
    start = time.perf_counter()
    manifest, _ = pack_split(work / "mixed", out, cfg, partial_row="drop")
    seconds = time.perf_counter() - start
    return seconds, sum(s["tokenized"]["tokens"] for s in manifest.sources.values())


def run_in_memory(encode: Callable[[list[str]], list[list[int]]], docs: list[str]) -> tuple[float, int]:
    """Seconds to encode `docs` already in memory, and the tokens a pack would hold of them."""
    start = time.perf_counter()
    ids = encode(docs)
    seconds = time.perf_counter() - start
    return seconds, sum(len(x) + 1 for x in ids)  # + one <|endoftext|> per document, as packed


def run_hf(files: list[str], out: Path, cpus: int) -> tuple[float, int]:
    import datasets
    from transformers import AutoTokenizer

    import tokenizer
    from tokenizer.hf import export_hf

    datasets.disable_caching()
    datasets.disable_progress_bars()
    hf = AutoTokenizer.from_pretrained(export_hf(tokenizer.load(), out / "tokenizer"))
    eot, width = tokenizer.EOT_ID, SEQ_LEN + 1

    def tokenize(batch: dict) -> dict:
        ids = hf(batch["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return {"input_ids": [x + [eot] for x in ids]}

    def group_texts(batch: dict) -> dict:  # the packing step of transformers' run_clm example
        flat = [t for ids in batch["input_ids"] for t in ids]
        n = len(flat) // width * width
        return {"input_ids": [flat[i : i + width] for i in range(0, n, width)]}

    start = time.perf_counter()
    ds = datasets.Dataset.from_parquet(files, cache_dir=str(out / "cache"))
    ds = ds.map(tokenize, batched=True, num_proc=cpus, remove_columns=ds.column_names)
    tokens = sum(len(x) for x in ds["input_ids"])
    ds = ds.map(group_texts, batched=True, batch_size=1000, num_proc=cpus)
    ds.save_to_disk(str(out / "packed"))
    seconds = time.perf_counter() - start
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pack", description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=120.0)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument(
        "--no-datasets", action="store_true", help="skip the datasets.map path (minutes at large --mb)"
    )
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # datasets.map runs one process per CPU instead

    import ray

    import tokenizer
    from bench import corpus
    from bench.encode import verdict

    tokenizer.limit_threads(args.cpus)  # this process's engine; each encoder actor sizes its own
    enc = tokenizer.load()
    # Empty documents are set aside by the pipeline; the last 50 documents only warm Ray up.
    (*docs,) = (d for d in corpus.documents(args.mb + 1) if d)
    docs, warm_up_docs = docs[:-50], docs[-50:]
    print(f"{len(docs):,} documents, {corpus.megabytes(docs):.1f} MB, {args.cpus} CPUs, seq_len {SEQ_LEN}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        write_corpus(docs, work / "mixed", files=4 * args.cpus)
        files = sorted(str(p) for p in (work / "mixed").glob("*.parquet"))
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        print(f"  (Ray cluster start {time.perf_counter() - start:.1f}s, not counted)")
        write_corpus(warm_up_docs, Path(tmp) / "small" / "mixed", files=args.cpus)
        warm_up, _ = run_ours(Path(tmp) / "small", Path(tmp) / "small-out", args.cpus, len(warm_up_docs))
        print(f"  (first pack job, 50 other documents, warms every Ray worker: {warm_up:.1f}s, not counted)")
        seconds, tokens = {}, {}
        raw, engine, ours, hf = (
            "raw tiktoken encode_ordinary_batch",
            f"our engine ({enc.engine} {enc.engine_version}) encode_batch",
            "ours: pipeline pack on Ray",
            "datasets.map + HF fast + group_texts",
        )
        tiktoken_batch = functools.partial(enc.encoding.encode_ordinary_batch, num_threads=args.cpus)
        seconds[raw], tokens[raw] = run_in_memory(tiktoken_batch, docs)
        seconds[engine], tokens[engine] = run_in_memory(enc.encode_batch, docs)
        seconds[ours], tokens[ours] = run_ours(work, Path(tmp) / "ours", args.cpus, len(docs))
        ray.shutdown()
        if not args.no_datasets:
            seconds[hf], tokens[hf] = run_hf(files, Path(tmp) / "hf", args.cpus)
    if len(set(tokens.values())) != 1:
        sys.exit(f"error: token counts disagree: {tokens}")
    for name, s in seconds.items():
        print(f"  {name:48s} {s:7.2f}s  {tokens[name] / s / 1e6:6.2f} M tokens/s")
    print(verdict("ours / raw tiktoken", seconds[raw] / seconds[ours], 3))
    if hf in seconds:
        print(verdict("ours / datasets.map", seconds[hf] / seconds[ours], 3))


if __name__ == "__main__":
    main()
