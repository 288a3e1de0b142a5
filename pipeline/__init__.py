"""The data pipeline: read -> filter -> dedup -> split -> decontam -> mix as Ray Data stages (`run`),
then tokenize+pack as Ray tasks (`pack`).

`python -m pipeline run` (run.py) is a list of stages (stage.py) over the partitions of plan.py, in
the work dir whose paths workdir.py owns:

- read_filter.py: read (sources.py, the reader table), normalize, exclude, filter (filters.py: word and
  sentence splitting in spacy_split.py, whose regexes regex_edges.py indexes through regex_parse.py;
  stop_words.py; langid.py) and count tokens, per input file;
- dedup.py: exact and MinHash-LSH duplicates across sources (keys in lsh.py, of normalize.py's text),
  then connected components (components.py), both grouping with groupby.py;
- mix.py: drop duplicates, hold out the validation split, mix the sources to their target shares;
- decontam.py: remove train documents sharing an n-gram with an eval task's documents, before mixing,
  read from the eval documents file (eval_documents.py) that `python -m evaluation documents` writes;
- report.py: stats.json, report.md and report.png.

`python -m pipeline pack` (pack_job.py) encodes (encode.py) and packs shuffle windows
(window_packing.py) into the shards of common/shards.py, then logs the MLflow run and prints a summary
(track.py). `explain` runs one source's filter chain on given documents (explain.py); `inspect`
describes a shard folder (describe.py). counts.py names the points where documents and tokens are
counted; storage.py holds the parquet schemas and writers; cluster.py connects to Ray.
"""
