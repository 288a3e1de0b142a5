"""Training throughput of a config on one device: tokens/s, MFU and peak memory, per attention kernel.

    python -m bench.gpu_train CONFIG [--steps 30] [--warmup 5] [--set key=value ...]

The steps are the trainer's (same DeepSpeed engine, optimizer groups and fp32 loss, from
training.engine) on synthetic packed rows: random tokens cut into documents by <|endoftext|> at
random places (mean length 1,000 tokens), so document masking runs as in training. It runs PyTorch
SDPA, then flash-attn when it is installed and usable, each with the config's activation
checkpointing and, when that is on, without it (recomputation costs a third more compute that MFU does
not count; the fused loss leaves room for the activations on an 80 GB card). A variant that runs out
of memory is reported as such. bench/gpu.sh is the prepared wrapper for an H100/H200.
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
from training.distributed import device, init_distributed
from training.engine import build_engine, lm_loss
from training.model import StableLM, flops_per_token
from training.utilization import memory_metrics, peak_flops

MEAN_DOC_TOKENS = 1000
# EOT_ID, not imported: the tokenizer needs tiktoken, which the GPU machine may lack.
EOT_ID = 100257


def synthetic_rows(cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    shape = (cfg.batch.micro_batch, cfg.data.train_len + 1)
    rows = torch.randint(0, EOT_ID, shape, generator=generator)
    ends = torch.rand(shape, generator=generator) < 1 / MEAN_DOC_TOKENS
    return torch.where(ends, EOT_ID, rows)


def run(cfg: TrainConfig, steps: int, warmup: int) -> dict[str, float]:
    """Train `warmup + steps` steps; throughput and memory over the last `steps`."""
    dev = device()
    torch.manual_seed(cfg.seed)  # the same initial weights for every variant
    model = StableLM(cfg.model)
    model.activation_checkpointing = cfg.activation_checkpointing
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
        for _ in range(cfg.batch.grad_accum):
            loss = lm_loss(engine, synthetic_rows(cfg, generator).to(dev), eot)
            engine.backward(loss)
            engine.step()
        losses.append(loss.item())  # also waits for the device
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_train", description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
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
    kernels = ["sdpa", "flash"] if flash_usable() else ["sdpa"]
    variants = dict.fromkeys([cfg.activation_checkpointing, False])  # checkpointing as configured, then off
    results = {}
    for kernel in kernels:
        for checkpointing in variants:
            raw = cfg.model_dump(mode="json")
            raw["model"]["attention"] = kernel
            raw["activation_checkpointing"] = checkpointing
            label = f"{kernel}, checkpointing {on_off(checkpointing)}"
            try:
                r = run(TrainConfig.model_validate(raw), args.steps, args.warmup)
            except torch.OutOfMemoryError:
                r = None
            if r is None:  # outside the except block, whose traceback still holds the model
                gc.collect()
                torch.cuda.empty_cache()
                print(f"{label:>26}: out of memory", flush=True)
                continue
            results[kernel, checkpointing] = r
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a (no peak FLOP/s for this device)"
            print(
                f"{label:>26}: {r['tokens_per_s']:,.0f} tokens/s/device | MFU {mfu} | peak memory "
                f"{r['memory_gib']:.1f} GiB | loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}",
                flush=True,
            )
    for checkpointing in variants:
        flash, sdpa = results.get(("flash", checkpointing)), results.get(("sdpa", checkpointing))
        if flash and sdpa:
            ratio = flash["tokens_per_s"] / sdpa["tokens_per_s"]
            print(f"flash-attn / SDPA throughput, checkpointing {on_off(checkpointing)}: {ratio:.2f}x")
    if "flash" not in kernels:
        print("flash-attn: not installed or no GPU; SDPA only")


if __name__ == "__main__":
    main()
