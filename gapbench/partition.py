"""How prunable tensors are split into kappa partitions for GaP."""

from __future__ import annotations

from collections.abc import Sequence

from gapbench.errors import UserError


def consecutive_partitions(
    names: Sequence[str], sizes: Sequence[int], kappa: int, balance: str = "params"
) -> list[list[str]]:
    """Cut `names` (forward order) into kappa consecutive, non-empty groups.

    balance="params": each group's parameter count as close as possible to total/kappa (better for
    CNNs whose later stages are heavier); balance="layers": equal numbers of tensors.
    """
    if kappa < 1 or kappa > len(names):
        raise UserError(
            f"GaP partitions={kappa} must be between 1 and the {len(names)} prunable tensors"
        )
    if balance == "layers":
        bounds = [round(i * len(names) / kappa) for i in range(kappa + 1)]
        return [list(names[bounds[i] : bounds[i + 1]]) for i in range(kappa)]
    total = sum(sizes)
    groups: list[list[str]] = [[] for _ in range(kappa)]
    cumulative = 0
    g = 0
    for i, (name, size) in enumerate(zip(names, sizes)):
        remaining_tensors = len(names) - i
        remaining_groups = kappa - g - 1
        # Move to the next group when this one reached its share, or when every later group
        # still needs one tensor of its own.
        if groups[g] and g < kappa - 1:
            target = total * (g + 1) / kappa
            over = abs(cumulative + size / 2 - target) < size / 2 or cumulative + size / 2 > target
            if over or remaining_tensors <= remaining_groups:
                g += 1
        groups[g].append(name)
        cumulative += size
    if any(not grp for grp in groups):
        return consecutive_partitions(names, sizes, kappa, "layers")
    return groups


def check_partitions(partitions: list[list[str]], names: Sequence[str]) -> None:
    """Every prunable tensor in exactly one partition."""
    flat = [n for p in partitions for n in p]
    if sorted(flat) != sorted(names) or len(set(flat)) != len(flat):
        raise ValueError("partitions must contain every prunable tensor exactly once")
