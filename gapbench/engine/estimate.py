"""Training FLOPs of a run, priced from its plan before training (no trial runs).

The method is set up exactly as the Trainer sets it up (`Trainer.build()` on a copy of the model:
the same dense FLOPs probe, prunable tensors, pattern, partitions and probes), then asked, epoch
by epoch, for the densities its schedule foresees (`Method.expected_densities`) and, step by step,
which steps read dense gradients. The cost model is the ledger's (`plan_flops`): forward + 2x
backward at each step's per-layer densities, a dense weight gradient on dense-gradient steps. The
conformance check (gapbench.testing) holds this price to what the ledger charges, per run.

Methods that change no mask during training (SNIP, GraSP, SynFlow, static: they override no
training hook) train static sparse at their target counts: they are priced as that, without their
setup (no probe batch), except under `--distribution global`, where the split comes from their
scores and their setup runs once. `--match flops` searches the epochs at which a method's price
meets the reference method's, in a bounded search.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable

import torch

from gapbench.engine.trainer import Trainer, TrainSettings
from gapbench.errors import UserError
from gapbench.sparse.method import Budget, Method, Plan
from gapbench.task import Profile, Workload

# Hooks that run during training: a method that overrides none of them keeps its setup masks.
TRAINING_HOOKS = (
    "plan",
    "on_epoch_start",
    "on_epoch_end",
    "read_gradients",
    "update",
    "expected_densities",
)


class BudgetTooShort(UserError):
    """The method's plan refuses this many epochs (shorter than GaP's grow phase)."""


def trains_fixed_masks(cls: type[Method]) -> bool:
    """True for methods that override no training hook: the loop never changes their masks, so
    they train static sparse at their target counts (the base `expected_densities`)."""
    return all(getattr(cls, hook) is getattr(Method, hook) for hook in TRAINING_HOOKS)


def plan_flops(
    per_sample: dict[str, float],
    densities: Iterable[dict[str, float]],
    plan: Plan,
    steps_per_epoch: int,
    samples_per_step: float,
    total_steps: int | None = None,
) -> float:
    """Training FLOPs of a run whose epoch e runs at `densities[e]` (per layer; layers missing
    are dense), charged as the ledger charges every step (engine/flops.py); `samples_per_step`
    is the epoch's samples over its steps (a last partial batch included). A budget in steps
    (`total_steps`) ends inside its last epoch: only the steps it runs are charged."""
    dense = sum(per_sample.values())
    total = 0.0
    for epoch, layer_density in enumerate(densities):
        forward = sum(f * layer_density.get(n, 1.0) for n, f in per_sample.items())
        first = epoch * steps_per_epoch
        last = first + steps_per_epoch
        if total_steps is not None:
            last = min(last, total_steps)
        if last <= first:
            break
        dense_grad_steps = sum(plan.dense_grad(s) for s in range(first, last))
        total += samples_per_step * (
            (last - first) * 3 * forward + dense_grad_steps * (dense - forward)
        )
    return total


class FlopsEstimator:
    """Prices runs of one workload; each call builds a fresh copy of the method on a copy of the
    model (through the Trainer's own build), so nothing it does touches a real run."""

    def __init__(
        self,
        profile: Profile,
        workload: Workload,
        dense_layers: tuple[str, ...],
        pattern: str = "unstructured",
        global_batch: int = 1,
    ):
        self.profile, self.workload = profile, workload
        self.dense_layers, self.pattern, self.global_batch = dense_layers, pattern, global_batch
        self._fixed: dict[tuple, tuple[dict[str, float], dict[str, float], int, float]] = {}

    def _build(
        self,
        method: Method,
        epochs: int,
        sparsity: float,
        distribution: str,
        seed: int,
        steps: int | None = None,
    ) -> Trainer:
        settings = TrainSettings(
            epochs=epochs,
            train_steps=steps,
            sparsity=sparsity,
            distribution=distribution,
            dense_layers=self.dense_layers,
            seed=seed,
            global_batch=self.global_batch,
            pattern=self.pattern,
        )
        workload = dataclasses.replace(self.workload, model=copy.deepcopy(self.workload.model))
        trainer = Trainer(self.profile, workload, method, settings, torch.device("cpu"))
        trainer.build()
        return trainer

    def train_flops(
        self,
        make_method: Callable[[], Method],
        epochs: int,
        sparsity: float,
        distribution: str,
        seed: int = 0,
        steps: int | None = None,
    ) -> float:
        """Estimated training FLOPs of `epochs` (the comparison budget; with `steps`, a budget
        that ends inside its last epoch) for a fresh method. Raises BudgetTooShort when the
        method's plan refuses `epochs`, UserError when the method cannot be priced before
        training."""
        method = make_method()
        cls = type(method)
        if method.sparse and (reason := cls.flops_unpredictable(distribution)):
            raise UserError(f"cannot price {cls.name!r} before training: {reason}")
        try:
            method.plan(Budget(epochs))
        except UserError as exc:
            raise BudgetTooShort(str(exc)) from exc
        if method.sparse and trains_fixed_masks(cls):
            per_sample, density, spe, samples = self._fixed_densities(
                make_method, epochs, sparsity, distribution, seed
            )
            return plan_flops(per_sample, [density] * epochs, Plan(epochs), spe, samples, steps)
        trainer = self._build(method, epochs, sparsity, distribution, seed, steps)
        plan = trainer.plan
        densities = (
            [method.expected_densities(e) for e in range(plan.epochs)]
            if method.sparse
            else [{}] * plan.epochs
        )
        return plan_flops(
            trainer.ledger.per_sample,
            densities,
            plan,
            trainer.steps_per_epoch,
            trainer.train_samples / trainer.steps_per_epoch,
            steps,
        )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch of this workload at this batch."""
        return self._build(_Target(), 1, 0.0, "uniform", 0).steps_per_epoch

    def _fixed_densities(
        self,
        make_method: Callable[[], Method],
        epochs: int,
        sparsity: float,
        distribution: str,
        seed: int,
    ) -> tuple[dict[str, float], dict[str, float], int, float]:
        """The target densities of a method that trains fixed masks: static sparse at the run's
        counts (no setup, no probe), or under `global` those its own setup finds (once)."""
        method = make_method()
        key = (type(method), repr(method.params), sparsity, distribution, seed)
        if key not in self._fixed:
            stand_in = method if distribution == "global" else _Target()
            trainer = self._build(stand_in, epochs, sparsity, distribution, seed)
            masks = trainer.masks
            self._fixed[key] = (
                trainer.ledger.per_sample,
                {n: stand_in.target_counts[n] / masks.numel(n) for n in masks.names},
                trainer.steps_per_epoch,
                trainer.train_samples / trainer.steps_per_epoch,
            )
        return self._fixed[key]

    def dense_budget(self, epochs: int) -> float:
        """FLOPs of dense training for `epochs`."""
        trainer = self._build(_Target(), epochs, 0.0, "uniform", 0)
        return 3 * sum(trainer.ledger.per_sample.values()) * trainer.train_samples * epochs


class _Target(Method):
    """Stand-in for a method that trains fixed masks: the base setup's target counts."""

    name = "static target"


def match_epochs(
    price: Callable[[int], float | None], target: float, upper: int, limit: int | None = None
) -> tuple[int, float]:
    """The integer epochs whose price is closest to `target`. Prices grow with epochs; `price`
    returns None below a method's shortest feasible budget (GaP's grow phase). The search never
    goes beyond `limit` epochs (default 16x `upper`, at least 64): past it, a clear UserError."""
    limit = limit or max(64, 16 * upper)
    first = 1
    while price(first) is None:  # doubling, then bisection, to the first feasible budget
        if first >= limit:
            raise UserError(f"no budget of up to {limit} epochs is long enough for the method")
        first = min(2 * first, limit)
    lo, hi = first // 2 + 1 if first > 1 else 1, first
    while lo < hi:
        mid = (lo + hi) // 2
        if price(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    first = lo
    lo, hi = first, max(first, upper)
    while price(hi) < target:  # type: ignore[operator]
        if hi >= limit:
            raise UserError(
                f"even {limit} epochs cost less than the target ({price(hi):.3g} < {target:.3g} FLOPs)"
            )
        lo, hi = hi, min(2 * hi, limit)
    while lo < hi:  # smallest epochs with price >= target
        mid = (lo + hi) // 2
        if price(mid) >= target:  # type: ignore[operator]
            hi = mid
        else:
            lo = mid + 1
    candidates = [e for e in (lo - 1, lo) if e >= first]
    best = min(candidates, key=lambda e: abs(price(e) - target))  # type: ignore[operator]
    return best, price(best)  # type: ignore[return-value]
