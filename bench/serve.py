"""Generated tokens/s of the server with 16 concurrent clients, against the same requests run one after
another through transformers `generate` on the same export (what a user would otherwise do).

    python -m bench.serve [EXPORT]   # default runs/tiny/export; a tiny random export when that is missing

Both sides decode greedily to the same max_tokens and stop at <|endoftext|>, so they generate the same
tokens; the script checks that and prints both rates and their ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from transformers import StableLmForCausalLM

import tokenizer
from bench.exports import export_or_tiny
from harness.server import running_server

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPORT = ROOT / "runs" / "tiny" / "export"
CLIENTS = 16
REQUESTS_PER_CLIENT = 2
MAX_TOKENS = 48
ROUNDS = 2
NAME = "bench"
SUBJECTS = ["the sea", "a compiler", "Paris", "tokenizers", "the moon", "gradient descent", "bread", "rain"]
PROMPTS = [
    f"{opening} {subject}{ending}"
    for opening in ("Here is a short story about", "Write three facts about", "Tell me about")
    for subject in SUBJECTS
    for ending in (".", ":", " in one paragraph.")
][: CLIENTS * REQUESTS_PER_CLIENT]


async def run_clients(url: str) -> tuple[dict[str, tuple[str, int]], float]:
    """CLIENTS workers, each sending its REQUESTS_PER_CLIENT requests one after another; per prompt the
    completion's text and token count."""
    outputs: dict[str, tuple[str, int]] = {}

    async def worker(client: httpx.AsyncClient, prompts: list[str]) -> None:
        for prompt in prompts:
            body = {"model": NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
            response = await client.post(f"{url}/v1/completions", json=body)
            response.raise_for_status()
            result = response.json()
            outputs[prompt] = (result["choices"][0]["text"], result["usage"]["completion_tokens"])

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=CLIENTS)) as client:
        await worker(client, PROMPTS[:1])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, PROMPTS[i::CLIENTS]) for i in range(CLIENTS)))
        return outputs, time.perf_counter() - started


def run_generate(model: StableLmForCausalLM, enc: tokenizer.Arcade100k) -> tuple[dict[str, list[int]], float]:
    def generate(prompt: str) -> list[int]:
        ids = torch.tensor([enc.encode(prompt)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.EOT_ID,
        )
        return out[0, ids.shape[1] :].tolist()

    generate(PROMPTS[0])  # warm-up
    started = time.perf_counter()
    outputs = {prompt: generate(prompt) for prompt in PROMPTS}
    return outputs, time.perf_counter() - started


def main() -> None:
    export = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_EXPORT
    with tempfile.TemporaryDirectory() as tmp:
        export = export_or_tiny(export, Path(tmp))
        config = Path(tmp) / "serve.yaml"
        config.write_text(f"served_model_name: {NAME}\ndevice: cpu\nmax_batch_size: {CLIENTS}\n")
        enc = tokenizer.load()
        # Both sides run the export in its own dtype, as from_pretrained does by default.
        model = StableLmForCausalLM.from_pretrained(export).eval()
        dtype = str(model.dtype).removeprefix("torch.")
        with running_server(export, config, args=["--dtype", dtype]) as url:
            # Alternate the two sides and keep each one's best round, so that load from other processes
            # on the machine does not favour either.
            rounds = [(asyncio.run(run_clients(url)), run_generate(model, enc)) for _ in range(ROUNDS)]
    served, served_s = min((r[0] for r in rounds), key=lambda run: run[1])
    generated, generate_s = min((r[1] for r in rounds), key=lambda run: run[1])

    served_tokens = sum(n for _, n in served.values())
    generate_tokens = sum(len(ids) for ids in generated.values())
    same = sum(
        served[p] == (enc.decode([t for t in ids if t != enc.eot_id]), len(ids))
        for p, ids in generated.items()
    )
    threads = torch.get_num_threads()
    print(f"export: {export} ({model.dtype}, {len(PROMPTS)} requests, max_tokens {MAX_TOKENS}, greedy)")
    print(f"{threads} torch threads; best of {ROUNDS} alternating rounds")
    for name, tokens, seconds in (
        (f"server, {CLIENTS} concurrent clients", served_tokens, served_s),
        ("transformers generate, one by one", generate_tokens, generate_s),
    ):
        print(f"{name:36s} {tokens} tokens in {seconds:.2f}s = {tokens / seconds:.0f} tok/s")
    note = ""
    if model.dtype != torch.float32 and same < len(PROMPTS):
        note = " (in 16-bit, batched and one-at-a-time logits round differently, which can flip near-ties)"
    print(f"identical outputs: {same}/{len(PROMPTS)}{note}")
    ratio = (served_tokens / served_s) / (generate_tokens / generate_s)
    print(f"ratio (server / generate): {ratio:.2f}x")


if __name__ == "__main__":
    main()
