"""The data pipeline: read -> filter -> dedup -> decontam -> mix -> tokenize+pack, as Ray Data jobs.

`python -m pipeline run` (run.py) is a list of stages (stage.py) over the partitions of plan.py, in
the work dir whose paths layout.py owns:

- read_filter.py: read (sources.py, the reader table), normalize, exclude, filter (filters.py,
  text.py, langid.py) and count tokens, per input file;
- dedup.py: exact and MinHash-LSH duplicates across sources, connected components;
- mix.py: drop duplicates, hold out the validation split, mix the sources to their target shares;
- decontam.py: remove train documents sharing an n-gram with an eval task's documents, before mixing;
- report.py: stats.json, report.md and report.png.

`python -m pipeline pack` (pack.py) encodes (encode.py) and packs shuffle windows (packing.py) into
the shards of shards.py, then logs the MLflow run and prints a summary (track.py). `explain` runs one
source's filter chain on given documents (explain.py); `inspect` describes a shard folder
(describe.py). counts.py names the points where documents and tokens are counted; storage.py holds
the parquet schemas and writers; cluster.py connects to Ray.
"""
