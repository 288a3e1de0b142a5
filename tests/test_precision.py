"""Precision by hardware: `precision: auto` trains, and `dtype: auto` serves and evaluates, in bf16
only where the device computes it natively.

This machine may have AVX512-BF16 or AMX; the flags of other CPUs are passed in (or stand in for this
one's) so that the rule and a whole run on an "AVX2-only CPU" are tested here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import micro_config, write_config
from mlflow import MlflowClient

import common.precision
from common.config import CONFIG_DIR, ConfigError, load
from common.files import read_json
from common.precision import DeviceError, pick_device, pick_dtype, resolve_precision
from training import checkpoint
from training.__main__ import main
from training.config import TrainConfig
from training.deepspeed_engine import deepspeed_config
from training.hf import load_hf
from training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("mlflow_store")

CPU = torch.device("cpu")
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})  # a laptop or an older server: no bf16 dot products
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_tile", "amx_bf16"}


@pytest.fixture(name="uncapped")
def uncapped_fixture(monkeypatch):
    """A stand-in CPU runs its own kernels: this process's ONEDNN_MAX_CPU_ISA (CI runs the numerical
    tests a second time under AVX2) is not the stand-in's."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


@pytest.mark.parametrize(
    "flags, precision", [(AVX2, "fp32"), (AVX512_BF16, "bf16"), (AMX, "bf16")], ids=["avx2", "avx512", "amx"]
)
@pytest.mark.usefixtures("uncapped")
def test_auto_trains_in_bf16_only_on_a_cpu_with_native_bf16(flags, precision):
    cfg = micro_config(Path("unused"), Path("unused"), precision="auto")
    resolved = resolve_precision(cfg.precision, CPU, flags)
    assert resolved.name == precision and resolved.warning is None
    assert deepspeed_config(cfg, 1, resolved)["bf16"]["enabled"] == (precision == "bf16")


@pytest.mark.parametrize("cap, native", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True)])
def test_a_onednn_isa_cap_below_bf16_makes_auto_pick_fp32(cap, native, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # how a user emulates an older CPU on a newer one
    assert resolve_precision("auto", CPU, AMX).name == ("bf16" if native else "fp32")


def test_explicit_precision_is_kept_and_bf16_on_avx2_warns_at_start(tmp_path, shards, monkeypatch, capsys):
    assert resolve_precision("fp32", CPU, AMX).name == "fp32"
    monkeypatch.setattr(common.precision, "cpu_flags", lambda: AVX2)
    trainer = Trainer(micro_config(tmp_path, shards, precision="bf16"))
    assert trainer.precision.name == "bf16"
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "precision: bf16 (bf16 as configured)"
    assert "warning: bf16 requested, but this CPU has no native bf16" in captured.err


def test_a_config_with_bf16_is_told_to_use_precision(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("schedule: {warmup_steps: 1, total_steps: 4}\nbf16: true\n")
    with pytest.raises(ConfigError, match=r"bf16: .*bf16 was replaced by precision: auto\|bf16\|fp32"):
        load(path, TrainConfig)


def test_every_train_config_says_precision_auto():
    paths = sorted((CONFIG_DIR / "train").glob("*.yaml"))
    assert paths
    for path in paths:
        assert load(path, TrainConfig).precision == "auto"
        assert "\nprecision: auto" in path.read_text(), path


def test_auto_on_an_avx2_cpu_trains_checkpoints_logs_and_exports_fp32(
    tmp_path,
    shards,
    mlflow_store,
    monkeypatch,
    capsys,
):
    """The reported case end to end: an AVX2-only CPU and the default `auto` train in fp32."""
    monkeypatch.setattr(common.precision, "cpu_flags", lambda: AVX2)
    schedule = {"warmup_steps": 1, "total_steps": 2}
    cfg = micro_config(tmp_path, shards, schedule=schedule, precision="auto")
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("precision: fp32 (auto: this CPU has no native bf16")

    folder = checkpoint.resolve(cfg.checkpoint.dir)
    assert read_json(folder / "config.json")["precision"] == "fp32"
    weights = checkpoint.model_state_dict(folder)
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert not list(folder.glob("bf16_*"))  # DeepSpeed's plain ZeRO-1 optimizer, not its BF16_Optimizer
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.log.experiment).experiment_id])
    assert run.data.params["precision"] == "auto" and run.data.params["precision.resolved"] == "fp32"

    assert main(["export", str(cfg.checkpoint.dir), str(tmp_path / "export")]) == 0
    _, exported = load_hf(tmp_path / "export")
    assert {t.dtype for t in exported.values()} == {torch.float32}
    assert read_json(tmp_path / "export" / "config.json")["torch_dtype"] == "float32"
    assert torch.equal(exported["lm_head.weight"], weights["lm_head.weight"])


@pytest.mark.usefixtures("uncapped")
def test_dtype_auto_is_bf16_only_where_the_device_computes_it_natively():
    """Serving's and evaluation's `dtype` follows training's rule; an explicit bf16 says it will be slow."""
    dtype, why = pick_dtype("auto", CPU, flags=AVX2)
    assert dtype == torch.float32 and "no native bf16" in why
    dtype, why = pick_dtype("auto", CPU, flags=AMX)
    assert dtype == torch.bfloat16 and "natively" in why
    assert pick_dtype("float32", CPU, flags=AMX) == (torch.float32, "float32 as set")
    dtype, why = pick_dtype("bfloat16", CPU, flags=AVX2)
    assert dtype == torch.bfloat16 and "no native bf16" in why


def test_device_auto_is_cuda_where_torch_sees_it_and_cuda_is_refused_where_it_does_not():
    assert pick_device("cpu") == CPU
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda was asked for"):
            pick_device("cuda")
