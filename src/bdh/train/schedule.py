"""Learning-rate schedules: linear warmup, then cosine decay to `min_lr` or a constant.

The rate is a pure function of progress, so the schedule has no state of its own to
save: resuming at step s gives the same rate as a straight run.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    total_steps: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    schedule: str,
    progress: float | None = None,
) -> float:
    """Learning rate for optimizer step `step` (0-based).

    `progress` in [0, 1] overrides step / total_steps for the decay (used with a time
    budget, where the number of steps is not known in advance); warmup is always by step.
    """
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if progress is None:
        span = max(total_steps - warmup_steps - 1, 1)  # the last step runs at min_lr
        progress = (step - warmup_steps) / span
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
