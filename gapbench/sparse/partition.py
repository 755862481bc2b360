"""How prunable tensors are split into kappa partitions for GaP.

The paper's Transformer partitions are consecutive layers with equal layer counts (official code:
profiles/3_step_sequential_gap_sp_0.9/*.yaml, fairseq/ddp_trainer.py). For CNNs, whose later
stages hold most parameters, `params` balancing cuts the forward order into consecutive groups
whose largest parameter count is as small as possible (an optimal contiguous split).
"""

from __future__ import annotations

from collections.abc import Sequence

from gapbench.errors import UserError

BALANCES = ("params", "layers")


def _fits(sizes: Sequence[int], kappa: int, cap: int) -> bool:
    """Can `sizes` be cut into at most kappa consecutive groups of sum <= cap?"""
    groups, current = 1, 0
    for size in sizes:
        if size > cap:
            return False
        if current + size > cap:
            groups, current = groups + 1, 0
        current += size
    return groups <= kappa


def min_max_split(sizes: Sequence[int], kappa: int) -> list[int]:
    """Start indices of kappa non-empty consecutive groups minimising the largest group's sum.

    Binary search on the cap (exact for integers), then a greedy cut that leaves enough items for
    the remaining groups, so no group is empty.
    """
    lo, hi = max(sizes), sum(sizes)
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(sizes, kappa, mid):
            hi = mid
        else:
            lo = mid + 1
    starts, current = [0], 0
    for i, size in enumerate(sizes):
        groups_left = kappa - len(starts)
        items_left = len(sizes) - i
        if i > starts[-1] and (current + size > lo or items_left == groups_left):
            if groups_left > 0:
                starts.append(i)
                current = 0
        current += size
    return starts


def consecutive_partitions(
    names: Sequence[str], sizes: Sequence[int], kappa: int, balance: str = "params"
) -> list[list[str]]:
    """Cut `names` (forward order) into kappa consecutive, non-empty groups.

    balance="params": the largest group's parameter count is minimal; balance="layers": equal
    numbers of tensors (the official Transformer rule).
    """
    if kappa < 1 or kappa > len(names):
        raise UserError(
            f"GaP partitions={kappa} must be between 1 and the {len(names)} prunable tensors"
        )
    if balance not in BALANCES:
        raise UserError(f"GaP balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    if balance == "layers":
        starts = [round(i * len(names) / kappa) for i in range(kappa)]
    else:
        starts = min_max_split(list(sizes), kappa)
    bounds = [*starts, len(names)]
    return [list(names[bounds[i] : bounds[i + 1]]) for i in range(kappa)]


def partitions_by_prefix(names: Sequence[str], groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """One partition per entry of `groups` (module-name prefixes); every name must match one.

    Names that match no prefix join the first partition (stems and small leftovers)."""
    parts: list[list[str]] = [[] for _ in groups]
    for name in names:
        for k, prefixes in enumerate(groups):
            if any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes):
                parts[k].append(name)
                break
        else:
            parts[0].append(name)
    if any(not p for p in parts):
        empty = [list(groups[k]) for k, p in enumerate(parts) if not p]
        raise UserError(f"GaP partition prefixes {empty} match no prunable tensor")
    return parts


def check_partitions(partitions: list[list[str]], names: Sequence[str]) -> None:
    """Every prunable tensor in exactly one partition."""
    flat = [n for p in partitions for n in p]
    if sorted(flat) != sorted(names) or len(set(flat)) != len(flat):
        raise ValueError("partitions must contain every prunable tensor exactly once")
