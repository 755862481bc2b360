"""RigL (Evci et al., ICML 2020, arXiv 1911.11134): drop the smallest weights, grow where the dense
gradient is largest. Reference: google-research/rigl, rigl/sparse_optimizers.py (SparseRigLOptimizer)
and sparse_optimizers_base.py (`_get_update_op`).

Every ΔT steps from step 0 to T_end (both inclusive), each layer drops the fraction
    alpha_t = alpha / 2 * (1 + cos(pi * t / T_end))
of its active weights with the smallest |w| and grows as many with the largest dense-gradient
magnitude among the rest. As in the reference:
- the update iteration replaces the optimizer step (`tf.cond(is_mask_update_iter, mask_update,
  apply_gradients)`); it still consumes a batch. RigL's global step does not advance on it, so the
  reference runs one extra batch per update; gapbench counts it in the run (`replace_step=false`
  steps and updates in one iteration instead);
- a weight dropped and regrown in the same update keeps its value and state
  (`reinit_when_same=False`); newly grown weights start at zero with zeroed optimizer state;
- dense gradients are read before masking: autograd already computes them, no second backward;
- the drop scores |w| get N(0, drop_noise^2) noise, 1e-5 as the reference's `noise_std` (ties
  among equal magnitudes, e.g. grown weights still at zero, fall at random; seeded by (seed, step,
  layer)); grow-score ties go to the lower index, as TF's `top_k` (zero gradients on dead channels
  grow leading channels, see README).
ΔT is defined in samples: `delta_t` steps at `delta_t_batch` samples per step (RigL's ImageNet runs:
100 steps at batch 4096), converted to the run's global batch and recorded; `delta_frac` sets it
as a fraction of the run instead (small data sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.masks import clear_optimizer_state, topk_mask
from gapbench.sparse.method import Budget, Context, Method, Params, Plan


@dataclass(frozen=True)
class RigLParams(Params):
    alpha: float = 0.3  # initial drop fraction
    delta_t: int = 100  # steps between updates at `delta_t_batch` samples per step
    delta_t_batch: int = 4096  # the global batch delta_t was chosen for (RigL ImageNet)
    delta_frac: float = 0.0  # if > 0: steps between updates as a fraction of the run
    t_end: float = 0.75  # fraction of the run after which masks are frozen
    replace_step: bool = True  # the update iteration takes no optimizer step (reference)
    reinit_when_same: bool = False  # zero a weight dropped and regrown in one update
    drop_noise: float = 1e-5  # std of the noise on |w| before the drop (reference noise_std)

    def check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.delta_t < 1 or self.delta_t_batch < 1:
            raise UserError("delta_t and delta_t_batch must be at least 1")
        if not 0.0 <= self.delta_frac < 1.0 or not 0.0 < self.t_end <= 1.0:
            raise UserError("needs 0 <= delta_frac < 1 and 0 < t_end <= 1")
        if not 0.0 <= self.drop_noise < 1e-2:
            raise UserError(f"drop_noise must be in [0, 0.01), got {self.drop_noise}")


class UpdateSchedule:
    """When RigL-style updates happen and how much they drop (also SET's `variant=rigl`)."""

    def __init__(self, params: RigLParams, budget: Budget):
        if params.delta_frac > 0:
            self.delta_t = max(1, budget.fraction_to_step(params.delta_frac))
        else:
            samples = params.delta_t * params.delta_t_batch
            self.delta_t = max(1, round(samples / max(1, budget.samples_per_step)))
        self.t_end = budget.fraction_to_step(params.t_end)
        self.alpha = params.alpha

    def is_update(self, step: int) -> bool:
        return step <= self.t_end and step % self.delta_t == 0

    def drop_fraction(self, step: int) -> float:
        t = min(step, self.t_end) / max(1, self.t_end)
        return self.alpha / 2 * (1 + math.cos(math.pi * t))

    def points(self, budget: Budget) -> dict[str, int | float]:
        return {
            "delta_t_steps": self.delta_t,
            "delta_t_samples": self.delta_t * budget.samples_per_step,
            "t_end_step": self.t_end,
            "alpha": self.alpha,
        }


def drop_scores(method: Method, name: str, step: int, noise: float) -> torch.Tensor:
    """|w| of the live entries plus N(0, noise^2), seeded by (seed, step, layer): the reference's
    tie-breaking noise. Dead entries sit at -1, far below any live score."""
    score = method.magnitude(name)
    if noise > 0:
        index = method.masks.names.index(name)
        stream = method.ctx.seed * 1_000_003 + step * 1009 + index + 2**40  # apart from growth's
        gen = torch.Generator().manual_seed(stream)
        score = score + noise * torch.randn(score.shape, generator=gen).to(score.device)
    return score


def drop_and_grow(
    method: Method,
    name: str,
    fraction: float,
    grow_score: torch.Tensor,
    reinit_when_same: bool,
    drop_score: torch.Tensor | None = None,
) -> int:
    """Drop `fraction` of the active weights of `name` with the smallest `drop_score` (|w| if not
    given), grow as many of the rest with the highest `grow_score`, inside the run's pattern (whole
    blocks; N:M groups refilled to N). Returns how many weights are new. Counts are unchanged."""
    masks, pattern = method.masks, method.ctx.pattern
    old = masks.masks[name]
    alive = masks.count(name)
    k = int(fraction * alive / pattern.unit) * pattern.unit
    if k == 0 or alive == old.numel():
        return 0
    drop = method.magnitude(name) if drop_score is None else drop_score
    if pattern.kind == "block":
        kept = pattern.select(drop, alive - k)
    else:
        kept = topk_mask(drop, alive - k)
    candidates = grow_score.float().masked_fill(kept, -math.inf)
    if pattern.kind == "nm":  # refill every group to N
        grown = pattern.select_per_group(candidates, pattern.n - kept.reshape(-1, pattern.m).sum(1))
    else:
        grown = pattern.select(candidates, k)
    new = kept | grown
    masks.set_mask(name, new, method.ctx.optimizer)  # zeroes dropped weights, clears changed state
    if reinit_when_same:  # a weight dropped and regrown in this update restarts too
        with torch.no_grad():
            masks.params[name].masked_fill_(grown, 0.0)
        clear_optimizer_state(method.ctx.optimizer, masks.params[name], grown)
    return int((grown & ~old).sum())


@register_method("rigl")
class RigL(Method):
    description = "RigL: magnitude drop, dense-gradient grow, cosine-decayed update fraction"
    reference = "Evci et al., ICML 2020; google-research/rigl rigl/sparse_optimizers.py"
    Params = RigLParams
    params: RigLParams
    # RigL has no global magnitude option: drop and grow are per layer at fixed layer counts.
    distributions = ("uniform", "erk")

    def plan(self, budget: Budget) -> Plan:
        schedule = UpdateSchedule(self.params, budget)
        replaces = schedule.is_update if self.params.replace_step else None
        return Plan(
            epochs=budget.epochs,
            dense_grad=schedule.is_update,
            replaces_step=replaces or (lambda step: False),
            points=schedule.points(budget),
        )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.draw_random_masks()
        self.schedule = UpdateSchedule(self.params, ctx.budget)
        self.scores: dict[str, torch.Tensor] = {}
        self.log = {**self.schedule.points(ctx.budget), "updates": []}

    def read_gradients(self, step: int) -> None:
        grads = {n: self.masks.params[n].grad for n in self.masks.names}
        self.scores = {
            n: torch.zeros_like(self.masks.params[n]) if g is None else g.detach().abs()
            for n, g in grads.items()
        }

    def update(self, step: int) -> None:
        if not self.scores:
            return
        fraction = self.schedule.drop_fraction(step)
        noise = self.params.drop_noise
        fresh = sum(
            drop_and_grow(
                self,
                n,
                fraction,
                self.scores[n],
                self.params.reinit_when_same,
                drop_scores(self, n, step, noise),
            )
            for n in self.masks.names
        )
        self.scores = {}
        self.log["updates"].append(
            {
                "step": step,
                "drop_fraction": round(fraction, 6),
                "turnover": fresh / self.masks.alive(),
            }
        )
