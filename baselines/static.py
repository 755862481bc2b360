"""Static sparse training: random masks at init, never changed — the floor every dynamic method
must beat (the "Static" baseline of Evci et al., 2020)."""

from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method


@register_method("static")
class StaticSparse(Method):
    description = "random sparse masks at init, fixed for the whole run"
    reference = "Static baseline, Evci et al., ICML 2020 (arXiv 1911.11134)"
    # A from-scratch method sees only random weights: a global magnitude threshold means nothing.
    distributions = ("uniform", "erk")

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.draw_random_masks()
