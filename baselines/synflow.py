"""SynFlow (Tanaka et al., NeurIPS 2020, arXiv 2006.05467): data-free iterative pruning at
initialisation by synaptic flow, then train the fixed sparse network.

Scores |w * dR/dw| with R the sum of the outputs of the network whose weights are replaced by
their absolute values, on an all-ones input, in double precision; 100 rounds prune to densities
(1 - s)^(k/100). Reference: github.com/ganguli-lab/Synaptic-Flow (Pruners/pruners.py SynFlow,
prune.py prune_loop with the exponential schedule, model in eval mode): one global ranking
(`--distribution global`); uniform/ERK rank within each layer (documented variant).
"""

from dataclasses import dataclass

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method, Params


@dataclass(frozen=True)
class SynFlowParams(Params):
    rounds: int = 100  # iterative pruning rounds (exponential schedule)

    def check(self) -> None:
        if self.rounds < 1:
            raise UserError("rounds must be at least 1")


@register_method("synflow")
class SynFlow(Method):
    description = "SynFlow: data-free iterative synaptic-flow pruning at init, then static sparse"
    reference = "Tanaka et al., NeurIPS 2020; ganguli-lab/Synaptic-Flow Pruners/pruners.py"
    Params = SynFlowParams
    params: SynFlowParams

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        if ctx.probe_ones is None:
            raise UserError(
                "synflow needs the loop's probe_ones service (a forward on all-ones input)"
            )
        model = ctx.model
        state = {k: v.clone() for k, v in model.state_dict().items()}
        was_training = model.training
        model.eval()
        model.double()
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        for k in range(1, self.params.rounds + 1):
            model.zero_grad(set_to_none=True)
            out = ctx.probe_ones()
            if not isinstance(out, torch.Tensor):
                raise UserError("synflow needs a task whose forward returns a tensor")
            out.sum().backward()
            scores = {
                n: (p.grad * p).detach().abs().float().masked_fill(~self.masks.masks[n], -1.0)
                for n, p in self.masks.params.items()
            }
            density = (1 - ctx.sparsity) ** (k / self.params.rounds)
            self.prune_by_scores(scores, sparsity=1 - density)
        model.zero_grad(set_to_none=True)
        masks = {n: m.clone() for n, m in self.masks.masks.items()}
        model.float()
        model.load_state_dict(state)  # back to the real initial weights, signs and all
        model.train(was_training)
        for name, mask in masks.items():
            self.masks.set_mask(name, mask, ctx.optimizer)
        self.target_counts = self.masks.counts()
        self.log = {"rounds": self.params.rounds, "schedule": "exponential", "precision": "float64"}
