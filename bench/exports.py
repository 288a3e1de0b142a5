"""The export a model benchmark measures: the one asked for, or a tiny random one on a fresh clone."""

from __future__ import annotations

from pathlib import Path

from harness.tiny_export import make_tiny_export
from training.hf import HFFormatError, check_export

__all__ = ["export_or_tiny"]


def export_or_tiny(export: Path, scratch: Path) -> Path:
    """`export` when it is a complete export (`training.hf.check_export`), else a tiny random one written
    under `scratch`, so that a benchmark runs on a fresh clone too (saying which it measures)."""
    try:
        return check_export(export)
    except HFFormatError as e:
        print(f"{e}; benchmarking a tiny random export instead")
        return make_tiny_export(scratch / "export")
