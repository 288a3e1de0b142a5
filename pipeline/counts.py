"""The points at which documents and tokens are counted per source, in pipeline order.

They are the columns of report.md and the stages of a manifest's `sources`; a source counts only at
the filters it enables.
"""

from __future__ import annotations

from pipeline.config import FiltersConfig

# Counted by the filter stage before its filters: every document read, then those not excluded.
READ_STEPS = ("read", "exclude")
# Counted by the filter stage after each filter, in the chain's order: that of FiltersConfig's fields.
FILTER_STEPS: tuple[str, ...] = tuple(FiltersConfig.model_fields)
# Counted by the split, decontam and mix stages: unique documents, the train split, the train split
# without the documents that share an n-gram with an eval task, the mixture.
MIX_STEPS = ("dedup", "train", "decontam", "mixed")
# Counted by pack: encoded documents, empty ones set aside, and the tokens that reached a row.
PACK_STEPS = ("tokenized", "empty", "packed")

REPORT_STEPS = (*READ_STEPS, *FILTER_STEPS, *MIX_STEPS)
ALL_STEPS = (*REPORT_STEPS, *PACK_STEPS)
