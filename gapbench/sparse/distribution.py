"""Per-layer keep counts for a target sparsity.

Every function returns integer keep counts whose sum is exactly round((1 - s) * N), where N is the
number of prunable weights; that is what makes "achieved sparsity equals the target" checkable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gapbench.errors import UserError

DISTRIBUTIONS = ("uniform", "erk", "global")


def total_keep(sizes: Sequence[int], sparsity: float) -> int:
    """The exact number of weights that stay alive at `sparsity` over all prunable tensors."""
    return round((1.0 - sparsity) * sum(sizes))


def _round_to_total(ideal: Sequence[float], caps: Sequence[int], total: int) -> list[int]:
    """Largest-remainder rounding of `ideal` with 0 <= k_i <= caps_i and sum(k) == total."""
    counts = [min(cap, max(0, math.floor(x))) for x, cap in zip(ideal, caps)]
    short = total - sum(counts)
    order = sorted(range(len(ideal)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    while short > 0:
        progressed = False
        for i in order:
            if short == 0:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
                short -= 1
                progressed = True
        if not progressed:
            raise ValueError("cannot reach the requested total within the layer sizes")
    return counts


def uniform_counts(sizes: Sequence[int], sparsity: float) -> list[int]:
    """Every layer at the same density (up to one weight of rounding)."""
    density = 1.0 - sparsity
    return _round_to_total([density * n for n in sizes], list(sizes), total_keep(sizes, sparsity))


def _erk_score(shape: Sequence[int]) -> float:
    # Erdős–Rényi-Kernel (Evci et al. 2020): sum of dims over product of dims.
    return sum(shape) / math.prod(shape)


def erk_counts(shapes: Sequence[Sequence[int]], sparsity: float) -> list[int]:
    """ERK densities solved so the total matches exactly; layers that would exceed 1 become dense."""
    sizes = [math.prod(s) for s in shapes]
    total = total_keep(sizes, sparsity)
    scores = [_erk_score(s) for s in shapes]
    dense: set[int] = set()
    while True:
        budget = total - sum(sizes[i] for i in dense)
        weight = sum(scores[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = budget / weight if weight > 0 else 0.0
        over = {i for i in range(len(sizes)) if i not in dense and eps * scores[i] > 1.0}
        if not over:
            break
        dense |= over
    ideal = [
        float(sizes[i]) if i in dense else eps * scores[i] * sizes[i] for i in range(len(sizes))
    ]
    return _round_to_total(ideal, sizes, total)


def global_counts_total(scores: Sequence[torch.Tensor], total: int) -> list[int]:
    """Keep the `total` globally largest scores (ties by position); per-layer counts.

    Scores are magnitudes |w|; callers mark dead entries with -1 so they rank last."""
    sizes = [s.numel() for s in scores]
    if total <= 0:
        return [0] * len(sizes)
    flat = torch.cat([s.detach().flatten().float().cpu() for s in scores])
    order = torch.sort(flat, descending=True, stable=True).indices[:total]
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.bincount(owner[order], minlength=len(sizes)).tolist()


def global_counts(scores: Sequence[torch.Tensor], sparsity: float) -> list[int]:
    """One magnitude threshold across all layers at `sparsity`."""
    return global_counts_total(scores, total_keep([s.numel() for s in scores], sparsity))


def keep_counts(
    distribution: str,
    shapes: Sequence[Sequence[int]],
    sparsity: float,
    scores: Sequence[torch.Tensor] | None = None,
) -> list[int]:
    """Dispatch by name; `scores` (|w|, -1 where dead) are needed only for `global`."""
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"sparsity {sparsity} is outside [0, 1); pass e.g. --sparsity 0.9")
    if distribution == "uniform":
        return uniform_counts([math.prod(s) for s in shapes], sparsity)
    if distribution == "erk":
        return erk_counts(shapes, sparsity)
    if distribution == "global":
        if scores is None:
            raise ValueError("global distribution needs the weights' magnitudes")
        return global_counts(scores, sparsity)
    raise UserError(
        f"unknown distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}"
    )
