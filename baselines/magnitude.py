"""Gradual magnitude pruning (Zhu & Gupta, 2017) and one-shot magnitude pruning.

`magnitude` starts dense and prunes on the cubic schedule
    s_t = s_f * (1 - (1 - (t - t0) / (t_end - t0))^3)
every `interval` steps between t0 and t_end, within the same budget as every other method.
`oneshot` trains dense for extra epochs, prunes once, then fine-tunes for the budget; its record
states the extra dense epochs.
"""

from __future__ import annotations

from typing import Any

from gapbench.method import Method, register_method


@register_method("magnitude")
class GradualMagnitude(Method):
    description = "gradual magnitude pruning (GMP, Zhu & Gupta cubic schedule) from dense"
    gradual = True
    defaults = {
        "start": 0.1,  # fraction of the run when pruning starts
        "end": 0.75,  # fraction of the run when the target sparsity is reached
        "interval": 0,  # steps between pruning events; 0 = once per epoch
    }

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        self.t0 = budget.fraction_to_step(float(self.params["start"]))
        self.t_end = max(self.t0 + 1, budget.fraction_to_step(float(self.params["end"])))
        self.interval = int(self.params["interval"]) or budget.steps_per_epoch
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

    def after_step(self, step: int) -> None:
        done = step + 1
        if (
            self.t0 <= done <= self.t_end
            and (done - self.t0) % self.interval == 0
            or done == self.t_end
        ):
            self._prune_at(self.sparsity_at(done), done)
        self.masks.apply()

    def _prune_at(self, sparsity: float, step: int) -> None:
        counts = self.target_counts if step >= self.t_end else self.counts_at(sparsity)
        changed = 0
        for name in self.masks.names:
            k = min(counts[name], self.masks.count(name))  # prune only: masks never regrow
            if k != self.masks.count(name):
                alive = self.masks.masks[name]
                score = self.masks.params[name].detach().abs().masked_fill(~alive, -1.0)
                changed += self.prune_to(name, k, score)
        self.log["updates"].append(
            {"step": step, "sparsity": round(self.masks.overall_sparsity(), 6), "changed": changed}
        )

    def on_train_end(self) -> None:
        if any(self.masks.count(n) != self.target_counts[n] for n in self.masks.names):
            self._prune_at(self.ctx.sparsity, self.t_end)


@register_method("oneshot")
class OneShotMagnitude(Method):
    description = "train dense for extra epochs, prune once by magnitude, fine-tune for the budget"
    defaults: dict[str, Any] = {"dense_epochs": -1}  # -1 = as many dense epochs as the budget

    def total_epochs(self, budget_epochs: int) -> int:
        extra = int(self.params["dense_epochs"])
        self.extra_dense_epochs = budget_epochs if extra < 0 else extra
        return budget_epochs + self.extra_dense_epochs

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        if not hasattr(self, "extra_dense_epochs"):
            self.total_epochs(budget.epochs)
        self.prune_step = budget.epoch_to_step(self.extra_dense_epochs)
        self.log = {"extra_dense_epochs": self.extra_dense_epochs, "prune_step": self.prune_step}

    def before_step(self, step: int) -> None:
        if step >= self.prune_step:
            self.masks.apply_to_grads()

    def after_step(self, step: int) -> None:
        if step + 1 == self.prune_step:
            self._prune_once()
        if step + 1 >= self.prune_step:
            self.masks.apply()

    def _prune_once(self) -> None:
        self.target_counts = self.counts_at(self.ctx.sparsity)  # `global` sees trained weights
        for name in self.masks.names:
            self.prune_to(name, self.target_counts[name])

    def on_train_end(self) -> None:
        if any(self.masks.count(n) != self.target_counts[n] for n in self.masks.names):
            self._prune_once()
