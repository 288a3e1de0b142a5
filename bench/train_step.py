"""Time a training step (forward, backward, AdamW) of our StableLM vs transformers' StableLmForCausalLM.

Both models get the same config, the same weights (ours loads transformers' state dict), the same batch,
dtype and optimizer (fused AdamW, the default of transformers' Trainer), and each computes the
next-token loss its own way: ours with `targets=` (fused with the output projection), transformers
with `labels=` (logits, then cross-entropy). Steps alternate between the two models (and which goes
first) so that load from other processes hits both alike; medians of wall and process CPU time are reported.

    python -m bench.train_step
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from transformers import StableLmConfig, StableLmForCausalLM

from training.hf import hf_config
from training.model import ModelConfig, StableLM

# (name, model config, batch size, sequence length); tiny is configs/train/tiny.yaml's model and batch.
CASES = [
    ("tiny", ModelConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688), 2, 256),
    ("mid", ModelConfig(hidden_size=768, num_layers=8, num_heads=12, intermediate_size=2048), 1, 512),
]
DTYPES = ["fp32", "bf16-autocast"]
REPEATS = 9


def transformers_model(cfg: ModelConfig) -> StableLmForCausalLM:
    return StableLmForCausalLM(StableLmConfig.from_dict(hf_config(cfg), attn_implementation="sdpa"))


def make_step(
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    batch: torch.Tensor,
    dtype: str,
) -> Callable[[], float]:
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True
    )
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast("cpu", torch.bfloat16) if dtype == "bf16-autocast" else contextlib.nullcontext()
        )
        with autocast:
            loss = loss_of(inputs, targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def timed(step: Callable[[], float]) -> tuple[float, float]:
    """Wall and process CPU seconds of one step; on a shared, busy machine CPU time is the steadier one."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_case(cfg: ModelConfig, batch_size: int, seq_len: int, dtype: str) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per step of each model."""
    torch.manual_seed(0)
    theirs = transformers_model(cfg).train()
    ours = StableLM(cfg).train()
    ours.load_state_dict(theirs.state_dict())
    batch = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1))
    steps = {
        "ours": make_step(lambda x, y: ours(x, targets=y), ours, batch, dtype),
        # shift_labels: the targets are already shifted, so both models score the same T tokens.
        "transformers": make_step(
            lambda x, y: theirs(input_ids=x, labels=y, shift_labels=y, use_cache=False).loss,
            theirs,
            batch,
            dtype,
        ),
    }
    # The first step warms both up and checks that they compute the same loss.
    losses = [step() for step in steps.values()]
    if abs(losses[0] - losses[1]) > 1e-2:
        raise SystemExit(f"the two models disagree: loss {losses[0]} vs {losses[1]}")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for i in range(REPEATS):
        # Alternate who goes first, so that load from elsewhere hits both alike.
        for name in list(steps)[:: 1 if i % 2 == 0 else -1]:
            times[name].append(timed(steps[name]))
    return {
        name: (statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples))
        for name, samples in times.items()
    }


def main() -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median ms per step of {REPEATS} steps after a warm-up step"
    )
    print(f"{'':<34} {'---------- wall ----------':>30} {'---------- CPU -----------':>30}")
    head = f"{'ours':>9} {'transformers':>13} {'ratio':>6}"
    print(f"{'config':<6} {'dtype':<14} {'batch x seq':<12} {head} {head}")
    for name, cfg, batch_size, seq_len in CASES:
        for dtype in DTYPES:
            result = bench_case(cfg, batch_size, seq_len, dtype)
            columns = [
                f"{result['ours'][k] * 1e3:>9.0f} {result['transformers'][k] * 1e3:>13.0f} "
                f"{result['ours'][k] / result['transformers'][k]:>5.2f}x"
                for k in (0, 1)
            ]
            print(
                f"{name:<6} {dtype:<14} {f'{batch_size} x {seq_len}':<12} {columns[0]} {columns[1]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
