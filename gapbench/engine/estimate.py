"""Training FLOPs of a run, priced from its plan before training (no trial runs).

The model's dense FLOPs per layer are measured once (the same probe as the ledger's); the method
is set up on the real model and asked, epoch by epoch, for the densities its schedule foresees
(`Method.expected_densities`) and, step by step, which steps read dense gradients. The cost model
is the ledger's: forward + 2x backward at each step's densities, a dense weight gradient on
dense-gradient steps. `--match flops` searches the epochs at which a method's estimate meets the
reference method's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from gapbench.engine.flops import measure_forward_flops
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context, Method
from gapbench.sparse.partition import partitions_by_prefix
from gapbench.sparse.selection import select_prunable
from gapbench.task import Profile, Workload, move_to_device


class FlopsEstimator:
    """Prices runs of one workload; each call sets a fresh copy of the method up on a copy of
    the model, so nothing it does touches a real run."""

    def __init__(self, profile: Profile, workload: Workload, dense_layers: tuple[str, ...]):
        self.profile, self.workload = profile, workload
        model = copy.deepcopy(workload.model)
        batch = move_to_device(workload.example_batch, torch.device("cpu"))
        flops, order = measure_forward_flops(model, lambda: workload.forward(model, batch))
        self.per_layer = {k: v / max(1, workload.example_samples) for k, v in flops.items()}
        self.order = order
        self.selection = select_prunable(model, profile.exclude, dense_layers, order)
        self.steps_per_epoch = max(1, len(workload.train_loader))  # type: ignore[arg-type]
        samples = getattr(workload.train_loader, "samples_per_epoch", None) or len(
            getattr(workload.train_loader, "dataset", [])
        )
        self.samples_per_epoch = int(samples) or self.steps_per_epoch
        self.dense_forward = sum(self.per_layer.values())

    def train_flops(
        self,
        make_method: Callable[[], Method],
        epochs: int,
        sparsity: float,
        distribution: str,
        seed: int = 0,
    ) -> float:
        """Estimated training FLOPs of `epochs` (the comparison budget) for a fresh method."""
        method = make_method()
        model = copy.deepcopy(self.workload.model)
        prunable = self.selection.prunable
        masks = MaskSet(model, prunable)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        spe = self.steps_per_epoch
        samples_per_step = max(1, round(self.samples_per_epoch / spe))
        plan = method.plan(Budget(epochs, spe, samples_per_step))
        partitions = {
            k: partitions_by_prefix(prunable, p) for k, p in self.profile.partitions.items()
        }
        ctx = Context(
            model,
            optimizer,
            masks,
            Budget(plan.epochs, spe, samples_per_step),
            sparsity,
            distribution,
            seed,
            [n for n in self.order if n in set(prunable)] or prunable,
            partitions,
            self.selection.dense_layers + self.selection.excluded,
        )
        method.setup(ctx)
        total = 0.0
        fixed = sum(f for n, f in self.per_layer.items() if n not in set(prunable))
        for epoch in range(plan.epochs):
            densities = method.expected_densities(epoch) if method.sparse else {}
            forward = fixed + sum(
                self.per_layer.get(n, 0.0) * densities.get(n, 1.0) for n in prunable
            )
            dense_grad_steps = sum(
                plan.dense_grad(s) for s in range(epoch * spe, (epoch + 1) * spe)
            )
            total += samples_per_step * (
                spe * 3 * forward + dense_grad_steps * (self.dense_forward - forward)
            )
        return total

    def dense_budget(self, epochs: int) -> float:
        samples_per_step = max(1, round(self.samples_per_epoch / self.steps_per_epoch))
        return 3 * self.dense_forward * samples_per_step * self.steps_per_epoch * epochs


def match_epochs(
    price: Callable[[int], float | None], target: float, upper: int
) -> tuple[int, float]:
    """The integer epochs whose price is closest to `target`. Prices grow with epochs; `price`
    returns None below a method's shortest feasible budget (GaP's grow phase)."""
    lo = 1
    while price(lo) is None:
        lo *= 2
    low = lo // 2 + 1 if lo > 1 else 1
    while price(low) is None:  # the first feasible budget between lo/2 and lo
        low += 1
    lo, hi = low, max(low, upper)
    while price(hi) < target and hi < 1_000_000:
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest epochs with price >= target
        mid = (lo + hi) // 2
        if price(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [e for e in (lo - 1, lo) if e >= 1 and price(e) is not None]
    best = min(candidates, key=lambda e: abs(price(e) - target))
    return best, price(best)
