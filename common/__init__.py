"""What every stage (pipeline, training, serving) shares: the config loader and its `--set` overrides
(`common.config`), the MLflow store and run (`common.tracking`), and atomic file writes (`common.files`).

It imports no stage, so any stage may import it.
"""
