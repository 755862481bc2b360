"""Gradual magnitude pruning (Zhu & Gupta, 2017, arXiv 1710.01878) and one-shot magnitude pruning.

`magnitude` starts dense and prunes by |w| on the cubic schedule
    s_t = s_f * (1 - (1 - (t - t0) / (t_end - t0))^3)
every `interval` steps between t0 and t_end, within the same budget as every other method, as the
paper's Eq. 1 with s_i = 0 (tensorflow/model_pruning: begin/end_pruning_step, pruning_frequency).
Masks only shrink. With `--distribution global` every prune re-ranks all live weights together.
`oneshot` trains dense for extra epochs, prunes once, then fine-tunes for the budget; its record
states the extra dense epochs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.distribution import keep_counts
from gapbench.sparse.method import Budget, Context, Method, Params, Plan


@dataclass(frozen=True)
class GMPParams(Params):
    start: float = 0.1  # fraction of the run when pruning starts (t0)
    end: float = 0.75  # fraction of the run when the target sparsity is reached (t_end)
    interval: int = 0  # steps between pruning events; 0 = once per epoch

    def check(self) -> None:
        if not 0.0 <= self.start < self.end <= 1.0:
            raise UserError(f"needs 0 <= start < end <= 1, got start={self.start}, end={self.end}")
        if self.interval < 0:
            raise UserError("interval must be >= 0 steps (0 = once per epoch)")


@register_method("magnitude")
class GradualMagnitude(Method):
    description = "gradual magnitude pruning (GMP, Zhu & Gupta cubic schedule) from dense"
    reference = "Zhu & Gupta 2017 (arXiv 1710.01878), Eq. 1; tensorflow/model_pruning"
    Params = GMPParams
    params: GMPParams
    gradual = True
    global_split_from_training = True  # `global` re-ranks the trained weights at every prune

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        budget = ctx.budget
        self.t0 = budget.fraction_to_step(self.params.start)
        self.t_end = max(self.t0 + 1, budget.fraction_to_step(self.params.end))
        self.interval = self.params.interval or budget.steps_per_epoch
        self.log = {
            "start_step": self.t0,
            "end_step": self.t_end,
            "interval_steps": self.interval,
            "updates": [],
        }

    def sparsity_at(self, step: int) -> float:
        """The cubic schedule's sparsity after `step` optimizer steps."""
        if step < self.t0:
            return 0.0
        progress = min(1.0, (step - self.t0) / (self.t_end - self.t0))
        return self.ctx.sparsity * (1.0 - (1.0 - progress) ** 3)

    def update(self, step: int) -> None:
        done = step + 1
        on_grid = self.t0 <= done <= self.t_end and (done - self.t0) % self.interval == 0
        if on_grid or done == self.t_end:
            self._prune_at(self.sparsity_at(done), done)

    def _prune_at(self, sparsity: float, step: int) -> None:
        pattern = self.ctx.pattern
        if pattern.kind == "nm":  # gradually from M:M to N:M, every group alike
            kept = self._kept_per_group(sparsity)
            changed = 0
            for name in self.masks.names:
                groups = torch.full((self.masks.numel(name) // pattern.m,), kept)
                mask = pattern.select_per_group(self.magnitude(name), groups)
                changed += self.masks.set_mask(name, mask, self.ctx.optimizer)
            self.log["updates"].append(
                {
                    "step": step,
                    "sparsity": round(self.masks.overall_sparsity(), 6),
                    "changed": changed,
                }
            )
            return
        counts = self.counts_at(sparsity)
        if step >= self.t_end:
            self.target_counts = counts  # `global`: the split of the final prune is the target
        elif self.ctx.distribution != "global":
            # Rounding at an intermediate sparsity may give a layer one weight fewer than its
            # final count; masks never regrow, so never go below the final count.
            counts = {n: max(k, self.target_counts[n]) for n, k in counts.items()}
        changed = 0
        for name in self.masks.names:
            k = min(counts[name], self.masks.count(name))  # prune only: masks never regrow
            if k != self.masks.count(name):
                changed += self.prune_to(name, k, score=self.magnitude(name))
        self.log["updates"].append(
            {"step": step, "sparsity": round(self.masks.overall_sparsity(), 6), "changed": changed}
        )

    def sparsity_in_effect(self, step: int) -> float:
        """The sparsity the forward of `step` runs at: that of the last prune before it (a prune
        at "done = d" happens after step d - 1)."""
        if step < self.t0:
            return 0.0
        last = self.t0 + (step - self.t0) // self.interval * self.interval
        return self.sparsity_at(self.t_end if step >= self.t_end else last)

    def expected_densities(self, epoch: int) -> dict[str, float]:
        """Each tensor's density averaged over the epoch's steps, as the run will prune it: the
        cubic schedule sampled on the prune grid, split as the run's distribution would (uniform
        where `global` can only be known from trained weights)."""
        spe = self.ctx.budget.steps_per_epoch
        steps = Counter(self.sparsity_in_effect(s) for s in range(epoch * spe, (epoch + 1) * spe))
        average = dict.fromkeys(self.masks.names, 0.0)
        for sparsity, count in steps.items():
            for name, density in self._densities_at(sparsity).items():
                average[name] += density * count / spe
        return average

    def _kept_per_group(self, sparsity: float) -> int:
        """N:M: weights kept per group of M at `sparsity` on the way from M:M to N:M."""
        pattern = self.ctx.pattern
        return pattern.m - round((pattern.m - pattern.n) * sparsity / self.ctx.sparsity)

    def _densities_at(self, sparsity: float) -> dict[str, float]:
        pattern = self.ctx.pattern
        if pattern.kind == "nm":
            return dict.fromkeys(self.masks.names, self._kept_per_group(sparsity) / pattern.m)
        shapes = [tuple(self.masks.params[n].shape) for n in self.masks.names]
        dist = "uniform" if self.ctx.distribution == "global" else self.ctx.distribution
        counts = dict(zip(self.masks.names, keep_counts(dist, shapes, sparsity)))
        if self.ctx.distribution != "global" and sparsity > 0:  # as _prune_at: never below final
            counts = {n: max(k, self.target_counts[n]) for n, k in counts.items()}
        return {n: counts[n] / self.masks.numel(n) for n in self.masks.names}

    def finish(self) -> None:
        if self.masks.alive() != sum(self.target_counts.values()) or any(
            self.masks.count(n) != k for n, k in self.target_counts.items()
        ):
            self._prune_at(self.ctx.sparsity, self.t_end)


@dataclass(frozen=True)
class OneShotParams(Params):
    EPOCH_FIELDS: ClassVar[tuple[str, ...]] = ("dense_epochs",)

    dense_epochs: int = -1  # extra dense epochs before the prune; -1 = as many as the budget


@register_method("oneshot")
class OneShotMagnitude(Method):
    description = "train dense for extra epochs, prune once by magnitude, fine-tune for the budget"
    reference = "prune-then-fine-tune (Han et al., 2015), one magnitude prune"
    Params = OneShotParams
    params: OneShotParams
    global_split_from_training = True  # `global` ranks the weights trained dense

    def extra_epochs(self, budget_epochs: int) -> int:
        extra = self.params.dense_epochs
        return budget_epochs if extra < 0 else extra

    def plan(self, budget: Budget) -> Plan:
        extra = self.extra_epochs(budget.epochs)
        return Plan(
            epochs=budget.epochs + extra,
            points={"extra_dense_epochs": extra, "prune_step": budget.epoch_to_step(extra)},
        )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        dense_epochs = self.params.dense_epochs
        extra = ctx.budget.epochs // 2 if dense_epochs < 0 else dense_epochs  # of plan.epochs
        self.prune_step = ctx.budget.epoch_to_step(extra)
        self.log = {"extra_dense_epochs": extra, "prune_step": self.prune_step}
        if self.prune_step == 0:
            self._prune_once()

    def update(self, step: int) -> None:
        if step + 1 == self.prune_step:
            self._prune_once()

    def _prune_once(self) -> None:
        self.target_counts = self.counts_at(self.ctx.sparsity)  # `global` sees trained weights
        for name in self.masks.names:
            self.prune_to(name, self.target_counts[name])

    def expected_densities(self, epoch: int) -> dict[str, float]:
        if (epoch + 1) * self.ctx.budget.steps_per_epoch <= self.prune_step:
            return dict.fromkeys(self.masks.names, 1.0)
        return super().expected_densities(epoch)

    def finish(self) -> None:
        if any(self.masks.count(n) != self.target_counts[n] for n in self.masks.names):
            self._prune_once()
