"""What every stage shares: the config loader and its `--set` overrides (`common.config`), the MLflow
store and run (`common.tracking`), atomic file writes (`common.files`), the shard format the data job
writes and the trainer reads (`common.shards`), and the precision and device a machine computes in
(`common.precision`).

It imports no stage, so any stage may import it.
"""
