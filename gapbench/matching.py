"""`--match flops`: give every method of a comparison (dense included) the budget at which its
training FLOPs equal the reference method's (within 5%, checked), priced from plans before training.

Whole epochs where one lands within 5%; otherwise a budget in optimizer steps that ends inside its
last epoch (`RunSpec.train_steps`): dense, whose epochs cost 2-3x a sparse method's, is seldom a
whole number of epochs away from the reference, so without fractional epochs it would drop off the
board.

The price of a budget depends on the task, the method, its parameters, the sparsity, the
distribution and the pattern, not on the seed: it is computed once per combination (seed 0's
masks). A method whose per-layer FLOPs cannot be known before training (SNFS; GMP, one-shot and
GaP under `--distribution global`) is refused with one line, before anything trains; so is any
other pricing failure. The epoch search is bounded (engine/estimate.py `match_epochs`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch

from gapbench.engine.estimate import BudgetTooShort, FlopsEstimator, match_epochs
from gapbench.engine.trainer import seed_everything
from gapbench.errors import UserError
from gapbench.registry import get_method_class, get_task_class
from gapbench.runspec import RunSpec
from gapbench.sparse.method import Method
from gapbench.sparse.selection import parse_dense_layers
from gapbench.task import BuildRequest

TOLERANCE = 0.05


def require_priceable(method: str | type[Method], distribution: str) -> None:
    """Refuse, with one line, a method whose training FLOPs no plan can foresee."""
    cls = get_method_class(method) if isinstance(method, str) else method
    if cls.sparse and (reason := cls.flops_unpredictable(distribution)):
        raise UserError(
            f"--match flops cannot price {cls.name} under --distribution {distribution}: {reason}; "
            "compare it at equal epochs (--match epochs)"
        )


def _estimator(spec: RunSpec) -> FlopsEstimator:
    seed_everything(0)  # the model initialisation of seed 0, as the runner builds it
    task = get_task_class(spec.task)()
    profile = task.profile(spec.profile)
    root = os.environ.get("GAPBENCH_CACHE") or Path.home() / ".cache" / "gapbench"
    request = BuildRequest(
        data_root=Path(spec.data_root) if spec.data_root else None,
        cache_dir=Path(root) / spec.task,
        seed=0,
        device=torch.device("cpu"),
        batch_size=spec.batch_size,
    )
    return FlopsEstimator(
        profile,
        task.build(profile, request),
        parse_dense_layers(spec.dense_layers),
        pattern=spec.pattern,
        global_batch=spec.batch_size,
    )


def match_steps(
    price: Callable[[int], float | None], target: float, epochs: int, steps_per_epoch: int
) -> tuple[int | None, int, float]:
    """(steps, epochs, price): the optimizer-step budget near `epochs` whose price is closest to
    `target` (bisection over steps; prices grow with steps). `steps` is None when the best is a
    whole number of epochs after all."""
    lo, hi = max(1, (epochs - 2) * steps_per_epoch), (epochs + 2) * steps_per_epoch
    while lo < hi:  # smallest step count whose price reaches the target
        mid = (lo + hi) // 2
        value = price(mid)
        if value is not None and value >= target:
            hi = mid
        else:
            lo = mid + 1
    priced = [(n, v) for n in (lo - 1, lo) if n >= 1 and (v := price(n)) is not None]
    if not priced:
        raise UserError(f"no budget near {epochs} epochs can be priced for the method")
    n, value = min(priced, key=lambda p: abs(p[1] - target))
    whole = n % steps_per_epoch == 0
    return (None if whole else n), -(-n // steps_per_epoch), value


def match_flops(specs: list[RunSpec], ref: str, log=print) -> list[RunSpec]:
    """FLOPs-matched copies of `specs` (budget_mode "flops"); the reference keeps its epochs."""
    refs = {(s.sparsity, s.distribution): s for s in specs if s.method == ref}
    if not refs:
        raise UserError(f"--match flops needs the reference --match-ref {ref} among --methods")
    for spec in specs:
        require_priceable(spec.method, spec.distribution)
    estimators: dict[tuple, FlopsEstimator] = {}
    out = []

    @functools.cache
    def price(
        method: str,
        params_key: str,
        sparsity: float,
        distribution: str,
        dense_key: str,
        epochs: int,
        steps: int | None = None,
    ) -> float | None:
        spec = next(
            s
            for s in specs
            if (s.method, repr(s.params), s.sparsity, s.distribution)
            == (method, params_key, sparsity, distribution)
        )
        key = (dense_key, spec.pattern, spec.batch_size)
        if key not in estimators:
            estimators[key] = _estimator(spec)
        cls = get_method_class(method)
        try:
            return estimators[key].train_flops(
                lambda: cls(**spec.params), epochs, sparsity, distribution, steps=steps
            )
        except BudgetTooShort:
            return None  # shorter than the method's fixed schedule allows

    def steps_per_epoch(spec: RunSpec) -> int:
        key = (spec.dense_layers, spec.pattern, spec.batch_size)
        if key not in estimators:
            estimators[key] = _estimator(spec)
        return estimators[key].steps_per_epoch()

    for spec in specs:
        reference = refs.get((spec.sparsity, spec.distribution)) or next(iter(refs.values()))
        try:
            target = price(
                reference.method,
                repr(reference.params),
                reference.sparsity,
                reference.distribution,
                reference.dense_layers,
                reference.epochs,
            )
            if target is None:
                raise UserError(f"{reference.epochs} epochs are too short for {ref}'s schedule")
            if spec.method == ref:
                epochs, reached = spec.epochs, target
            else:
                epochs, reached = match_epochs(
                    lambda e, s=spec: price(
                        s.method, repr(s.params), s.sparsity, s.distribution, s.dense_layers, e
                    ),
                    target,
                    spec.epochs,
                )
            train_steps = None
            if abs(reached - target) / target > TOLERANCE:  # end inside an epoch instead
                spe = steps_per_epoch(spec)
                train_steps, epochs, reached = match_steps(
                    lambda n, s=spec, spe=spe: price(
                        s.method,
                        repr(s.params),
                        s.sparsity,
                        s.distribution,
                        s.dense_layers,
                        -(-n // spe),
                        n if n % spe else None,
                    ),
                    target,
                    epochs,
                    spe,
                )
        except UserError as exc:  # a pricing failure is one clear line, never a retry
            raise UserError(f"--match flops: cannot price {spec.method}: {exc}") from exc
        error = abs(reached - target) / target
        if error > TOLERANCE:
            raise UserError(
                f"--match flops: {spec.method} cannot get within 5% of {ref}'s training FLOPs (best {epochs} epochs, {100 * error:.1f}% off)"
            )
        budget = f"{epochs} epochs" + (f" ({train_steps} steps)" if train_steps else "")
        log(
            f"match flops: {spec.method} s={spec.sparsity} {spec.distribution}: {budget} ({reached / target:.3f}x {ref}'s FLOPs at {reference.epochs} epochs)"
        )
        out.append(
            dataclasses.replace(
                spec,
                epochs=epochs,
                train_steps=train_steps,
                budget_mode="flops",
                match_ref=ref,
                match_epochs=reference.epochs,
                match_target_flops=target,
            )
        )
    return out
