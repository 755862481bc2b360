"""GraSP (Wang et al., ICLR 2020, arXiv 2002.07376): prune at initialisation to preserve gradient
flow, then train the fixed sparse network.

Score S = -w * (H g) with g the loss gradient and H the Hessian, computed as a Hessian-gradient
product (a second backward through g^T stop_grad(g)); the weights with the highest scores are
removed, i.e. the lowest are kept. Reference: github.com/alecwangcq/GraSP (pruner/GraSP.py): one
global ranking (`--distribution global`); it also divides the logits by a temperature T=200,
which gapbench cannot do since tasks own their loss (documented deviation: T=1).
"""

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method


@register_method("grasp")
class GraSP(Method):
    description = "GraSP: prune at init by -w*(Hg) to keep gradient flow, then static sparse"
    reference = "Wang et al., ICLR 2020; alecwangcq/GraSP pruner/GraSP.py"

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        if ctx.probe_loss is None:
            raise UserError("grasp needs the loop's probe_loss service (a training batch)")
        params = list(self.masks.params.values())
        grads = torch.autograd.grad(ctx.probe_loss(), params)
        g = [x.detach() for x in grads]
        grads = torch.autograd.grad(ctx.probe_loss(), params, create_graph=True)
        z = sum((a * b).sum() for a, b in zip(grads, g))
        hg = torch.autograd.grad(z, params)
        # S = -w * Hg; the highest scores are removed: keep the highest -S = w * Hg.
        keep = {n: p.detach() * h for (n, p), h in zip(self.masks.params.items(), hg)}
        ctx.model.zero_grad(set_to_none=True)
        self.prune_by_scores(keep)
        self.log = {"scored_on": "one training batch (Hessian-gradient product)", "temperature": 1}
