"""Training throughput of a config on one device: tokens/s, MFU and peak memory, per attention kernel.

    python -m bench.gpu_train CONFIG [--steps 30] [--warmup 5] [--set key=value ...]

The steps are the trainer's (same DeepSpeed engine, optimizer groups, learning-rate schedule and fp32
loss, from training.deepspeed_engine) on synthetic packed rows: documents cut by <|endoftext|> at
random places (mean length 1,000 tokens), so document masking runs as in training, each a
Zipf-distributed phrase repeated, so that the loss has something to learn and must fall. Variants:
FlexAttention (the CUDA default) with the config's activation checkpointing, without it, and without it
with each block compiled (`compile: true`); SDPA with its dense mask, with and without checkpointing;
flash-attn's varlen kernel when installed. Recomputation costs a third more compute that MFU does not
count; the fused loss leaves room for the activations on an 80 GB card. A variant that runs out of
memory or fails is reported as such and the rest still run. The first variant prints its loss at every
step.
bench/gpu.sh is the prepared wrapper for an H100/H200.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch
import torch.distributed as dist

from common.config import add_overrides_argument, parse_overrides
from common.precision import resolve_precision
from training.config import TrainConfig, load
from training.deepspeed_engine import build_engine, lm_loss
from training.distributed import deepspeed_output, device, init_distributed
from training.model import StableLM, document_mask, document_positions, flops_per_token
from training.schedule import lr_at
from training.utilization import memory_metrics, peak_flops

MEAN_DOC_TOKENS = 1000
PHRASE_TOKENS = 64
ZIPF_EXPONENT = 1.1
# EOT_ID, not imported: the tokenizer needs tiktoken, which the GPU machine may lack.
EOT_ID = 100257


def synthetic_rows(cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Rows of documents ended by EOT at random places; each row repeats a phrase of Zipf-distributed
    token ids (a unigram distribution to learn first, then the repetition)."""
    shape = (cfg.batch.micro_batch, cfg.data.train_len + 1)
    zipf = torch.arange(1, EOT_ID + 1, dtype=torch.float64) ** -ZIPF_EXPONENT
    phrases = torch.multinomial(zipf, shape[0] * PHRASE_TOKENS, replacement=True, generator=generator)
    rows = phrases.view(shape[0], PHRASE_TOKENS).repeat(1, shape[1] // PHRASE_TOKENS + 1)[:, : shape[1]]
    ends = torch.rand(shape, generator=generator) < 1 / MEAN_DOC_TOKENS
    return torch.where(ends, EOT_ID, rows)


def run(cfg: TrainConfig, steps: int, warmup: int, print_losses: bool) -> dict[str, float]:
    """Train `warmup + steps` steps; throughput and memory over the last `steps`."""
    dev = device()
    torch.manual_seed(cfg.seed)  # the same initial weights for every variant
    with dev:  # initialised where it trains, as the trainer does
        model = StableLM(cfg.model)
    model.activation_checkpointing = cfg.activation_checkpointing
    if cfg.compile:
        model.compile_blocks()
    with deepspeed_output(verbose=False):
        engine, optimizer = build_engine(model, cfg, resolve_precision(cfg.precision, dev))
    eot = EOT_ID if cfg.data.document_masking else None
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.optim, cfg.schedule)
        for _ in range(cfg.batch.grad_accum):
            loss = lm_loss(engine, synthetic_rows(cfg, generator).to(dev), eot)
            engine.backward(loss)
            engine.step()
        losses.append(loss.item())  # also waits for the device
        if print_losses:
            print(f"    step {step + 1:>3}: loss {losses[-1]:.3f}", flush=True)
    seconds = time.perf_counter() - start
    tokens = steps * cfg.batch.grad_accum * cfg.batch.micro_batch * cfg.data.train_len
    result = {"tokens_per_s": tokens / seconds, "first_loss": losses[0], "last_loss": losses[-1]}
    result.update(memory_metrics(dev))
    if peak := peak_flops(dev, cfg.log.peak_flops):
        result["mfu"] = flops_per_token(cfg.model, cfg.data.train_len) * result["tokens_per_s"] / peak
    del engine, optimizer, model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def flash_usable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def variants(checkpointing: bool, dev: torch.device) -> list[tuple[str, bool, bool]]:
    """(kernel, activation checkpointing, compiled blocks) to measure, in order."""
    both = list(dict.fromkeys([checkpointing, False]))  # as configured, then off
    runs = []
    if dev.type == "cuda":  # FlexAttention has no backward on CPU
        runs += [("flex", c, False) for c in both] + [("flex", False, True)]
    runs += [("sdpa", c, False) for c in both]
    if flash_usable():
        runs += [("flash", c, False) for c in both]
    return runs


def parse_variant(text: str) -> tuple[str, bool, bool]:
    kernel, checkpointing, *compiled = text.split(":")
    return kernel, checkpointing == "on", compiled == ["compiled"]


def block_mask_ms(cfg: TrainConfig, dev: torch.device, repeats: int = 10) -> float:
    """Milliseconds to build the document block mask of one micro-batch, once per forward."""
    rows = synthetic_rows(cfg, torch.Generator().manual_seed(0))[:, :-1].to(dev)
    positions = document_positions(rows, EOT_ID)
    document_mask(positions, "flex")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        document_mask(positions, "flex")
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_train", description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--variant",
        action="append",
        metavar="KERNEL:on|off[:compiled]",
        help="measure only these (repeatable), e.g. flex:on:compiled; default: all of them",
    )
    add_overrides_argument(parser)
    args = parser.parse_args()
    cfg = load(args.config, parse_overrides(args.set))
    init_distributed()
    dev = device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    m, precision = cfg.model, resolve_precision(cfg.precision, dev)
    print(
        f"{args.config}: {m.num_layers} layers x {m.hidden_size}, seq {cfg.data.train_len}, micro-batch "
        f"{cfg.batch.micro_batch} x grad-accum {cfg.batch.grad_accum}, {precision.name}, activation "
        f"checkpointing {cfg.activation_checkpointing}, ZeRO-1, {dist.get_world_size()} x {name}",
        flush=True,
    )
    if dev.type == "cuda":
        print(f"FlexAttention block mask of one micro-batch: {block_mask_ms(cfg, dev):.2f} ms", flush=True)
    results = {}
    chosen = (
        [parse_variant(v) for v in args.variant]
        if args.variant
        else variants(cfg.activation_checkpointing, dev)
    )
    for index, (kernel, checkpointing, compiled) in enumerate(chosen):
        raw = cfg.model_dump(mode="json")
        raw["model"]["attention"] = kernel
        raw["activation_checkpointing"] = checkpointing
        raw["compile"] = compiled
        label = f"{kernel}, checkpointing {on_off(checkpointing)}" + (", compiled" if compiled else "")
        failure = None
        try:
            r = run(TrainConfig.model_validate(raw), args.steps, args.warmup, print_losses=index == 0)
        except torch.OutOfMemoryError:
            failure = "out of memory"
        except Exception as error:  # noqa: BLE001  one variant's failure must not end the whole measurement
            failure = f"failed: {type(error).__name__}: {str(error)[:300]}"
        if failure is not None:  # outside the except block, whose traceback still holds the model
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            print(f"{label:>36}: {failure}", flush=True)
            continue
        results[kernel, checkpointing, compiled] = r
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a (no peak FLOP/s for this device)"
        print(
            f"{label:>36}: {r['tokens_per_s']:,.0f} tokens/s/device | MFU {mfu} | peak memory "
            f"{r['memory_gib']:.1f} GiB | loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}",
            flush=True,
        )
    for (kernel, checkpointing, compiled), r in results.items():
        sdpa = results.get(("sdpa", checkpointing, False))
        if kernel != "sdpa" and sdpa:
            print(
                f"{kernel}{' compiled' if compiled else ''} / SDPA throughput, checkpointing "
                f"{on_off(checkpointing)}: {r['tokens_per_s'] / sdpa['tokens_per_s']:.2f}x"
            )
    if not flash_usable():
        print("flash-attn: not installed or no GPU")


if __name__ == "__main__":
    main()
