"""The statistics every report shares: one 95% interval rule and one digits rule, so the
leaderboard, the budget axis and the board checks can never print different numbers for the
same seeds."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats


def mean_std_half(values: list[float]) -> tuple[float, float, float]:
    """(mean, std, half-width of the 95% Student-t interval of the mean); nan below 2 values."""
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    std = float(pd.Series(values).std(ddof=1))
    return mean, std, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, std, low, high): the 95% Student-t interval of the mean (nan below 2 values)."""
    mean, std, half = mean_std_half(values)
    return mean, std, mean - half, mean + half


def metric_digits(means: list[float]) -> int:
    """Decimal places for a metric: [0, 1] metrics (mIoU-style) get a third digit."""
    return 3 if max(abs(m) for m in means) <= 1.0 else 2
