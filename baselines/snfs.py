"""Sparse momentum (SNFS; Dettmers & Zettlemoyer, 2019, arXiv 1907.04840): after every epoch but
the last, prune the smallest weights of every layer, redistribute the freed weights across layers
in proportion to each layer's mean momentum magnitude, and regrow, in each layer, the missing
weights with the largest momentum magnitude.

Follows github.com/TimDettmers/sparse_learning sparselearning/core.py (`Masking.truncate_weights`
with magnitude prune, momentum redistribution and momentum growth):
- prune rate 0.5, cosine-decayed per step to a floor of 0.005 (`CosineDecay`, eta_min);
  `adjust_prune_rate` (a layer denser than 80% whose share exceeds 1/L prunes at most its
  sparsity); each layer removes ceil(rate x nonzeros) of its smallest weights;
- layer shares: mean |momentum| over the layer's live weights, normalised; regrowth
  ceil(share x removed), capped at 0.99 of the layer's free slots, the excess spread evenly over
  all layers until none is left (`calc_growth_redistribution`);
- growth: the floor of each regrowth, at the dead positions with the largest |momentum|;
- momentum: SGD's momentum buffer, or Adam's exp_avg / (sqrt(exp_avg_sq) + 1e-8). The reference
  never masks gradients, so these move for dead weights too; gapbench masks pruned gradients
  (their optimizer state stays zero), so SNFS keeps the same buffers itself from the dense
  gradients (read before masking every step, with the optimizer's momentum, dampening, betas and
  weight decay), and every step is charged a dense weight gradient. Grown weights start at zero
  and take the momentum (Adam moments) these buffers hold, as the reference's optimizer state has.
Differences, each a parameter:
- `total=exact` (default): the run's total stays exact (the conformance check holds it): the
  reference's per-layer regrowth is apportioned to exactly the freed count by largest remainders;
  it differs from the reference's ceil/floor counts by at most one weight per layer.
  `total=reference` grows the reference's counts and carries the difference to the next update
  (`adjusted_growth`); the total then drifts by < one weight per layer, and the last update's
  counts are settled back to the exact total before evaluation.
- initial masks: exact per-layer counts (uniform or ERK), where the reference draws Bernoulli.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.distribution import total_keep
from gapbench.sparse.masks import topk_mask
from gapbench.sparse.method import Budget, Context, Method, Params, Plan


@dataclass(frozen=True)
class SNFSParams(Params):
    prune_rate: float = 0.5  # fraction of each layer's weights replaced at the first update
    min_prune_rate: float = 0.005  # the cosine decay's floor (reference CosineDecay eta_min)
    cap: float = 0.99  # most of a layer's free slots it may regrow (reference: 0.99)
    adjust_prune_rate: bool = True  # reference's adjust_prune_rate for dense, growing layers
    grown_momentum: Literal["keep", "zero"] = "keep"  # reference: grown weights keep momentum
    total: Literal["exact", "reference"] = "exact"  # see module docstring

    def check(self) -> None:
        if not 0.0 < self.prune_rate < 1.0 or not 0.0 <= self.min_prune_rate <= self.prune_rate:
            raise UserError("needs 0 < prune_rate < 1 and 0 <= min_prune_rate <= prune_rate")
        if not 0.0 < self.cap <= 1.0:
            raise UserError("cap must be in (0, 1]")


@register_method("snfs")
class SparseMomentum(Method):
    description = "sparse momentum (SNFS): magnitude prune, momentum redistribution and growth"
    reference = "Dettmers & Zettlemoyer 2019; TimDettmers/sparse_learning sparselearning/core.py"
    Params = SNFSParams
    params: SNFSParams
    distributions = ("uniform", "erk")
    patterns = ("unstructured",)  # redistribution moves counts between layers freely
    redistributes = True  # per-layer counts move; the conformance check holds the total
    flops_predictable = False  # per-layer counts follow the momentum: --match flops cannot price

    def plan(self, budget: Budget) -> Plan:
        return Plan(
            budget.epochs,
            dense_grad=lambda step: True,
            points={"updates": "end of every epoch but the last"},
        )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.draw_random_masks()
        self.adam = not isinstance(ctx.optimizer, torch.optim.SGD)
        self.buffers = {n: torch.zeros_like(p) for n, p in self.masks.params.items()}
        self.second = (
            {n: torch.zeros_like(p) for n, p in self.masks.params.items()} if self.adam else {}
        )
        self.started = False  # SGD's first step copies the gradient into the buffer
        self.adjusted_growth = 0.0
        self.adjustments: list[float] = []
        self.log = {"updates": []}

    def _group(self, param: torch.Tensor) -> dict:
        for group in self.ctx.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return self.ctx.optimizer.param_groups[0]

    def read_gradients(self, step: int) -> None:
        """The optimizer's update of its moments, on the dense gradient (as the reference's
        optimizer sees it, since the reference never masks gradients)."""
        decoupled = isinstance(self.ctx.optimizer, torch.optim.AdamW)
        for name, buffer in self.buffers.items():
            param = self.masks.params[name]
            if param.grad is None:
                continue
            group = self._group(param)
            grad = param.grad.detach()
            wd = group.get("weight_decay", 0.0)
            if wd and not decoupled:
                grad = grad + wd * param.detach()
            if self.adam:
                beta1, beta2 = group["betas"]
                buffer.mul_(beta1).add_(grad, alpha=1 - beta1)
                self.second[name].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            elif not self.started:
                buffer.copy_(grad)
            else:
                buffer.mul_(group.get("momentum", 0.0)).add_(
                    grad, alpha=1 - group.get("dampening", 0.0)
                )
        self.started = True

    def momentum(self, name: str) -> torch.Tensor:
        """The reference's `get_momentum_for_weight`."""
        if self.adam:
            return self.buffers[name] / (self.second[name].sqrt() + 1e-8)
        return self.buffers[name]

    def prune_rate_at(self, epoch: int) -> float:
        """CosineDecay after (epoch + 1) epochs of steps: eta_min + (rate - eta_min)(1+cos)/2."""
        p, epochs = self.params, self.ctx.budget.epochs
        cosine = (1 + math.cos(math.pi * (epoch + 1) / epochs)) / 2
        return p.min_prune_rate + (p.prune_rate - p.min_prune_rate) * cosine

    def on_epoch_end(self, epoch: int) -> None:
        epochs = self.ctx.budget.epochs
        if epoch + 1 >= epochs:
            return
        p, names, masks = self.params, self.masks.names, self.masks
        rate = self.prune_rate_at(epoch)
        nonzeros = {n: masks.count(n) for n in names}
        zeros = {n: masks.numel(n) - nonzeros[n] for n in names}
        # gather_statistics: each layer's share, mean |momentum| over its live weights.
        share = {
            n: float(self.momentum(n).abs()[masks.masks[n]].mean()) if nonzeros[n] else 0.0
            for n in names
        }
        total_share = sum(share.values())
        share = {n: s / total_share if total_share else 0.0 for n, s in share.items()}
        rates = dict.fromkeys(names, rate)
        if p.adjust_prune_rate:  # adjust_prune_rate: dense layers that are growing prune less
            for n in names:
                sparsity = zeros[n] / masks.numel(n)
                if sparsity < 0.2 and share[n] and (1.0 / len(names)) / share[n] < 1.0:
                    rates[n] = min(sparsity, rates[n])
        removed = {n: math.ceil(rates[n] * nonzeros[n]) for n in names}
        kept = {n: topk_mask(self.magnitude(n), nonzeros[n] - removed[n]) for n in names}
        freed = sum(removed.values())
        regrowth = self._redistribute(share, removed, zeros, freed + self.adjusted_growth)
        if p.total == "exact":
            grow = self._apportion(regrowth, removed, zeros, freed)
        else:
            grow = {n: math.floor(r) for n, r in regrowth.items()}
        fresh = 0
        for n in names:
            score = self.momentum(n).abs().float().masked_fill(kept[n], -math.inf)
            new = kept[n] | topk_mask(score, grow[n])
            grown = new & ~masks.masks[n]
            fresh += int(grown.sum())
            masks.set_mask(n, new, self.ctx.optimizer)
            if p.grown_momentum == "keep":
                self._restore_state(n, grown)
        if p.total == "reference":  # exponential smoothing of the residual, as core.py
            baseline = self._exact_total()
            residual = baseline - masks.alive()
            self.adjustments.append(residual)
            self.adjusted_growth = (
                0.25 * self.adjusted_growth
                + 0.75 * residual
                + sum(self.adjustments) / len(self.adjustments)
            )
        self.target_counts = masks.counts()
        step = (epoch + 1) * self.ctx.budget.steps_per_epoch
        self.log["updates"].append(
            {
                "step": step,
                "prune_rate": round(rate, 6),
                "turnover": fresh / max(1, masks.alive()),
            }
        )

    def _redistribute(
        self,
        share: dict[str, float],
        removed: dict[str, int],
        zeros: dict[str, int],
        budget: float,
    ) -> dict[str, float]:
        """calc_growth_redistribution: ceil(share x budget) per layer, capped at `cap` of its
        free slots, the excess spread evenly over every layer until none is left."""
        cap, names = self.params.cap, self.masks.names
        regrowth: dict[str, float] = {}
        residual, mean_residual, rounds = 1.0, 0.0, 0
        while residual > 0 and rounds < 1000:
            residual = 0.0
            for n in names:
                most = cap * (zeros[n] + removed[n])
                r = regrowth[n] if n in regrowth else math.ceil(share[n] * budget)
                r += mean_residual
                if r > most:
                    regrowth[n] = most
                    residual += r - most
                else:
                    regrowth[n] = r
            mean_residual = residual / len(regrowth) if regrowth else 0.0
            rounds += 1
        return regrowth

    def _apportion(
        self,
        regrowth: dict[str, float],
        removed: dict[str, int],
        zeros: dict[str, int],
        freed: int,
    ) -> dict[str, int]:
        """Exactly `freed` weights in proportion to the reference's regrowth (largest
        remainders), within each layer's free slots (the cap first, then all of them)."""
        names = self.masks.names
        total = sum(regrowth.values()) or 1.0
        quota = {n: regrowth[n] * freed / total for n in names}
        room = {n: zeros[n] + removed[n] for n in names}
        capped = {n: min(room[n], math.floor(self.params.cap * room[n])) for n in names}
        grow = {n: min(capped[n], math.floor(quota[n])) for n in names}
        left = freed - sum(grow.values())
        for limit in (capped, room):
            order = sorted(names, key=lambda n: (-(quota[n] - math.floor(quota[n])), -quota[n]))
            while left > 0:
                open_ = [n for n in order if grow[n] < limit[n]]
                if not open_:
                    break
                for n in open_:
                    if left == 0:
                        break
                    grow[n] += 1
                    left -= 1
        if left:
            raise RuntimeError(f"snfs: no room to regrow {left} weights")
        return grow

    def _restore_state(self, name: str, grown: torch.Tensor) -> None:
        """Grown weights take the momentum the reference's optimizer holds for them."""
        state = self.ctx.optimizer.state.get(self.masks.params[name])
        if not state or not grown.any():
            return
        if self.adam:
            pairs = (("exp_avg", self.buffers), ("exp_avg_sq", self.second))
        else:
            pairs = (("momentum_buffer", self.buffers),)
        for key, source in pairs:
            value = state.get(key)
            if isinstance(value, torch.Tensor) and value.shape == grown.shape:
                value[grown] = source[name][grown].to(value.dtype)

    def finish(self) -> None:
        """`total=reference` may end its last update a few weights off the exact total: settle
        the total (largest momentum grows, smallest magnitude goes), then the base settles."""
        missing = self._exact_total() - self.masks.alive()
        if missing:
            self._settle(missing)
        super().finish()

    def _exact_total(self) -> int:
        return total_keep([self.masks.numel(n) for n in self.masks.names], self.ctx.sparsity)

    def _settle(self, missing: int) -> None:
        names = self.masks.names
        if missing > 0:
            scores = [
                self.momentum(n).abs().float().masked_fill(self.masks.masks[n], -math.inf)
                for n in names
            ]
        else:
            scores = [
                (-self.magnitude(n).float()).masked_fill(~self.masks.masks[n], -math.inf)
                for n in names
            ]
        flat = torch.cat([s.flatten() for s in scores])
        chosen = topk_mask(flat, abs(missing))
        offset = 0
        for n, s in zip(names, scores):
            part = chosen[offset : offset + s.numel()].view_as(s)
            offset += s.numel()
            mask = self.masks.masks[n] | part if missing > 0 else self.masks.masks[n] & ~part
            self.masks.set_mask(n, mask, self.ctx.optimizer)
        self.target_counts = self.masks.counts()

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "buffers": self.buffers,
            "second": self.second,
            "started": self.started,
            "adjusted_growth": self.adjusted_growth,
            "adjustments": self.adjustments,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffers = state["buffers"]
        self.second = state.get("second", {})
        self.started = state.get("started", True)
        self.adjusted_growth = state.get("adjusted_growth", 0.0)
        self.adjustments = list(state.get("adjustments", []))
