"""SET (Mocanu et al., Nature Communications 2018): remove the weakest connections, regrow as many at
random. Reference: github.com/dcmocanu/sparse-evolutionary-artificial-neural-networks
(SET-MLP-Keras-Weights-Mask/set_mlp_keras_cifar10.py, `rewireMask`).

`variant=original` (default), as the reference: after every epoch but the last, each layer removes
the fraction zeta of its positive weights closest to zero and zeta of its negative weights closest
to zero (separately), then regrows as many connections uniformly at random among the inactive
ones; zeta stays constant. A live weight that is exactly zero is removed too, as the reference's
thresholds do (`rewiredWeights[rewiredWeights != 1] = 0`): it is neither above the positive nor
below the negative cut. Keeping such weights instead lets connections in dead channels (conv + BN
+ ReLU, where a weight's gradient is exactly zero) pile up as live zeros that never train, so the
network's real density falls each epoch. The reference's index arithmetic removes ceil(zeta*n)
negatives and floor(zeta*n)+1 positives; gapbench removes floor(zeta*n) of each (exact counts). Regrown connections start at zero (as in the Keras version) with zeroed
optimizer state. The Keras version also rebuilds its SGD optimizer every epoch (momentum restarts
from zero for every weight): `restart_optimizer=true` does that (every parameter's optimizer state
cleared at each rewiring); the default keeps one optimizer per run, as every other method.
`variant=rigl`: SET as the RigL paper ran it — RigL's ΔT, cosine-decayed drop fraction and T_end
(baselines/rigl.py), drop by |w|, random growth, the weight step taken before the mask update
(rigl/sparse_optimizers.py SparseSETOptimizer), with its N(0, 1e-5^2) noise on the drop scores
(`drop_noise`; variant=original's signed thresholds take no noise, as the Keras reference).
Random growth comes from a generator seeded by (seed, step, layer): every rank draws the same and
a resume reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from baselines.rigl import RigLParams, UpdateSchedule, drop_and_grow, drop_scores
from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.masks import topk_mask
from gapbench.sparse.method import Budget, Context, Method, Plan


@dataclass(frozen=True)
class SETParams(RigLParams):
    variant: Literal["original", "rigl"] = "original"
    zeta: float = 0.3  # fraction removed per rewiring (original); `alpha` plays it for rigl
    restart_optimizer: bool = False  # original: clear all optimizer state each epoch (Keras)

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.zeta <= 1.0:
            raise UserError(f"zeta must be in [0, 1], got {self.zeta}")


@register_method("set")
class SET(Method):
    description = "SET: remove the weakest weights (signed), regrow at random, every epoch"
    reference = (
        "Mocanu et al., Nat. Commun. 2018; dcmocanu/sparse-evolutionary-artificial-neural-networks"
    )
    Params = SETParams
    params: SETParams
    distributions = ("uniform", "erk")

    def plan(self, budget: Budget) -> Plan:
        if self.params.variant == "rigl":
            return Plan(
                epochs=budget.epochs, points=UpdateSchedule(self.params, budget).points(budget)
            )
        return Plan(
            epochs=budget.epochs,
            points={"zeta": self.params.zeta, "rewire": "every epoch but the last"},
        )

    def check_pattern(self, pattern) -> None:
        if self.params.variant == "original" and pattern.kind != "unstructured":
            raise UserError(
                "set variant=original removes by sign, unstructured only; use set.variant=rigl with --pattern"
            )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.draw_random_masks()
        self.schedule = UpdateSchedule(self.params, ctx.budget)
        self.log = {**self.plan(ctx.budget).points, "updates": []}

    def random_scores(self, step: int) -> dict[str, torch.Tensor]:
        out = {}
        for index, name in enumerate(self.masks.names):
            gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + step * 1009 + index)
            param = self.masks.params[name]
            out[name] = torch.rand(param.shape, generator=gen).to(param.device)
        return out

    # ---- variant=rigl: RigL's schedule, after the weight step ---------------------------------
    def update(self, step: int) -> None:
        if self.params.variant != "rigl" or not self.schedule.is_update(step):
            return
        fraction = self.schedule.drop_fraction(step)
        scores = self.random_scores(step)
        noise = self.params.drop_noise
        fresh = sum(
            drop_and_grow(
                self,
                n,
                fraction,
                scores[n],
                self.params.reinit_when_same,
                drop_scores(self, n, step, noise),
            )
            for n in self.masks.names
        )
        self._log(step, fraction, fresh)

    # ---- variant=original: signed removal once per epoch -------------------------------------
    def on_epoch_end(self, epoch: int) -> None:
        if self.params.variant != "original" or epoch + 1 >= self.ctx.budget.epochs:
            return
        step = (epoch + 1) * self.ctx.budget.steps_per_epoch
        scores = self.random_scores(step)
        fresh = sum(self._rewire(n, scores[n]) for n in self.masks.names)
        if self.params.restart_optimizer:  # the Keras reference compiles a new SGD every epoch
            self.ctx.optimizer.state.clear()
        self._log(step, self.params.zeta, fresh)

    def _rewire(self, name: str, grow_score: torch.Tensor) -> int:
        masks, zeta = self.masks, self.params.zeta
        old = masks.masks[name]
        w = masks.params[name].detach()
        positive, negative = old & (w > 0), old & (w < 0)
        n_pos, n_neg = int(positive.sum()), int(negative.sum())
        # Keep the (1 - zeta) largest positives and the (1 - zeta) most negative weights.
        keep_pos = topk_mask(w.masked_fill(~positive, -float("inf")), n_pos - int(zeta * n_pos))
        keep_neg = topk_mask((-w).masked_fill(~negative, -float("inf")), n_neg - int(zeta * n_neg))
        kept = keep_pos | keep_neg  # live zeros are neither sign: removed, as the reference
        removed = masks.count(name) - int(kept.sum())
        grown = topk_mask(grow_score.float().masked_fill(kept, -float("inf")), removed)
        masks.set_mask(name, kept, self.ctx.optimizer)
        masks.set_mask(name, kept | grown, self.ctx.optimizer)  # regrown start at zero
        return removed

    def _log(self, step: int, fraction: float, fresh: int) -> None:
        self.log["updates"].append(
            {
                "step": step,
                "drop_fraction": round(fraction, 6),
                "turnover": fresh / self.masks.alive(),
            }
        )
