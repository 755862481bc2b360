"""Dense reference: no masks. Every sparse method is read against it."""

from gapbench.registry import register_method
from gapbench.sparse.method import Method


@register_method("dense")
class Dense(Method):
    description = "dense training, no pruning (the reference)"
    reference = "the dense model every sparse method is compared with"
    sparse = False
