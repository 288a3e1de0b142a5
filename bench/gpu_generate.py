"""One greedy generation of an export with transformers, on the GPU when there is one.

    python -m bench.gpu_generate EXPORT [--prompt TEXT] [--tokens 32]

The last step of bench/gpu.sh's real run: the folder `training export` wrote loads as a
StableLmForCausalLM with its tokenizer, in the dtype it was exported in, and continues a prompt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_generate", description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--prompt", default="The history of the city begins in")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.export)
    model = AutoModelForCausalLM.from_pretrained(args.export, dtype="auto").to(device).eval()
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=args.tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    seconds = time.perf_counter() - start
    new = out[0, ids.shape[1] :]
    print(f"{type(model).__name__}, {model.dtype}, {device}: {len(new)} new tokens in {seconds:.2f} s")
    print(f"prompt: {args.prompt!r}")
    print(f"greedy: {tokenizer.decode(new)!r}")
    print(f"ids:    {new.tolist()}")


if __name__ == "__main__":
    main()
