"""The sparse layer: masks, keep counts, partitions, prunable selection and the method contract."""

from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context, Method, Params, Plan

__all__ = ["Budget", "Context", "MaskSet", "Method", "Params", "Plan"]
