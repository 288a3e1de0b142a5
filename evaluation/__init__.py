"""Evaluation with lm-evaluation-harness on any export or training checkpoint (`python -m evaluation`).

`evaluation.adapter` registers this project's model with lm-eval as `stablelm2`; `evaluation.tasks`
finds lm-eval's tasks and the bundled ones (configs/eval/tasks, written by `evaluation.make_tasks`);
`evaluation.run` runs them and records the results (results.json, MLflow).
"""
