"""python -m serving --model PATH [--host H] [--port P] [--dtype D] [--api-key KEY] [--config FILE]

PATH is an export, a training checkpoint, or a registered MLflow version: models:/NAME/VERSION or
models:/NAME@ALIAS.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import get_args

import uvicorn

from common.config import CONFIG_DIR, ConfigError, load
from common.precision import DeviceError, Dtype
from serving.app import create_app
from serving.batcher import Batcher
from serving.config import ServeConfig
from serving.http_protocol import http_protocol
from serving.metrics import Metrics
from serving.model_path import ModelError, export_to_serve
from tokenizer import TokenizerFileError

API_KEY_ENV = "SERVING_API_KEY"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument(
        "--model",
        required=True,
        help="a Hugging Face StableLmForCausalLM export folder, a training checkpoint, or a registered "
        "MLflow model version: models:/NAME/VERSION or models:/NAME@ALIAS",
    )
    parser.add_argument("--config", default=str(CONFIG_DIR / "serve.yaml"))
    parser.add_argument("--host", help="overrides the config's host (default loopback)")
    parser.add_argument("--port", type=int, help="overrides the config's port")
    parser.add_argument(
        "--dtype",
        choices=get_args(Dtype),
        help="overrides the config's dtype (auto: bf16 where the device computes it natively, else "
        "fp32); float32 for evaluation, where it scores like `lm_eval --model hf`",
    )
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"or ${API_KEY_ENV}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {key: value for key in ("host", "port", "dtype") if (value := getattr(args, key)) is not None}
    scratch = None
    try:
        config = load(args.config, ServeConfig, overrides)
        folder, scratch = export_to_serve(args.model)
        batcher = Batcher(folder, config, Metrics())
    except (ConfigError, DeviceError, ModelError, TokenizerFileError) as e:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if scratch is not None:
        # Only loading reads a converted checkpoint. uvicorn ends the process by re-raising the signal
        # that stopped it, which skips cleanup at exit, so the folder goes as soon as it has been read.
        threading.Thread(target=_remove_when_loaded, args=(batcher, scratch), daemon=True).start()
    app = create_app(batcher, config.served_model_name or args.model, api_key=args.api_key or None)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        http=http_protocol(config.header_timeout_s),
        # uvicorn refuses a request once the connections, its own included, reach its limit.
        limit_concurrency=config.max_connections + 1,
        log_level="info",
    )
    return 0


def _remove_when_loaded(batcher: Batcher, folder: Path) -> None:
    batcher.wait_loaded()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
