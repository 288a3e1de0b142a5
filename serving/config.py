"""The server's settings (configs/serve.yaml); the model path and the API key come from the command line."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.config import Config
from common.precision import Dtype


class ServeConfig(Config):
    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = Field(8000, ge=0, le=65535)
    # Name clients pass as `model`; default: the --model argument as given (what vLLM does).
    served_model_name: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 where the device computes it natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX),
    # else fp32 -- common.precision's rule, as in training. float32 scores like `lm_eval --model hf`.
    dtype: Dtype = "auto"
    max_batch_size: int = Field(32, ge=1)  # sequences decoded together; the rest wait for a slot
    max_prefill_tokens: int = Field(8192, ge=1)  # padded prompt tokens admitted in one prefill forward
    max_model_len: int | None = Field(None, ge=2)  # default: the model's max_position_embeddings
    max_n: int = Field(16, ge=1)  # choices per prompt
    max_sequences: int = Field(256, ge=1)  # choices per request: prompts x n
    max_logprobs: int = Field(5, ge=0)  # alternatives per token, OpenAI's limit by default
    # Larger request bodies are answered 413 before they are read. 8 MiB holds max_sequences full
    # 4096-token prompts sent as token ids (~6 MB of compact JSON); raise both together.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Slow clients are cut off: a request's headers are due header_timeout_s after the connection opens
    # (or after its first byte, on a kept-alive connection), else it is closed after a 408; its body is
    # due body_timeout_s after its headers, else 408 and closed.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    body_timeout_s: float = Field(60.0, gt=0, le=3600)
    # Open connections served at once (requests in progress count too): a request on one more is
    # answered 503 and its connection closed. Each connection holds a file descriptor.
    max_connections: int = Field(1000, ge=1)
