"""The server's settings (configs/serve.yaml); the model path and the API key come from the command line."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.config import Config


class ServeConfig(Config):
    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = Field(8000, ge=0, le=65535)
    # Name clients pass as `model`; default: the --model argument as given (what vLLM does).
    served_model_name: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: the dtype the export was saved in, which is what transformers' from_pretrained loads, so
    # greedy output matches `generate` on the same folder.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(32, ge=1)  # sequences decoded together; the rest wait for a slot
    max_prefill_tokens: int = Field(8192, ge=1)  # padded prompt tokens admitted in one prefill forward
    max_model_len: int | None = Field(None, ge=2)  # default: the model's max_position_embeddings
    max_n: int = Field(16, ge=1)  # choices per prompt
    max_logprobs: int = Field(5, ge=0)  # alternatives per token, OpenAI's limit by default
