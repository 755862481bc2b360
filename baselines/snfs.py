"""Sparse momentum (SNFS; Dettmers & Zettlemoyer, 2019, arXiv 1907.04840): after every epoch,
prune the smallest weights of every layer, redistribute the freed weights across layers in
proportion to each layer's mean momentum magnitude, and regrow, in each layer, the missing
weights with the largest momentum magnitude.

Reference: github.com/TimDettmers/sparse_learning (sparselearning/core.py `Masking`: prune rate
0.5 with cosine decay over the run, magnitude prune, momentum redistribution and growth, updates
at the end of each epoch). The reference grows by the optimizer's momentum of *zero* weights,
which it never masks; gapbench masks pruned gradients (their state stays zero), so SNFS keeps
its own momentum of the dense gradients (read before masking every step, beta 0.9 as the
optimizer's), and every step is charged a dense weight gradient. Per-layer counts change; the
total stays exact. Regrown weights start at zero with zeroed optimizer state.
"""

import math
from dataclasses import dataclass

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.masks import topk_mask
from gapbench.sparse.method import Budget, Context, Method, Params, Plan


@dataclass(frozen=True)
class SNFSParams(Params):
    prune_rate: float = 0.5  # fraction of each layer's weights replaced at the first update
    momentum: float = 0.9  # of the dense-gradient momentum that ranks layers and growth

    def check(self) -> None:
        if not 0.0 < self.prune_rate < 1.0 or not 0.0 <= self.momentum < 1.0:
            raise UserError("needs 0 < prune_rate < 1 and 0 <= momentum < 1")


@register_method("snfs")
class SparseMomentum(Method):
    description = "sparse momentum (SNFS): magnitude prune, momentum redistribution and growth"
    reference = "Dettmers & Zettlemoyer 2019; TimDettmers/sparse_learning sparselearning/core.py"
    Params = SNFSParams
    params: SNFSParams
    distributions = ("uniform", "erk")
    patterns = ("unstructured",)  # redistribution moves counts between layers freely
    redistributes = True  # per-layer counts move; the conformance check holds the total

    def plan(self, budget: Budget) -> Plan:
        return Plan(
            budget.epochs,
            dense_grad=lambda step: True,
            points={"updates": "end of every epoch but the last"},
        )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.draw_random_masks()
        self.buffers = {n: torch.zeros_like(p) for n, p in self.masks.params.items()}
        self.log = {"updates": []}

    def read_gradients(self, step: int) -> None:
        beta = self.params.momentum
        for name, buffer in self.buffers.items():
            grad = self.masks.params[name].grad
            if grad is not None:
                buffer.mul_(beta).add_(grad.detach())

    def on_epoch_end(self, epoch: int) -> None:
        epochs = self.ctx.budget.epochs
        if epoch + 1 >= epochs:
            return
        rate = self.params.prune_rate / 2 * (1 + math.cos(math.pi * (epoch + 1) / epochs))
        names = self.masks.names
        alive = {n: self.masks.count(n) for n in names}
        removed = {n: int(rate * alive[n]) for n in names}
        kept = {n: topk_mask(self.magnitude(n), alive[n] - removed[n]) for n in names}
        # Redistribute the freed weights by each layer's mean momentum magnitude over live weights.
        share = {
            n: float(self.buffers[n].abs()[self.masks.masks[n]].mean()) if alive[n] else 0.0
            for n in names
        }
        total_share = sum(share.values()) or 1.0
        free = sum(removed.values())
        room = {n: self.masks.numel(n) - int(kept[n].sum()) for n in names}
        grow = {n: min(room[n], int(free * share[n] / total_share)) for n in names}
        leftover = free - sum(grow.values())
        for n in sorted(names, key=lambda n: -share[n]):  # exact total: top up by share, in order
            extra = min(leftover, room[n] - grow[n])
            grow[n] += extra
            leftover -= extra
        fresh = 0
        for n in names:
            score = self.buffers[n].abs().float().masked_fill(kept[n], -math.inf)
            new = kept[n] | topk_mask(score, grow[n])
            fresh += int((new & ~self.masks.masks[n]).sum())
            self.masks.set_mask(n, new, self.ctx.optimizer)
        self.target_counts = self.masks.counts()
        step = (epoch + 1) * self.ctx.budget.steps_per_epoch
        self.log["updates"].append(
            {
                "step": step,
                "prune_rate": round(rate, 6),
                "turnover": fresh / max(1, self.masks.alive()),
            }
        )

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffers": self.buffers}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffers = state["buffers"]
