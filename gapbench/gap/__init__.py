"""Scheduled Grow-and-Prune: the method (method.py) and P-GaP's merge (merge.py)."""

from gapbench.gap.method import GaP, GaPParams

__all__ = ["GaP", "GaPParams"]
