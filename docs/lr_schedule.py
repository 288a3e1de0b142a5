"""Draw docs/lr_schedule.png: the learning rate of configs/train/1_6b.yaml over its 540k steps.

python docs/lr_schedule.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.config import CONFIG_DIR, load  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.schedule import lr_at  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    cfg = load(CONFIG_DIR / "train" / "1_6b.yaml", TrainConfig)
    # Stability cooled down linearly to zero from step 420k; the same run with cooldown_steps set.
    cooled = cfg.schedule.model_copy(update={"cooldown_steps": cfg.schedule.total_steps - 420_000})
    steps = range(0, cfg.schedule.total_steps + 1, 500)
    sched = cfg.schedule
    switch = sched.warmup_steps + sched.switch_fraction * (sched.total_steps - sched.warmup_steps)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(steps, [lr_at(s, cfg.optim, sched) for s in steps], label="1_6b.yaml (no cooldown)")
    ax.plot(steps, [lr_at(s, cfg.optim, cooled) for s in steps], "--", label="cooldown_steps: 120000")
    ax.axvline(sched.warmup_steps, color="grey", lw=0.8, ls=":")
    ax.axvline(switch, color="grey", lw=0.8, ls=":")
    ax.axhline(cfg.optim.min_lr, color="grey", lw=0.8, ls=":")
    ax.annotate("end of warmup", (sched.warmup_steps, cfg.optim.lr), xytext=(20_000, 9.5e-4))
    ax.annotate("cosine -> a/sqrt(t+b)", (switch, 3.2e-4), xytext=(switch + 8_000, 6e-4))
    ax.annotate("min_lr floor", (0, cfg.optim.min_lr), xytext=(20_000, 1.2e-4))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("Stable LM 2 1.6B learning-rate schedule (training/schedule.py)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "lr_schedule.png")


if __name__ == "__main__":
    main()
