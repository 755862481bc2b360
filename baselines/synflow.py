"""SynFlow (Tanaka et al., NeurIPS 2020, arXiv 2006.05467): data-free iterative pruning at
initialisation by synaptic flow, then train the fixed sparse network.

Scores |w * dR/dw| with R the sum of the outputs of the network whose weights are replaced by
their absolute values, on an all-ones input; 100 rounds prune to densities (1 - s)^(k/100).
Reference: github.com/ganguli-lab/Synaptic-Flow (Pruners/pruners.py SynFlow, prune.py prune_loop
with the exponential schedule, model in eval mode, float32: its `model.double()` is commented
out): one global ranking (`--distribution global`); uniform/ERK rank within each layer (a
documented variant). `precision=float64` scores in double precision. Like the reference (whose
`--prune-residual` concerns its parameterised Identity shortcuts, not convolutions), 1x1
shortcut convolutions are pruned like every other conv. Under `--pattern nm` each round keeps
the same number of weights in every group of M, from M down to N over the rounds (the exponential
schedule rounded per group), so later rounds keep pruning.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method, Params


@dataclass(frozen=True)
class SynFlowParams(Params):
    rounds: int = 100  # iterative pruning rounds (exponential schedule)
    precision: Literal["float32", "float64"] = "float32"  # reference: float32

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
        dtype = torch.float64 if self.params.precision == "float64" else torch.float32
        model.to(dtype)
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
            if ctx.pattern.kind == "nm":
                self._prune_groups(scores, 1 - density)
            else:
                self.prune_by_scores(scores, sparsity=1 - density)
        model.zero_grad(set_to_none=True)
        masks = {n: m.clone() for n, m in self.masks.masks.items()}
        model.float()
        model.load_state_dict(state)  # back to the real initial weights, signs and all
        model.train(was_training)
        for name, mask in masks.items():
            self.masks.set_mask(name, mask, ctx.optimizer)
        self.target_counts = self.masks.counts()
        self.log = {
            "rounds": self.params.rounds,
            "schedule": "exponential",
            "precision": self.params.precision,
        }

    def _prune_groups(self, scores: dict[str, torch.Tensor], sparsity: float) -> None:
        """N:M: every group keeps M - round((M - N) * sparsity / target) of its highest scores,
        so the rounds go from M:M to N:M as the exponential schedule does (the last is N:M)."""
        pattern = self.ctx.pattern
        kept = pattern.m - round((pattern.m - pattern.n) * sparsity / self.ctx.sparsity)
        for name in self.masks.names:
            groups = torch.full((self.masks.numel(name) // pattern.m,), kept)
            mask = pattern.select_per_group(scores[name], groups)
            self.masks.set_mask(name, mask, self.ctx.optimizer)
