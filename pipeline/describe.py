"""`python -m pipeline inspect DIR`: a shard folder's manifest in readable form and a few decoded rows."""

from __future__ import annotations

from pathlib import Path

import tokenizer
from common.shards import ShardSet, manifest_hash
from pipeline.counts import ALL_STEPS


def describe(folder: str | Path, rows: int = 3, chars: int = 400) -> str:
    """The manifest, verified against the files, then the first `rows` rows decoded (truncated)."""
    shards = ShardSet(folder)
    m = shards.manifest
    lines = [
        f"{folder}  (manifest sha256 {manifest_hash(folder)})",
        f"  seq_len {m.seq_len}, tokenizer {m.tokenizer.name} {m.tokenizer.fingerprint[:16]}, "
        f"data config {m.data_config_hash[:16]}",
        f"  {len(m.shards)} shards, {m.rows:,} rows, {m.tokens:,} tokens; "
        f"{m.partial_row_tokens:,} tokens lost to partial rows; validation: {m.valid or 'none'}",
        "  per source and stage, documents / tokens:",
    ]
    for source, stages in m.sources.items():
        # manifest.json is written with sorted keys; show the steps in the order the pipeline runs them.
        order = sorted(stages, key=lambda s: ALL_STEPS.index(s) if s in ALL_STEPS else len(ALL_STEPS))
        cells = ", ".join(f"{s} {stages[s]['docs']:,}/{stages[s]['tokens']:,}" for s in order)
        lines.append(f"    {source}: {cells}")
    if m.mixture:
        lines.append("  mixture (share of packed tokens, target):")
        for source, shares in m.mixture.items():
            target = f"{shares['target']:.3f}" if "target" in shares else "-"
            lines.append(f"    {source}: {shares['achieved']:.3f} ({target})")
    enc = tokenizer.load()
    for index in range(min(rows, len(shards))):
        row = shards[index]
        docs = int((row == enc.eot_id).sum())
        text = enc.decode(row.tolist())
        more = " ..." if len(text) > chars else ""
        lines.append(f"  row {index} ({docs} <|endoftext|>): {text[:chars]!r}{more}")
    return "\n".join(lines)
