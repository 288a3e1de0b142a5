"""The learning-rate schedule: warmup, cosine handing over to an inverse square root, floor, cooldown."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from common.config import CONFIG_DIR, load
from training.config import OptimConfig, ScheduleConfig, TrainConfig
from training.schedule import lr_at

OPTIM = OptimConfig(lr=1e-3, min_lr=1e-4)


def test_warmup_rises_linearly_to_the_peak():
    sched = ScheduleConfig(warmup_steps=100, total_steps=1000)
    lrs = [lr_at(s, OPTIM, sched) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-3)
    assert all(b - a == pytest.approx(1e-5) for a, b in zip(lrs, lrs[1:], strict=False))


def test_decay_is_monotone_smooth_and_floored():
    sched = ScheduleConfig(warmup_steps=10, total_steps=10_000, switch_fraction=0.3)
    lrs = [lr_at(s, OPTIM, sched) for s in range(10, 10_000)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))
    assert min(lrs) >= OPTIM.min_lr
    # No jump anywhere: neighbouring steps differ by much less than the cosine's steepest step.
    steepest = (OPTIM.lr - OPTIM.min_lr) / 2 * math.pi / 9990
    assert max(a - b for a, b in zip(lrs, lrs[1:], strict=False)) <= steepest * 1.01


def test_inverse_sqrt_continues_the_cosine_in_value_and_slope():
    sched = ScheduleConfig(warmup_steps=0, total_steps=10_000, switch_fraction=0.5)
    switch = 5000
    before, at, after = (lr_at(s, OPTIM, sched) for s in (switch - 1, switch, switch + 1))
    assert after - at == pytest.approx(at - before, rel=1e-3)
    # Past the switch the decay is a / sqrt(t + b): 1 / lr^2 grows linearly in t.
    inv_sq = [lr_at(s, OPTIM, sched) ** -2 for s in (6000, 7000, 8000)]
    assert inv_sq[2] - inv_sq[1] == pytest.approx(inv_sq[1] - inv_sq[0], rel=1e-9)
    # ...and it decays more slowly than the cosine would have.
    cosine = OPTIM.min_lr + (OPTIM.lr - OPTIM.min_lr) / 2 * (1 + math.cos(math.pi * 0.8))
    assert lr_at(8000, OPTIM, sched) > cosine


def test_cooldown_goes_linearly_to_zero_from_the_scheduled_value():
    plain = ScheduleConfig(warmup_steps=10, total_steps=1000)
    cooled = ScheduleConfig(warmup_steps=10, total_steps=1000, cooldown_steps=200)
    assert lr_at(799, OPTIM, cooled) == lr_at(799, OPTIM, plain)
    start = lr_at(800, OPTIM, plain)
    assert lr_at(800, OPTIM, cooled) == pytest.approx(start)
    assert lr_at(900, OPTIM, cooled) == pytest.approx(start / 2)
    assert lr_at(999, OPTIM, cooled) == pytest.approx(start / 200)
    assert lr_at(1000, OPTIM, cooled) == 0.0


def test_stability_config_reaches_the_lr_their_cooldown_started_from():
    cfg = load(CONFIG_DIR / "train" / "1_6b.yaml", TrainConfig)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.schedule.total_steps) == (1e-3, 1e-4, 540_000)
    assert lr_at(420_000, cfg.optim, cfg.schedule) == pytest.approx(2.529e-4, rel=0.02)


def test_bad_schedules_are_rejected():
    with pytest.raises(ValidationError, match="no decay phase"):
        ScheduleConfig(warmup_steps=600, cooldown_steps=400, total_steps=1000)
    with pytest.raises(ValidationError, match="above lr"):
        OptimConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="negative"):
        lr_at(-1, OPTIM, ScheduleConfig(warmup_steps=1, total_steps=10))
