"""The learning-rate schedule of Stable LM 2: a plain function of the step.

Linear warmup to `lr`; then a cosine from `lr` towards `min_lr` over the decay phase which, at
`switch_fraction` of that phase, hands over to an inverse square root `a / sqrt(t + b)` whose value
and slope equal the cosine's there (our reading of Stability's `hybrid_cosine_inv_sqrt_2`), floored
at `min_lr`; then an optional linear cooldown to zero over the last `cooldown_steps` steps.
"""

from __future__ import annotations

import math

from training.config import OptimConfig, ScheduleConfig

__all__ = ["lr_at"]


def lr_at(step: int, optim: OptimConfig, schedule: ScheduleConfig) -> float:
    """Learning rate of optimizer step `step` (0-based); steps past the end keep the final value."""
    if step < 0:
        raise ValueError(f"step {step} is negative")
    if step < schedule.warmup_steps:
        return optim.lr * (step + 1) / schedule.warmup_steps
    cooldown_start = schedule.total_steps - schedule.cooldown_steps
    if schedule.cooldown_steps and step >= cooldown_start:
        remaining = max(schedule.total_steps - step, 0) / schedule.cooldown_steps
        return _decay(cooldown_start, optim, schedule) * remaining
    return _decay(min(step, schedule.total_steps), optim, schedule)


def _decay(step: int, optim: OptimConfig, schedule: ScheduleConfig) -> float:
    """The cosine / inverse-square-root phase at `step` (>= warmup_steps)."""
    length = schedule.total_steps - schedule.warmup_steps
    t = step - schedule.warmup_steps
    t_switch = schedule.switch_fraction * length
    half_range = (optim.lr - optim.min_lr) / 2
    if t <= t_switch or half_range == 0:
        return optim.min_lr + half_range * (1 + math.cos(math.pi * t / length))
    value = optim.min_lr + half_range * (1 + math.cos(math.pi * t_switch / length))
    slope = -half_range * math.pi / length * math.sin(math.pi * t_switch / length)
    # a / sqrt(t + b) has slope -value / (2 (t + b)); matching the cosine's slope fixes t + b.
    t_plus_b = value / (-2 * slope)
    return max(optim.min_lr, value * math.sqrt(t_plus_b / (t_plus_b + t - t_switch)))
