"""What a resume may change. The settings that a checkpoint's weights, optimizer state and data
position depend on are compared with the new run's before anything is loaded; every difference is
named at once, old and new value, and the resume refused.

Pinned: the model's shape (every `model.*` key but `attention`, a kernel choice), the precision the
weights and optimizer state are kept in (as resolved: `auto` may resolve otherwise on another machine),
`data.seq_len`, `data.window` and `data.seed` (they define the sample order the loader position counts
in), the data itself (the sha256 of the shards' manifest.json) and the tokenizer (its fingerprint).

The parallel layout: a checkpoint saved under tensor parallelism resumes under its own layout (tensor
and data-parallel ranks) only; without tensor parallelism, on any number of ranks.

Accepted: another number of ranks (the checkpoint is converted, see training.checkpoint), the learning
rate and schedule (total steps included), micro-batch and accumulation (the trainer notes a new global
batch), intervals, logging and evaluation, `data.shards` as a path or URL (its manifest is what counts), the
init seed (the RNG states come from the checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.config import flatten
from training.checkpoint import Saved
from training.provenance import Provenance

__all__ = ["DATA_FACTS", "ResumeError", "check_layout", "check_resume", "pinned_settings"]

# The provenance facts that name the data a checkpoint trained on.
DATA_FACTS = ("data_manifest_sha256", "tokenizer_fingerprint")
_PINNED_KEYS = ("precision", "data.seq_len", "data.window", "data.seed")
_KERNEL_KEYS = ("model.attention",)
_HEX_DIGITS = frozenset("0123456789abcdef")


class ResumeError(ValueError):
    """A resume whose config or data contradicts what the checkpoint was trained with."""


def pinned_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The dotted settings of a TrainConfig (as JSON) that a resume must keep, as strings."""
    return {
        key: value
        for key, value in flatten(config).items()
        if key in _PINNED_KEYS or (key.startswith("model.") and key not in _KERNEL_KEYS)
    }


def check_resume(saved: Saved, config: Mapping[str, Any], facts: Provenance) -> None:
    """Raise ResumeError listing each pinned setting and data fact that differs between the checkpoint
    `saved` and the new run (`config`: its TrainConfig as JSON, precision resolved; `facts`: the
    provenance of its data)."""
    trained_on = Provenance.from_trainer_state(saved.state)
    old = {**pinned_settings(saved.config), **{key: str(getattr(trained_on, key)) for key in DATA_FACTS}}
    new = {**pinned_settings(config), **{key: str(getattr(facts, key)) for key in DATA_FACTS}}
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if not changed:
        return
    lines = [f"  {key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in changed]
    advice = "restore these settings, or set checkpoint.dir elsewhere to start a new run"
    if "precision" in changed:
        advice += f"; precision: {saved.config['precision']} resumes this checkpoint on any machine"
    raise ResumeError(
        f"{saved.folder} cannot be resumed with this config; it was trained with other values "
        f"(checkpoint -> now):\n" + "\n".join(lines) + f"\n{advice}"
    )


def check_layout(saved: Saved, saved_layout: tuple[int, int], layout: tuple[int, int]) -> None:
    """Raise ResumeError when the checkpoint `saved`, saved by `saved_layout` (tensor-parallel,
    data-parallel) ranks, cannot load under `layout`: ZeRO-1's resharding (DeepSpeed's universal
    checkpoint) is used, and tested, without tensor parallelism only."""
    if saved_layout == layout or saved_layout[0] == layout[0] == 1:
        return
    old, new = (f"tp={tp} x dp={dp} (world size {tp * dp})" for tp, dp in (saved_layout, layout))
    raise ResumeError(
        f"{saved.folder} was saved under the layout {old}; this run's is {new}. With tensor parallelism "
        "on either side a checkpoint resumes under its own layout only: run with parallel.tensor "
        f"{saved_layout[0]} at world size {saved_layout[0] * saved_layout[1]}, or export it (python -m "
        "training export) and continue from the export with import-hf (with a fresh optimizer)"
    )


def _short(value: str | None) -> str:
    """Hashes by their first 12 digits, like git; anything else as it is."""
    if value is not None and len(value) == 64 and set(value) <= _HEX_DIGITS:
        return value[:12]
    return str(value)
