"""SET (Mocanu et al., 2018): drop the smallest weights, regrow the same number at random.

Like RigL but growth is uniform among inactive weights, drawn from a generator seeded by the run's
seed and the step (identical on every rank, reproducible after a resume). The drop fraction is the
paper's constant zeta; `decay=cosine` uses RigL's schedule instead.
"""

from __future__ import annotations

import torch

from baselines.rigl import RigL
from gapbench.budget import Budget
from gapbench.method import register_method


@register_method("set")
class SET(RigL):
    description = "SET: magnitude drop, random regrowth, constant update fraction zeta"
    defaults = {
        "alpha": 0.3,  # zeta, the fraction of active weights replaced per update
        "delta_t": 0,  # steps between updates; 0 = once per epoch, as in the paper
        "delta_frac": 0.0,
        "t_end": 0.75,
        "decay": "constant",  # constant | cosine
    }

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        self.log["decay"] = self.params["decay"]

    def update_interval(self, budget: Budget) -> int:
        """The paper updates once per epoch; the resolved steps go into the log, not params."""
        return super().update_interval(budget) or budget.steps_per_epoch

    def drop_fraction(self, step: int) -> float:
        if self.params["decay"] == "cosine":
            return super().drop_fraction(step)
        return float(self.params["alpha"])

    def dense_grad_step(self, step: int) -> bool:
        return False  # random growth needs no gradient

    def grow_score(self, name: str, step: int) -> torch.Tensor:
        index = self.masks.names.index(name)
        gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + step * 1009 + index)
        return torch.rand(self.masks.params[name].shape, generator=gen).to(
            self.masks.params[name].device
        )
