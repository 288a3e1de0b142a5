"""Requests per second of the `stablelm2` lm-eval adapter against lm-eval's `hf` model (HFLM: what
`lm_eval --model hf` runs, transformers' StableLmForCausalLM) on the same export, the same requests of
the bundled tasks, the same batch size, in one run on CPU in float32:

    python -m bench.eval [EXPORT]   # default runs/tiny/export; a tiny random export when that is missing

The requests are lm-eval's own Instances of the bundled tasks (LIMIT documents per language):
`loglikelihood` from the cloze tasks (four choices per document) and `generate_until` from the
generation tasks (3-shot). Both sides get the very same lists, each timed as its best of ROUNDS
alternating runs (the machine may be shared); the script prints the largest loglikelihood difference
and how many generations are identical, then each side's requests/s and the ratio (adapter / hf) per
request type and overall.

Where the adapter wins: it computes the output projection and the log-softmax only at the positions
the continuations are read from, while `hf` computes [batch, length, 100,352] logits and their fp32
log-softmax for every position. For the tiny model the projection is ~98% of the work per position,
so the gain is large. On a GPU with the 1.6B model the projection is ~14% of the matmul FLOPs per
token and the full-vocabulary log-softmax is memory-bound work, so expect roughly 1.1-1.5x for
loglikelihood at equal batch size (more where `hf`'s [batch, length, vocab] fp32 logits would cap the
batch size), and about 1x for generation, where both decode greedily with a KV cache. Not measured on
a GPU yet.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from bench.exports import export_or_tiny
from evaluation.adapter import StableLM2
from evaluation.tasks import load_tasks, task_manager

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPORT = ROOT / "runs" / "tiny" / "export"
LIMIT = 12  # documents per task (one task per language and group)
BATCH_SIZE = 16
ROUNDS = 3
SHOTS = {"stablelm2_cloze": 0, "stablelm2_gen": 3}


def bundled_requests() -> dict[str, list[Instance]]:
    """The bundled tasks' requests, by request type, as lm-eval's evaluator builds them."""
    manager = task_manager(SHOTS)
    by_type: dict[str, list[Instance]] = {}
    for group in load_tasks(manager, SHOTS):
        for task in group.get_all_tasks():
            task.build_all_requests(limit=LIMIT)
            for instance in task.instances:
                by_type.setdefault(instance.request_type, []).append(instance)
    return by_type


def race(kind: str, sides: dict[str, Any], requests: list[Instance]) -> dict[str, tuple[list[Any], float]]:
    """Each side's answers to `requests` and its fastest of ROUNDS runs, the sides alternating so that
    load from other processes favours neither (the first round also warms caches and allocations)."""
    best: dict[str, tuple[list[Any], float]] = {}
    for _ in range(ROUNDS):
        for name, lm in sides.items():
            started = time.perf_counter()
            answers = getattr(lm, kind)(requests)
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name][1]:
                best[name] = (answers, seconds)
    return best


def compare(kind: str, ours: Sequence[Any], theirs: Sequence[Any]) -> str:
    if kind == "generate_until":
        return f"identical generations {sum(a == b for a, b in zip(ours, theirs, strict=True))}/{len(ours)}"
    gap = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs, strict=True))
    same_greedy = sum(a[1] == b[1] for a, b in zip(ours, theirs, strict=True))
    return f"max |loglikelihood difference| {gap:.1e}, same is_greedy {same_greedy}/{len(ours)}"


def main() -> None:
    export = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_EXPORT
    with tempfile.TemporaryDirectory() as tmp:
        export = export_or_tiny(export, Path(tmp))
        requests = bundled_requests()
        ours = StableLM2(str(export), dtype="float32", device="cpu", batch_size=BATCH_SIZE)
        hf = HFLM(pretrained=str(export), dtype="float32", device="cpu", batch_size=BATCH_SIZE)
        threads = torch.get_num_threads()
        print(
            f"export: {export}; {threads} torch threads, batch size {BATCH_SIZE}, float32, best of {ROUNDS}"
        )
        total = {"stablelm2": 0.0, "hf": 0.0}
        for kind, instances in requests.items():
            best = race(kind, {"stablelm2": ours, "hf": hf}, instances)
            (mine, mine_s), (theirs, theirs_s) = best["stablelm2"], best["hf"]
            total["stablelm2"] += mine_s
            total["hf"] += theirs_s
            n = len(instances)
            print(
                f"{kind:15s} {n:4d} requests: stablelm2 {n / mine_s:7.1f} req/s, "
                f"hf {n / theirs_s:7.1f} req/s, ratio {theirs_s / mine_s:.2f}x; {compare(kind, mine, theirs)}"
            )
    n = sum(len(instances) for instances in requests.values())
    ratio = total["hf"] / total["stablelm2"]
    print(f"all {n} requests: ratio (stablelm2 / hf requests per second) {ratio:.2f}x")


if __name__ == "__main__":
    main()
