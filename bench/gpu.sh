#!/usr/bin/env bash
# Stable LM 2 1.6B on one H100/H200, as one prepared script (GPU time comes in short leases):
#   1. the machine: GPU, driver, torch, CUDA;
#   2. FlexAttention against SDPA in bf16 on the GPU, forward and backward (tests/test_flex_attention.py);
#   3. throughput of configs/train/1_6b.yaml (seq 4096, micro-batch 2 x grad-accum 2, ZeRO-1, bf16
#      with fp32 master weights, fused loss) per attention kernel, activation checkpointing on and off,
#      compiled blocks: tokens/s/GPU, MFU (PaLM FLOPs over 989 TFLOP/s, the dense bf16 peak of the
#      H100 SXM and of the H200, which has the same chip), peak memory, the loss at every step of the
#      first variant (bench/gpu_train.py);
#   4. a real run: the sample shards (`make data`), 30 steps of the 1.6B config with a checkpoint,
#      a resume to step 50, the export, and one greedy generation of the export with transformers.
#
#   bench/gpu.sh                 # on the GPU machine; figures and logs also go to $OUT (bench/out/gpu)
#   DRY_RUN=1 bench/gpu.sh       # anywhere: the same steps on the tiny config (CPU if no GPU)
#   STEPS=50 PARTS="bench" bench/gpu.sh
#
# Offline by design: the GPU machine has a Python with a CUDA build of torch, transformers and
# tiktoken but lacks DeepSpeed, pydantic, MLflow and a few small packages; `make gpu-wheels` fills
# bench/out/wheels with them for that Python (DeepSpeed built as a wheel, its ops left to JIT). Carry
# bench/out/wheels and data/shards/sample (`make data`) with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/train/1_6b.yaml}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-2}
RUN_STEPS=${RUN_STEPS:-30}
RESUME_STEPS=${RESUME_STEPS:-50}
RUN_WARMUP=${RUN_WARMUP:-10}
PARTS=${PARTS:-"tests bench run"}
OUT=${OUT:-bench/out/gpu}
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    CONFIG=configs/train/tiny.yaml STEPS=2 WARMUP=1 RUN_STEPS=2 RESUME_STEPS=4 RUN_WARMUP=1
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import deepspeed, pydantic, mlflow, fastokens" >/dev/null 2>&1; then
    if [[ ! -d bench/out/wheels ]]; then
        echo "gpu.sh: $PY lacks deepspeed/pydantic/mlflow and there is no bench/out/wheels;" \
            "run 'make gpu-wheels' where PyPI is reachable and carry bench/out/wheels" >&2
        exit 1
    fi
    # Only what the machine lacks, beside (not over) its own torch and CUDA libraries.
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target bench/out/gpu-site bench/out/wheels/*.whl
    export PYTHONPATH="$PWD/bench/out/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi

part() { [[ " $PARTS " == *" $1 "* ]]; }
say() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

say machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU: CPU run')"
if [[ "${DRY_RUN:-0}" != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu.sh: no CUDA device visible; DRY_RUN=1 runs the tiny config on CPU" >&2
    exit 1
fi

if part tests; then
    say "FlexAttention against SDPA (bf16 on the GPU, fp32 forward on CPU)"
    "$PY" -m pytest -q -p no:cacheprovider --noconftest tests/test_flex_attention.py 2>&1 | tee "$OUT/tests.log" \
        || echo "gpu.sh: the FlexAttention tests failed (above); going on"
fi

if part bench; then
    say "throughput: $CONFIG, $STEPS timed steps after $WARMUP per variant"
    # A short warm-up of the learning rate, so that 20 steps show the loss falling.
    # shellcheck disable=SC2086  # SET holds several words on purpose
    "$PY" -m bench.gpu_train "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" \
        --set schedule.warmup_steps=5 ${SET:-} 2>&1 | tee "$OUT/throughput.log"
fi

if part run; then
    if [[ ! -f data/shards/sample/manifest.json ]]; then
        echo "gpu.sh: no data/shards/sample; run 'make data' and carry data/shards/sample" >&2
        exit 1
    fi
    # Checkpoints of the 1.6B model are 23 GB (bf16 weights, fp32 master weights, Adam's moments):
    # in memory when /dev/shm holds two of them, else on disk (never under $OUT, which is sent back).
    if [[ $(df --output=avail -k /dev/shm 2>/dev/null | tail -1) -gt 60000000 ]]; then RUN=/dev/shm/gpu-run; else RUN=/tmp/gpu-run; fi
    df -h "$(dirname "$RUN")" | tail -1
    rm -rf "$RUN"
    # MLflow's file store: its sqlite store would need SQLAlchemy, Alembic and cryptography carried too.
    export MLFLOW_TRACKING_URI="file://$RUN/mlruns" MLFLOW_ALLOW_FILE_STORE=true
    mkdir -p "$RUN/mlruns"
    set_run=()
    for item in data.shards=data/shards/sample "checkpoint.dir=$RUN/checkpoints" checkpoint.keep_last=1 \
        checkpoint.interval=1000 "schedule.warmup_steps=$RUN_WARMUP" log.interval=5 eval.batches=2 eval.suite=null; do
        set_run+=(--set "$item")
    done
    say "real run: $CONFIG on the sample shards, steps 1-$RUN_STEPS, checkpoint"
    "$PY" -m training train "$CONFIG" "${set_run[@]}" --set "schedule.total_steps=$RUN_STEPS" 2>&1 | tee "$OUT/run.log"
    say "resume to step $RESUME_STEPS"
    "$PY" -m training train "$CONFIG" "${set_run[@]}" --set "schedule.total_steps=$RESUME_STEPS" 2>&1 | tee -a "$OUT/run.log"
    say export
    "$PY" -m training export "$RUN/checkpoints" "$RUN/export" 2>&1 | tee -a "$OUT/run.log"
    say "greedy generation of the export with transformers"
    "$PY" -m bench.gpu_generate "$RUN/export" 2>&1 | tee -a "$OUT/run.log"
    rm -rf "$RUN"
fi
say done
