"""Tokenizer throughput: this project's batch encode (fastokens, as `tokenizer.load()` picks it) vs raw
tiktoken (the reference) vs the exported Hugging Face fast tokenizer (what a user would otherwise
use), same documents, same threads.

    python -m bench.encode [--threads N] [--mb 20] [--repeats 3]

Every tokenizer encodes a warm-up slice of `--mb` MB and then `--repeats` further slices, each of
documents it has not seen (bench/corpus.py repeats no document): fastokens and the HF tokenizer cache
pieces of text, so encoding the same documents again would time their caches, not the corpus.
Targets: >= 5x raw tiktoken and >= 3x the HF fast tokenizer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

Encoder = Callable[[list[str]], list[list[int]]]


def slices(docs: list[str], n: int) -> list[list[str]]:
    """`docs` cut into `n` runs of consecutive documents of about equal bytes."""
    total = sum(len(d.encode()) for d in docs)
    cuts: list[list[str]] = [[] for _ in range(n)]
    size = 0
    for doc in docs:
        cuts[min(n - 1, size * n // total)].append(doc)
        size += len(doc.encode())
    return cuts


def verdict(label: str, ratio: float, target: float) -> str:
    return f"{label} = {ratio:.2f}x (target >= {target:g}x) {'PASS' if ratio >= target else 'FAIL'}"


def timed(fn: Encoder, docs: list[str]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    ids = fn(docs)
    return time.perf_counter() - start, ids


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mb", type=float, default=20.0, help="MB per slice")
    parser.add_argument("--repeats", type=int, default=3, help="timed slices (one more warms up)")
    args = parser.parse_args()
    # The HF tokenizer's Rust thread pool is sized at import, fastokens' at its first load; give both
    # the threads that tiktoken gets.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    import tokenizer

    tokenizer.limit_threads(args.threads)

    from transformers import AutoTokenizer
    from transformers.utils import logging

    from bench import corpus
    from tokenizer.hf import export_hf

    logging.set_verbosity_error()  # documents longer than model_max_length are fine here

    docs = corpus.documents(args.mb * (args.repeats + 1))
    enc = tokenizer.load()
    with tempfile.TemporaryDirectory() as tmp:
        hf = AutoTokenizer.from_pretrained(export_hf(enc, tmp))
    runs: dict[str, Encoder] = {
        f"ours ({enc.engine} {enc.engine_version} encode_batch)": lambda d: enc.encode_batch(
            d, num_threads=args.threads
        ),
        "raw tiktoken encode_ordinary_batch": lambda d: enc.encoding.encode_ordinary_batch(
            d, num_threads=args.threads
        ),
        "HF fast tokenizer batch": lambda d: hf(d, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ],
    }
    parts = slices(docs, args.repeats + 1)
    print(
        f"{len(docs):,} distinct documents, {corpus.megabytes(docs):.1f} MB: a warm-up slice, then "
        f"{args.repeats} slices of about {args.mb:g} MB, each new to every tokenizer; {args.threads} threads"
    )
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}  # MB/s, tokens/s
    for i, part in enumerate(parts):
        outputs = {}
        for name, fn in runs.items():
            seconds, outputs[name] = timed(fn, part)
            tokens = sum(map(len, outputs[name]))
            if i:  # the first slice warms up
                rates[name].append((corpus.megabytes(part) / seconds, tokens / seconds))
        reference = outputs["raw tiktoken encode_ordinary_batch"]
        if any(ids != reference for ids in outputs.values()):
            sys.exit(f"error: the three tokenizers disagree on the ids of slice {i}")
    medians = {
        name: [statistics.median(r) for r in zip(*slice_rates, strict=True)]
        for name, slice_rates in rates.items()
    }
    for name, (mb_s, tokens_s) in medians.items():
        print(f"  {name:48s} {mb_s:7.2f} MB/s  {tokens_s / 1e6:6.2f} M tokens/s (median)")
    ours, raw, hf_name = (mb_s for mb_s, _ in medians.values())
    print(verdict("ours / raw tiktoken", ours / raw, 5))
    print(verdict("ours / HF fast     ", ours / hf_name, 3))


if __name__ == "__main__":
    main()
