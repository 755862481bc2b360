"""RigL (Evci et al., 2020): drop the smallest weights, grow where the dense gradient is largest.

Every `delta_t` steps until `t_end`, each layer drops the fraction
    alpha_t = alpha / 2 * (1 + cos(pi * t / t_end))
of its active weights with the smallest |w| and grows as many inactive weights with the largest
dense-gradient magnitude. Autograd already computes dense gradients for masked weights, so the
gradient is read before it is masked: no second backward pass. Grown weights start at zero with
zeroed optimizer state; per-layer counts never change.
"""

from __future__ import annotations

import math

import torch

from baselines.static import draw_random_masks
from gapbench.budget import Budget
from gapbench.errors import UserError
from gapbench.masks import clear_optimizer_state, topk_mask
from gapbench.method import Method, register_method


@register_method("rigl")
class RigL(Method):
    description = "RigL: magnitude drop, dense-gradient grow, cosine-decayed update fraction"
    defaults = {
        "alpha": 0.3,  # initial drop fraction
        "delta_t": 100,  # steps between updates (used when delta_frac is 0)
        "delta_frac": 0.0,  # steps between updates as a fraction of the run (small data sets)
        "t_end": 0.75,  # fraction of the run after which masks are frozen
    }

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        draw_random_masks(self)
        self.delta_t = self.update_interval(budget)
        self.t_end = budget.fraction_to_step(float(self.params["t_end"]))
        if self.delta_t < 1 or not 0.0 <= float(self.params["alpha"]) <= 1.0:
            raise UserError(
                f"{self.name}: needs delta_t >= 1 step (or delta_frac > 0) and 0 <= alpha <= 1, "
                f"got delta_t={self.delta_t}, alpha={self.params['alpha']}"
            )
        self._scores: dict[str, torch.Tensor] = {}
        self.log = {
            "delta_t_steps": self.delta_t,
            "t_end_step": self.t_end,
            "alpha": float(self.params["alpha"]),
            "updates": [],  # step, drop fraction, mask turnover
        }

    # ---- schedule ----------------------------------------------------------------------------
    def update_interval(self, budget: Budget) -> int:
        """ΔT in steps: `delta_frac` of the run when set (small data sets), else `delta_t`."""
        frac = float(self.params["delta_frac"])
        return max(1, budget.fraction_to_step(frac)) if frac > 0 else int(self.params["delta_t"])

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.delta_t == 0 and step < self.t_end

    def drop_fraction(self, step: int) -> float:
        t_end = max(1, self.t_end)
        return float(self.params["alpha"]) / 2 * (1 + math.cos(math.pi * step / t_end))

    def dense_grad_step(self, step: int) -> bool:
        return self.is_update_step(step)

    # ---- hooks -------------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        if self.is_update_step(step):
            self._scores = {n: self.grow_score(n, step) for n in self.masks.names}
        self.masks.apply_to_grads()

    def after_step(self, step: int) -> None:
        if self._scores:
            self._update(step)
            self._scores = {}
        self.masks.apply()

    def grow_score(self, name: str, step: int) -> torch.Tensor:
        """RigL grows where the dense gradient is largest (read before masking)."""
        grad = self.masks.params[name].grad
        return torch.zeros_like(self.masks.params[name]) if grad is None else grad.detach().abs()

    def _update(self, step: int) -> None:
        fraction = self.drop_fraction(step)
        changed = alive = 0
        for name in self.masks.names:
            old = self.masks.masks[name]
            n_alive = int(old.sum())
            k = int(fraction * n_alive)
            alive += n_alive
            if k == 0 or n_alive == old.numel():
                continue
            w = self.masks.params[name].detach().abs()
            # Drop: the k smallest |w| among the active weights.
            kept = topk_mask(w.masked_fill(~old, -1.0), n_alive - k)
            # Grow: the k best scores among weights not kept (a just-dropped weight may return).
            score = self._scores[name].float().masked_fill(kept, -math.inf)
            grown = topk_mask(score, k)
            new = kept | grown
            changed += int((new & ~old).sum())
            self.masks.set_mask(name, new, self.optimizer)
            with torch.no_grad():  # grown weights start at exactly zero with fresh state
                self.masks.params[name].masked_fill_(grown, 0.0)
            clear_optimizer_state(self.optimizer, self.masks.params[name], grown)
        self.log["updates"].append(
            {"step": step, "drop_fraction": round(fraction, 6), "turnover": changed / max(1, alive)}
        )
