"""Serving throughput against the baselines a user would otherwise write, on the same export and requests:
transformers `generate` on static batches (left-padded, in arrival order; also sorted by requested output
length) and `generate` one request at a time.

    python -m bench.serve [EXPORT]          # default: a tiny random export (runs/tiny/export's context is
                                            # too short for the mixed workload)
    python -m bench.serve --model-config configs/train/1_6b.yaml --device cuda --dtype bfloat16 \
        --no-sequential   # on a GPU: a random 1.6B in bf16

Two workloads of --requests requests (default 64): uniform (128-token prompts, 128 output tokens each) and
mixed (prompt and output lengths drawn from 16-512 tokens, fixed seed). The whole set arrives at once:
the server gets every request at t=0 (streamed, each in its own connection) and decodes --batch (16) of
them at a time; `generate` runs them batch after batch, each batch greedy to its longest request's
max_tokens. Only each request's own tokens count (its max_tokens, cut after <|endoftext|>), so every
system is credited with the same useful tokens. Per system: useful tokens/s, p50/p99 latency and time to
first token, both from t=0 (a static batch's first token comes after its whole prefill; one at a time, a
request's first token comes after its own prefill, once the requests before it are done). The row "ours
without HTTP" submits the same requests to the server's batcher in this process. Ratios are of the same
run (--rounds N: each system's fastest of N turns, taken in turn); the script also counts the requests
whose greedy output equals the static batch's. On a CPU each side runs one torch thread (--threads).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from transformers import StableLmForCausalLM
from transformers.generation import BaseStreamer

import tokenizer
from bench.exports import export_or_tiny
from common.config import load
from common.precision import pick_device
from harness.server import running_server
from harness.tiny_export import make_tiny_export
from serving.batcher import Batcher, Output
from serving.config import ServeConfig
from serving.metrics import Metrics
from serving.sampling import SamplingParams
from training.config import TrainConfig
from training.hf import save_hf
from training.model import StableLM

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench"
UNIFORM = 128  # prompt and output tokens of every uniform request
MIXED = (16, 512)  # the range of the mixed requests' prompt and output lengths
TEXT = sorted((ROOT / "docs").glob("*.md"))  # where prompts are cut from: real text, any length


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it; times in seconds from the moment the whole set arrived."""

    text: str
    tokens: int  # useful output tokens: at most max_tokens, up to and including <|endoftext|>
    first_token: float
    latency: float


@dataclass(frozen=True)
class Run:
    system: str
    outcomes: list[Outcome]
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outcomes)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def percentiles(self, what: Callable[[Outcome], float]) -> tuple[float, float]:
        p50, p99 = np.percentile([what(o) for o in self.outcomes], [50, 99])
        return float(p50), float(p99)


def workloads(enc: tokenizer.Arcade100k, n: int, seed: int) -> dict[str, list[Request]]:
    """The uniform and the mixed set of `n` requests, prompts cut from the docs at seeded offsets."""
    text = enc.encode_ordinary("\n\n".join(path.read_text() for path in TEXT))
    # Apart, so that the lengths stay the same when the docs change.
    lengths, offsets = random.Random(seed), random.Random(seed + 1)

    def request(prompt_len: int, max_tokens: int) -> Request:
        start = offsets.randrange(len(text) - prompt_len)
        return Request(text[start : start + prompt_len], max_tokens)

    return {
        "uniform": [request(UNIFORM, UNIFORM) for _ in range(n)],
        "mixed": [request(lengths.randint(*MIXED), lengths.randint(*MIXED)) for _ in range(n)],
    }


def useful(ids: list[int], max_tokens: int) -> list[int]:
    """What the request asked for of a row `generate` decoded for a batch: its own max_tokens, up to and
    including the first <|endoftext|> (where the server stops it)."""
    ids = ids[:max_tokens]
    return ids[: ids.index(tokenizer.EOT_ID) + 1] if tokenizer.EOT_ID in ids else ids


class FirstToken(BaseStreamer):
    """Notes when `generate` hands out its first new tokens: `put` gets the prompt, then each step's."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def run_generate(
    system: str,
    model: StableLmForCausalLM,
    enc: tokenizer.Arcade100k,
    requests: list[Request],
    batch: int,
    order: list[int] | None = None,
) -> Run:
    """`requests` through `generate`, `batch` at a time in `order` (default: as they arrived), each
    batch left-padded, greedy to its longest request's max_tokens."""
    order = order or list(range(len(requests)))
    outcomes: dict[int, Outcome] = {}
    started = time.perf_counter()
    for i in range(0, len(order), batch):
        group = order[i : i + batch]
        width = max(len(requests[r].prompt) for r in group)
        ids = torch.full((len(group), width), tokenizer.EOT_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(group):
            prompt = requests[r].prompt
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        streamer = FirstToken()
        out = model.generate(
            ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max(requests[r].max_tokens for r in group),
            do_sample=False,
            pad_token_id=tokenizer.EOT_ID,
            streamer=streamer,
        )
        done = time.perf_counter() - started
        for row, r in enumerate(group):
            got = useful(out[row, width:].tolist(), requests[r].max_tokens)
            text = enc.decode([t for t in got if t != tokenizer.EOT_ID])
            outcomes[r] = Outcome(text, len(got), streamer.at - started, done)
    return Run(system, [outcomes[r] for r in range(len(requests))], time.perf_counter() - started)


async def run_server(system: str, url: str, requests: list[Request]) -> Run:
    """Every request sent at once, each streamed in its own connection."""

    async def one(client: httpx.AsyncClient, request: Request, started: float) -> Outcome:
        body = {
            "model": NAME,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text, tokens, first = "", 0, None
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if "error" in event:
                    raise RuntimeError(f"the server failed a request: {event['error']['message']}")
                for choice in event["choices"]:
                    first = first or time.perf_counter()
                    text += choice["text"]
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        return Outcome(text, tokens, first - started, time.perf_counter() - started)

    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        await one(client, Request(requests[0].prompt, 4), time.perf_counter())  # warm-up
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(client, r, started) for r in requests))
        return Run(system, list(outcomes), time.perf_counter() - started)


def run_batcher(system: str, batcher: Batcher, requests: list[Request]) -> Run:
    """Every request submitted at once straight to the server's batcher, without HTTP: against the run
    through the server, what its event loop, the HTTP and the client cost."""
    texts, tokens = [""] * len(requests), [0] * len(requests)
    first: list[float | None] = [None] * len(requests)
    last = [0.0] * len(requests)
    finished = threading.Semaphore(0)

    def on_output(index: int, out: Output) -> None:  # called on the batcher's thread
        now = time.perf_counter()
        first[index] = first[index] or now
        texts[index] += out.text
        tokens[index] += len(out.token_ids)
        if out.finish_reason is not None:
            last[index] = now
            finished.release()

    started = time.perf_counter()
    for index, r in enumerate(requests):
        params = SamplingParams(max_tokens=r.max_tokens, temperature=0)
        batcher.submit(r.prompt, params, functools.partial(on_output, index))
    for _ in requests:
        finished.acquire()
    seconds = time.perf_counter() - started
    outcomes = [
        Outcome(text, n, at - started, end - started)
        for text, n, at, end in zip(texts, tokens, first, last, strict=True)
    ]
    return Run(system, outcomes, seconds)


def random_export(model_config: Path, folder: Path, context: int) -> Path:
    """A random model of a training config's architecture, its context stretched to `context`."""
    cfg = load(model_config, TrainConfig, {"model.max_position_embeddings": context}).model
    torch.manual_seed(0)
    save_hf(StableLM(cfg).state_dict(), cfg, folder, dtype=torch.float32)
    return folder


def report(workload: str, requests: list[Request], runs: list[Run]) -> None:
    prompts = [len(r.prompt) for r in requests]
    outputs = [r.max_tokens for r in requests]
    print(
        f"\n{workload}: {len(requests)} requests, prompts {min(prompts)}-{max(prompts)} tokens, "
        f"max_tokens {min(outputs)}-{max(outputs)} (sum {sum(outputs)})"
    )
    print(f"{'system':44s} {'tokens':>6s} {'tok/s':>7s}  latency p50/p99 s  first token p50/p99 s")
    for run in runs:
        latency, first = run.percentiles(lambda o: o.latency), run.percentiles(lambda o: o.first_token)
        print(
            f"{run.system:44s} {run.tokens:6d} {run.tokens_per_s:7.0f}  {latency[0]:7.2f} {latency[1]:7.2f}"
            f"       {first[0]:7.2f} {first[1]:7.2f}"
        )
    ours, static = runs[0], runs[1]
    ratios = [
        ours.tokens_per_s / static.tokens_per_s,
        *(ours.percentiles(what)[0] / static.percentiles(what)[0] for what in (_latency, _first_token)),
    ]
    print(
        "ours / static batch: tokens/s {:.2f}x, p50 latency {:.2f}x, p50 first token {:.2f}x".format(*ratios)
    )
    for other in runs[1:]:
        same = sum(
            (a.text, a.tokens) == (b.text, b.tokens)
            for a, b in zip(ours.outcomes, other.outcomes, strict=True)
        )
        print(f"identical greedy outputs, ours vs {other.system}: {same}/{len(requests)}")


def _latency(outcome: Outcome) -> float:
    return outcome.latency


def _first_token(outcome: Outcome) -> float:
    return outcome.first_token


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    env = os.environ.copy()
    if device.type == "cpu":  # the same threads on both sides; see --threads
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    enc = tokenizer.load()
    sets = workloads(enc, args.requests, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        context = max(len(r.prompt) + r.max_tokens for rs in sets.values() for r in rs)
        if args.model_config is not None:
            export = random_export(args.model_config, Path(tmp) / "export", context)
        elif args.export is None:
            export = make_tiny_export(Path(tmp) / "export")
        else:
            export = export_or_tiny(args.export, Path(tmp))
        model = StableLmForCausalLM.from_pretrained(export, dtype=args.dtype or "auto").to(device).eval()
        if model.config.max_position_embeddings < context:
            n_positions = model.config.max_position_embeddings
            sys.exit(f"{export} has a context of {n_positions} tokens; the workloads need {context}")
        dtype = str(model.dtype).removeprefix("torch.")
        config = Path(tmp) / "serve.yaml"
        config.write_text(f"served_model_name: {NAME}\ndevice: {device.type}\nmax_batch_size: {args.batch}\n")
        print(f"export: {export} ({dtype} on {device}, {torch.get_num_threads()} torch threads), greedy")
        run_generate("warm-up", model, enc, sets["uniform"][:2], args.batch)
        batcher = Batcher(
            export, ServeConfig(device=device.type, dtype=dtype, max_batch_size=args.batch), Metrics()
        )
        batcher.start()
        batcher.wait_loaded()
        try:
            run_batcher("warm-up", batcher, sets["uniform"][:2])
            with running_server(export, config, args=["--dtype", dtype], env=env) as url:
                for name in args.workloads:
                    report(name, sets[name], compare(sets[name], url, batcher, model, enc, args))
        finally:
            batcher.stop()


def compare(
    requests: list[Request],
    url: str,
    batcher: Batcher,
    model: StableLmForCausalLM,
    enc: tokenizer.Arcade100k,
    args: argparse.Namespace,
) -> list[Run]:
    """Each system on `requests`, ours first and the static batch second (the ratios' two sides); with
    --rounds, the systems take turns and each keeps its fastest round, so that load from other processes
    that comes and goes does not favour one of them."""
    batch = args.batch
    systems: list[Callable[[], Run]] = [
        lambda: asyncio.run(run_server(f"ours, {batch} slots (continuous batching)", url, requests)),
        lambda: run_generate(f"generate, static batches of {batch}", model, enc, requests, batch),
        lambda: run_batcher("ours without HTTP (the batcher in-process)", batcher, requests),
    ]
    if len({r.max_tokens for r in requests}) > 1:
        longest_first = sorted(range(len(requests)), key=lambda r: -requests[r].max_tokens)
        system = f"generate, batches of {batch} by max_tokens"
        systems.append(lambda: run_generate(system, model, enc, requests, batch, longest_first))
    if args.sequential:
        systems.append(lambda: run_generate("generate, one at a time", model, enc, requests, 1))
    rounds = [[run() for run in systems] for _ in range(args.rounds)]
    return [min(runs, key=lambda run: run.seconds) for runs in zip(*rounds, strict=True)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path, nargs="?", help="default: a tiny random export")
    parser.add_argument(
        "--model-config",
        type=Path,
        help="benchmark a random model of this training config (configs/train/1_6b.yaml) instead of EXPORT",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the export's")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="the server's slots and the static batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", nargs="+", choices=["uniform", "mixed"], default=["uniform", "mixed"])
    parser.add_argument("--rounds", type=int, default=1, help="turns per system; each keeps its fastest")
    parser.add_argument("--no-sequential", dest="sequential", action="store_false", help="skip one-at-a-time")
    # One thread each: on 2 shared cores, two OpenMP threads spin against the HTTP client and other
    # processes and run ~10x slower, which would measure the machine's load rather than the systems.
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU, both sides")
    return parser.parse_args()


if __name__ == "__main__":
    main()
