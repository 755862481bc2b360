"""Learning-rate schedules as a multiplier of the peak LR."""

from __future__ import annotations

import math


def lr_factor(kind: str, position: int, length: int, warmup: int) -> float:
    """Multiplier of the peak LR at `position` of a schedule `length` steps long."""
    if kind == "inverse_sqrt":
        step = position + 1
        w = max(1, warmup)
        return min(step / w, math.sqrt(w / step))
    if warmup and position < warmup:
        return (position + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(1, length - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (position - warmup) / span)))
    raise ValueError(f"unknown lr schedule {kind!r}")
