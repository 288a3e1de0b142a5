"""Evaluation with lm-evaluation-harness on any export or training checkpoint (`python -m evaluation`).

`evaluation.adapter` registers this project's model with lm-eval as `stablelm2`; `evaluation.tasks`
finds lm-eval's tasks, the bundled ones (configs/eval/tasks, written by data/eval/make.py) and the
user's own (`--include-path`); `evaluation.run` runs them and records the results (results.json, with
`--log-samples` the per-sample records of `evaluation.samples`, MLflow); `evaluation.in_loop` runs them
inside training.

Evaluation never downloads: a data set comes from the local Hugging Face cache or the repository, so
that scores never depend on what the Hub serves that day and a missing data set fails at once, named
(`evaluation.tasks`). The offline switches are forced, not defaulted, since a shell that exports
HF_HUB_OFFLINE=0 would otherwise turn that guarantee off; fill a cache with `lm_eval` itself. They are
set here, in the package's first module to run, because `datasets` and `huggingface_hub` read them
once, when first imported, and lm-eval imports both.
"""

import os

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
