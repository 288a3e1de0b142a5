"""Where a model comes from: the training run that made it, its data and tokenizer, its step and folder.

One record, read and written under three spellings that are kept as they are, since files and runs
already carry them (docs/design.md):

- a checkpoint's trainer.json holds the run's facts (`trainer_state`), beside its own step;
- an export's training_run.json holds all of them under the field names (`training_run`);
- an MLflow run is tagged with them (`tags`): the training run itself with its data and tokenizer, an
  evaluation with everything the evaluated model names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["TRAINING_RUN_TAGS", "Provenance"]

# Field -> key of a checkpoint's trainer.json (the step and the folder are the checkpoint's own).
_TRAINER_STATE_KEYS = {
    "mlflow_run_id": "mlflow_run_id",
    "tracking_uri": "mlflow_tracking_uri",
    "data_manifest_sha256": "data_manifest_sha256",
    "tokenizer_fingerprint": "tokenizer_fingerprint",
}
# Field -> MLflow tag name.
_TAGS = {
    "mlflow_run_id": "training_run_id",
    "experiment": "training_experiment",
    "tracking_uri": "training_tracking_uri",
    "checkpoint": "checkpoint",
    "step": "checkpoint_step",
    "data_manifest_sha256": "data_manifest_sha256",
    "tokenizer_fingerprint": "tokenizer_fingerprint",
}
TRAINING_RUN_TAGS = tuple(_TAGS.values())


@dataclass(frozen=True)
class Provenance:
    """Each fact None where it is not known (an older checkpoint, an export of another tool)."""

    mlflow_run_id: str | None = None  # the training run
    experiment: str | None = None  # its MLflow experiment
    tracking_uri: str | None = None  # the MLflow store that holds it
    data_manifest_sha256: str | None = None  # the shards' manifest (common.shards.manifest_hash)
    tokenizer_fingerprint: str | None = None
    step: int | None = None  # optimizer steps the weights were trained for
    checkpoint: str | None = None  # the step_* folder the weights come from

    @classmethod
    def from_trainer_state(cls, state: dict[str, Any], **more: Any) -> Provenance:
        """The facts a checkpoint's trainer.json holds, with `more` (experiment, step, checkpoint)."""
        return cls(**{field: state.get(key) for field, key in _TRAINER_STATE_KEYS.items()}, **more)

    def trainer_state(self) -> dict[str, Any]:
        """What trainer.json keeps of it (every key, null where unknown)."""
        return {key: getattr(self, field) for field, key in _TRAINER_STATE_KEYS.items()}

    @classmethod
    def from_training_run(cls, run: dict[str, Any]) -> Provenance:
        """An export's training_run.json; keys this record does not know are ignored."""
        return cls(**{field.name: run.get(field.name) for field in dataclasses.fields(cls)})

    def training_run(self) -> dict[str, Any]:
        """An export's training_run.json: every field, null where unknown."""
        return dataclasses.asdict(self)

    def tags(self) -> dict[str, str]:
        """The MLflow tags of the facts known."""
        known = {tag: getattr(self, field) for field, tag in _TAGS.items()}
        return {tag: str(value) for tag, value in known.items() if value is not None}
