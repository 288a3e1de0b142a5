"""Memory of one pack encoder over a long run: the RSS of one process running `pipeline.encode.Encode`
on one thread, as a Ray worker that runs the pack job's encode tasks does, over `--gb` of text in
which no document repeats and new words keep coming (bench/corpus.py `salted_documents`), sampled
every `--every` documents.

    python -m bench.encode_memory [--gb 1] [--every 2000] [--engine auto]

A measurement, not a test: it prints a line per sample and the RSS at the start, 250 MB, 500 MB and 1 GB.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

ROW_GROUP_CHARS = 4_000_000  # text per `Encode` call: one parquet row group of a few MB


def rss_mib() -> float:
    """This process's resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def row_groups(docs: Iterator[str]) -> Iterator[pa.Table]:
    """Tables of about `ROW_GROUP_CHARS` characters of documents, with the columns `Encode` reads: equal
    batches, so that the RSS follows the encoder and not the size of the batch in flight."""
    texts: list[str] = []
    size = 0
    for n, text in enumerate(docs):
        texts.append(text)
        size += len(text)
        if size >= ROW_GROUP_CHARS:
            ids = [f"bench/{n - len(texts) + 1 + i}" for i in range(len(texts))]
            yield pa.table({"id": ids, "text": texts, "source": ["bench"] * len(texts)})
            texts, size = [], 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.encode_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--every", type=int, default=2000, help="documents between samples")
    parser.add_argument("--engine", default="auto", choices=("auto", "tiktoken", "fastokens"))
    args = parser.parse_args()

    import tokenizer

    tokenizer.limit_threads(1)  # one actor, one CPU

    from bench import corpus
    from pipeline.encode import Encode

    before = rss_mib()
    encoder = Encode(1, 1, [], 0.0, 0.5, engine=args.engine, verify_rate=0.01)
    print(f"{encoder.enc.engine} {encoder.enc.engine_version}, one thread, exactness check at 1%")
    print(f"RSS before loading {before:.0f} MiB; the curve (text encoded, documents, RSS):")
    marks = {0.0: (0.0, rss_mib())}  # share of --gb -> (MB encoded, RSS MiB) at the first sample past it
    print(f"  {0:8.0f} MB {0:9,d} docs {marks[0.0][1]:7.0f} MiB")
    target, size, docs, tokens, seconds, next_sample = args.gb * 1e9, 0, 0, 0, 0.0, args.every
    for table in row_groups(corpus.salted_documents()):
        start = time.perf_counter()
        encoded = encoder.encode(table)
        seconds += time.perf_counter() - start
        tokens += len(pc.list_flatten(encoded.column("tokens")))
        size += sum(len(t.encode()) for t in table.column("text").to_pylist())
        docs += table.num_rows
        if docs >= next_sample or size >= target:
            next_sample += args.every
            rss = rss_mib()
            print(f"  {size / 1e6:8.0f} MB {docs:9,d} docs {rss:7.0f} MiB", flush=True)
            for share in (0.25, 0.5, 1.0):
                if size >= share * target:
                    marks.setdefault(share, (size / 1e6, rss))
        if size >= target:
            break
    print("RSS at " + ", ".join(f"{mb:.0f} MB: {rss:.0f} MiB" for mb, rss in marks.values()))
    print(
        f"encoding alone: {size / 1e6 / seconds:.1f} MB/s, {tokens / seconds / 1e6:.2f} M tokens/s "
        f"on one thread ({seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
