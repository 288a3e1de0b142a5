"""Tokenizer throughput: this project's batch encode vs raw tiktoken (the limit) vs the exported
Hugging Face fast tokenizer (what a user would otherwise use), same documents, same threads.

    python -m bench.encode [--threads N] [--mb 20] [--repeats 3]

Targets: >= 0.95x raw tiktoken and >= 3x the HF fast tokenizer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The HF tokenizer's Rust thread pool is sized at import; give it the same threads as tiktoken.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    from transformers import AutoTokenizer
    from transformers.utils import logging

    from bench import corpus

    logging.set_verbosity_error()  # documents longer than model_max_length are fine here

    import tokenizer
    from tokenizer.hf import export_hf

    docs = corpus.documents(args.mb)
    mb = corpus.megabytes(docs)
    enc = tokenizer.load()
    with tempfile.TemporaryDirectory() as tmp:
        hf = AutoTokenizer.from_pretrained(export_hf(enc, tmp))
    print(f"{len(docs):,} documents, {mb:.1f} MB, {args.threads} threads, median of {args.repeats}")

    runs = {
        "ours (Arcade100k.encode_batch)": lambda: enc.encode_batch(docs, num_threads=args.threads),
        "raw tiktoken encode_ordinary_batch": lambda: enc.encoding.encode_ordinary_batch(
            docs, num_threads=args.threads
        ),
        "HF fast tokenizer batch": lambda: hf(docs, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ],
    }
    seconds, outputs = {}, {}
    for name, fn in runs.items():
        seconds[name], outputs[name] = median_time(fn, args.repeats)
    ours, raw, hf_name = runs
    if not outputs[ours] == outputs[raw] == outputs[hf_name]:
        sys.exit("error: the three tokenizers disagree on the ids of this corpus")
    tokens = sum(len(ids) for ids in outputs[ours])
    for name in runs:
        print(f"  {name:40s} {mb / seconds[name]:7.2f} MB/s  {tokens / seconds[name] / 1e6:6.2f} M tokens/s")
    vs_raw = seconds[raw] / seconds[ours]
    vs_hf = seconds[hf_name] / seconds[ours]
    print(f"ours / raw tiktoken = {vs_raw:.2f}x (target >= 0.95x) {'PASS' if vs_raw >= 0.95 else 'FAIL'}")
    print(f"ours / HF fast      = {vs_hf:.2f}x (target >= 3x)    {'PASS' if vs_hf >= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
