"""SNIP (Lee et al., ICLR 2019, arXiv 1810.02340): prune once at initialisation by connection
sensitivity |g * w| on one training batch, then train the fixed sparse network.

Reference: github.com/namhoonlee/snip-public (snip.py: saliency = |grad * weight|, normalised, one
global top-k). `--distribution global` is the paper's single ranking across layers; uniform and
ERK keep those layer counts and rank within each layer (a documented variant).
"""

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method


@register_method("snip")
class SNIP(Method):
    description = "SNIP: prune at init by |grad * w| on one batch, then static sparse training"
    reference = "Lee et al., ICLR 2019; namhoonlee/snip-public snip.py"

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        if ctx.probe_loss is None:
            raise UserError("snip needs the loop's probe_loss service (a training batch)")
        ctx.model.zero_grad(set_to_none=True)
        ctx.probe_loss().backward()
        scores = {n: (p.grad * p).detach().abs() for n, p in self.masks.params.items()}
        ctx.model.zero_grad(set_to_none=True)
        self.prune_by_scores(scores)
        self.log = {"scored_on": "one training batch", "ranking": ctx.distribution}
