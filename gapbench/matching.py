"""`--match flops`: give every sparse method of a comparison the epochs at which its training FLOPs
equal the reference method's at the budget (within 5%, checked), priced from plans before training.

The price of a budget depends on the task, the method, its parameters, the sparsity and the
distribution, not on the seed: it is computed once per combination (seed 0's masks).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import torch

from gapbench.engine.estimate import FlopsEstimator, match_epochs
from gapbench.errors import UserError
from gapbench.registry import get_method_class, get_task_class
from gapbench.runspec import RunSpec
from gapbench.sparse.selection import parse_dense_layers
from gapbench.task import BuildRequest

TOLERANCE = 0.05


def _estimator(spec: RunSpec) -> FlopsEstimator:
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
        profile, task.build(profile, request), parse_dense_layers(spec.dense_layers)
    )


def match_flops(specs: list[RunSpec], ref: str, log=print) -> list[RunSpec]:
    """FLOPs-matched copies of `specs` (budget_mode "flops"); the reference keeps its epochs."""
    refs = {(s.sparsity, s.distribution): s for s in specs if s.method == ref}
    if not refs:
        raise UserError(f"--match flops needs the reference --match-ref {ref} among --methods")
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
    ) -> float | None:
        spec = next(
            s
            for s in specs
            if (s.method, repr(s.params), s.sparsity, s.distribution)
            == (method, params_key, sparsity, distribution)
        )
        estimator = estimators.get((dense_key,)) or estimators.setdefault(
            (dense_key,), _estimator(spec)
        )
        cls = get_method_class(method)
        try:
            return estimator.train_flops(lambda: cls(**spec.params), epochs, sparsity, distribution)
        except UserError:
            return None  # shorter than the method's fixed schedule allows

    for spec in specs:
        if not get_method_class(spec.method).sparse:
            # Dense takes whole epochs of full cost: a sparse method's budget is seldom a whole
            # number of them. It stays the epochs-mode reference it is.
            log(f"match flops: {spec.method} is dense: kept at {spec.epochs} epochs (epochs mode)")
            out.append(spec)
            continue
        reference = refs.get((spec.sparsity, spec.distribution)) or next(iter(refs.values()))
        target = price(
            reference.method,
            repr(reference.params),
            reference.sparsity,
            reference.distribution,
            reference.dense_layers,
            reference.epochs,
        )
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
        error = abs(reached - target) / target
        if error > TOLERANCE:
            raise UserError(
                f"--match flops: {spec.method} cannot get within 5% of {ref}'s training FLOPs (best {epochs} epochs, {100 * error:.1f}% off)"
            )
        log(
            f"match flops: {spec.method} s={spec.sparsity} {spec.distribution}: {epochs} epochs ({reached / target:.3f}x {ref}'s FLOPs at {reference.epochs} epochs)"
        )
        out.append(
            dataclasses.replace(
                spec,
                epochs=epochs,
                budget_mode="flops",
                match_ref=ref,
                match_epochs=reference.epochs,
                match_target_flops=target,
            )
        )
    return out
