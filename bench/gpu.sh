#!/usr/bin/env bash
# Training throughput of Stable LM 2 1.6B on one H100/H200: configs/train/1_6b.yaml (seq 4096,
# micro-batch 2 x grad-accum 2, activation checkpointing, ZeRO-1, bf16 with fp32 master weights)
# for 30 timed steps after 5 warm-up steps, on synthetic packed rows with document masking. Prints
# tokens/s/GPU, MFU (PaLM FLOPs, 989 TFLOP/s peak for H100 SXM and H200) and peak memory, with
# PyTorch SDPA and, when flash-attn is installed, with flash-attn's varlen kernel, each with
# activation checkpointing on (as configured) and off.
#
#   bench/gpu.sh                 # on the GPU machine
#   DRY_RUN=1 bench/gpu.sh       # anywhere: the same code on the tiny config for 2 steps (CPU if no GPU)
#   STEPS=50 SET="--set activation_checkpointing=false" bench/gpu.sh
#
# Offline by design: the GPU machine needs a Python with a CUDA build of torch (plus flash-attn for
# the second measurement). DeepSpeed and the few pure-Python packages the model code imports come
# from bench/out/wheels, which `make gpu-wheels` fills on a machine with PyPI access (DeepSpeed is
# built there as a wheel, its ops left to JIT); carry that folder along with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/train/1_6b.yaml}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    CONFIG=configs/train/tiny.yaml STEPS=2 WARMUP=1
fi

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import deepspeed, pydantic, yaml" >/dev/null 2>&1; then
    if [[ ! -d bench/out/wheels ]]; then
        echo "gpu.sh: $PY lacks deepspeed/pydantic/yaml and there is no bench/out/wheels;" \
            "run 'make gpu-wheels' where PyPI is reachable and carry bench/out/wheels" >&2
        exit 1
    fi
    # The venv sees the machine's CUDA torch (and flash-attn); only what is missing comes from wheels.
    "$PY" -m venv --system-site-packages bench/.venv-gpu
    PY=bench/.venv-gpu/bin/python
    "$PY" -m pip install --quiet --no-index --find-links bench/out/wheels deepspeed pydantic pyyaml
fi
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU: CPU run')"
if [[ "${DRY_RUN:-0}" != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu.sh: no CUDA device visible; DRY_RUN=1 runs the tiny config on CPU" >&2
    exit 1
fi
# shellcheck disable=SC2086  # SET holds several words on purpose
exec "$PY" -m bench.gpu_train "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" ${SET:-}
