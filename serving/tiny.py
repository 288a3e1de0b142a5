"""For tests and bench/serve.py: a tiny random StableLM 2 export (the real architecture, small sizes)
and the real server started on it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import torch
from transformers import StableLmConfig, StableLmForCausalLM

import tokenizer
from tokenizer.hf import export_hf


def make_tiny_export(folder: str | Path, seed: int = 0, max_position_embeddings: int = 2048) -> Path:
    """Write config.json, model.safetensors and the tokenizer files of a random model into `folder`."""
    torch.manual_seed(seed)
    config = StableLmConfig(
        vocab_size=tokenizer.PADDED_VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_position_embeddings,
        partial_rotary_factor=0.25,
        rope_theta=10_000,
        use_qkv_bias=True,
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.EOT_ID,
        eos_token_id=tokenizer.EOT_ID,
    )
    model = StableLmForCausalLM(config).eval()
    enc = tokenizer.load()
    with torch.no_grad():
        # A trained model never predicts the padding rows (they are never targets); zero logits keep
        # them below the best real token here too, so greedy decoding means the same with or without
        # the server's mask over ids that have no text.
        model.lm_head.weight[enc.n_vocab :] = 0
        model.lm_head.weight[len(enc.ranks)] = 0
    folder = Path(folder)
    model.save_pretrained(folder)
    export_hf(enc, folder)
    return folder


@contextlib.contextmanager
def running_server(
    export: Path,
    config: Path,
    *,
    env: dict[str, str] | None = None,
    log: IO | None = None,
    timeout: float = 180,
) -> Iterator[str]:
    """`python -m serving` on a free loopback port; yields its URL once /health answers 200, and stops
    it on exit. `log` (a file opened for reading and writing) receives its output, quoted on failure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "serving", "--model", str(export), "--port", str(port)]
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*command, "--config", str(config)],
        env=env or os.environ.copy(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                what = "exited" if proc.poll() is not None else f"not healthy after {timeout:.0f} s"
                raise RuntimeError(f"the server {what}: {_tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def _tail(log: IO | None) -> str:
    if log is None:
        return "(no log)"
    log.seek(0)
    return log.read()[-3000:]
