"""datatrove's equivalent of our data job, for `python -m bench.pipeline` (which runs this file in the
datatrove environment, bench/.venv-datatrove: it imports nothing of this repository).

    python -P bench/datatrove_job.py CORPUS WORK WORKERS LID_MODEL

Prints a `[<stage>] done, <s>s` line per stage, then one JSON line: the seconds per stage and the
documents kept after the filters and after dedup.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import (
    C4QualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.lid import FT176LID
from fasttext.FastText import _FastText


class LocalFT176(FT176LID):  # the same lid.176 model, from the file our pipeline ships with
    def __init__(self, languages: list[str], path: str):
        super().__init__(languages)
        self.path = path

    @property
    def model(self):
        if self._model is None:
            self._model = _FastText(self.path)
        return self._model


def prose(corpus: Path, work: Path, model: str) -> list[Any]:
    lang = LanguageFilter(languages=["en", "de", "es", "fr", "it", "nl", "pt"], language_threshold=0.65)
    lang.model = LocalFT176(lang.model.languages, model)
    return [
        ParquetReader(str(corpus / "refinedweb"), glob_pattern="data/*.parquet", text_key="content"),
        JsonlReader(str(corpus / "redpajama"), glob_pattern="c4/*.jsonl"),
        JsonlReader(str(corpus / "pile"), glob_pattern="train/*.jsonl.zst", compression="zstd"),
        ParquetReader(str(corpus / "culturax"), glob_pattern="*/*.parquet"),
        lang,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        JsonlWriter(str(work / "filtered"), output_filename="prose_${rank}.jsonl", compression=None),
    ]


def code(corpus: Path, work: Path) -> list[Any]:
    return [
        ParquetReader(str(corpus / "starcoder"), glob_pattern="*/*.parquet", text_key="content"),
        JsonlWriter(str(work / "filtered"), output_filename="code_${rank}.jsonl", compression=None),
    ]


def filtered(work: Path) -> JsonlReader:
    return JsonlReader(str(work / "filtered"), compression=None)


def documents(work: Path, folder: str) -> int:
    return sum(1 for f in (work / folder).glob("*.jsonl") for _ in open(f))


def main() -> None:  # the executor's pool re-imports this file in each worker: nothing runs at import
    corpus, work, workers, model = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    files = len(list(corpus.glob("*/*/*.*")))
    mh = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=13, hash_config=HashConfig(precision=64))
    stages = [
        ("read+filter (prose)", prose(corpus, work, model), files),
        ("read (code)", code(corpus, work), workers),
        ("minhash signatures", [filtered(work), MinhashDedupSignature(str(work / "sigs"), config=mh)], files),
        (
            "minhash buckets",
            [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)],
            mh.num_buckets,
        ),
        ("minhash cluster", [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh)], 1),
        (
            "minhash filter",
            [
                filtered(work),
                MinhashDedupFilter(str(work / "remove")),
                JsonlWriter(str(work / "deduped"), compression=None),
            ],
            files,
        ),
    ]
    seconds = {}
    for name, pipeline, tasks in stages:
        start = time.monotonic()
        logs = str(work / "logs" / name)
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs).run()
        seconds[name] = time.monotonic() - start
        print(f"[{name}] done, {seconds[name]:.1f}s", flush=True)
    kept = {"filtered": documents(work, "filtered"), "deduped": documents(work, "deduped")}
    print(json.dumps({"seconds": seconds, **kept}))


if __name__ == "__main__":
    main()
