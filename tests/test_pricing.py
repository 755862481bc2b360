"""`--match flops` pricing: the epoch search is bounded, pruning-at-init methods are priced as
the static sparse training they are (no probe; their own setup once under global), the pattern
is priced, methods whose per-layer FLOPs move are refused, and the price of a real run equals
what its ledger charges."""

import dataclasses

import pytest
from helpers import run_one

from gapbench.engine.estimate import match_epochs, trains_fixed_masks
from gapbench.errors import UserError
from gapbench.matching import _estimator, match_flops
from gapbench.registry import get_method_class
from gapbench.runspec import GridRequest, resolve_grid


class Counting:
    """A price function that counts its calls."""

    def __init__(self, price):
        self.price, self.calls = price, 0

    def __call__(self, epochs):
        self.calls += 1
        return self.price(epochs)


def test_match_epochs_finds_the_closest_budget_past_a_short_schedule():
    price = Counting(lambda e: None if e < 5 else 10.0 * e)  # GaP: nothing below its grow phase
    assert match_epochs(price, 71.0, upper=6) == (7, 70.0)
    assert match_epochs(price, 76.0, upper=6) == (8, 80.0)
    assert match_epochs(lambda e: 10.0 * e, 3.0, upper=6) == (1, 10.0)


def test_a_price_that_always_fails_is_one_clear_error_not_a_loop():
    price = Counting(lambda e: None)
    with pytest.raises(UserError, match="no budget of up to 96 epochs"):
        match_epochs(price, 100.0, upper=6)
    assert price.calls <= 10  # was: doubling forever (250k calls in 5 s)


def test_a_target_out_of_reach_is_one_clear_error():
    price = Counting(lambda e: 1.0)
    with pytest.raises(UserError, match="even 64 epochs cost less"):
        match_epochs(price, 100.0, upper=2)
    assert price.calls <= 20


def test_pruning_at_init_methods_train_fixed_masks_and_the_others_do_not():
    fixed = {
        n for n in ("static", "snip", "grasp", "synflow") if trains_fixed_masks(get_method_class(n))
    }
    assert fixed == {"static", "snip", "grasp", "synflow"}
    for name in ("gap", "rigl", "set", "snfs", "magnitude", "oneshot"):
        assert not trains_fixed_masks(get_method_class(name)), name


def _grid(methods, **kw):
    return resolve_grid(
        GridRequest(task="classification", profile="tiny", methods=methods, epochs=6, **kw)
    )


def test_match_flops_prices_snip_grasp_and_synflow_as_static_at_the_target():
    specs = _grid(["gap", "snip", "grasp", "synflow", "static"], method_args={"gap": {"rounds": 1}})
    lines = []
    matched = {s.method: s for s in match_flops(specs, "gap", log=lines.append)}
    target = matched["gap"].match_target_flops
    estimator = _estimator(specs[0])
    for name in ("snip", "grasp", "synflow"):
        spec = matched[name]
        assert spec.budget_mode == "flops" and spec.epochs == matched["static"].epochs
        reached = estimator.train_flops(
            lambda n=name, p=spec.params: get_method_class(n)(**p), spec.epochs, 0.9, "uniform"
        )
        assert abs(reached / target - 1) <= 0.05, name


def test_match_flops_under_global_prices_the_split_that_the_scores_give():
    specs = _grid(
        ["snip", "grasp", "synflow"],
        distributions=["global"],
        method_args={"synflow": {"rounds": 10}},
    )
    matched = {s.method: s for s in match_flops(specs, "snip", log=lambda m: None)}
    target = matched["snip"].match_target_flops
    assert all(abs(s.match_target_flops / target - 1) < 1e-12 for s in matched.values())
    assert {s.budget_mode for s in matched.values()} == {"flops"}


def test_match_flops_refuses_snfs_and_global_gap_with_one_line():
    with pytest.raises(UserError, match="cannot price snfs under --distribution uniform"):
        match_flops(_grid(["gap", "snfs"], method_args={"gap": {"rounds": 1}}), "gap")
    with pytest.raises(UserError, match="cannot price gap under --distribution global"):
        match_flops(
            _grid(["gap", "snip"], distributions=["global"], method_args={"gap": {"rounds": 1}}),
            "gap",
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, distribution, pattern, params",
    [
        ("snip", "global", "unstructured", {}),
        ("grasp", "uniform", "unstructured", {}),
        ("magnitude", "uniform", "nm:2:4", {}),  # the N:M kept-per-group staging is priced
    ],
)
def test_the_price_of_a_run_is_what_its_ledger_charges(
    tmp_path, method, distribution, pattern, params
):
    request = dict(profile="digits", epochs=4, distributions=[distribution], pattern=pattern)
    record = run_one(tmp_path, method=method, params=params, **request)
    (spec,) = resolve_grid(
        GridRequest(
            task="classification",
            methods=[method],
            method_args={method: params} if params else {},
            **request,
        )
    )
    spec = dataclasses.replace(spec, seed=0)
    priced = _estimator(spec).train_flops(
        spec.build_method, spec.epochs, spec.sparsity, distribution
    )
    ratio = priced / record.flops["train"]
    print(f"{method} {distribution} {pattern}: priced / charged = {ratio:.4f}")
    assert ratio == pytest.approx(1.0, abs=0.01)


def test_match_steps_ends_a_budget_inside_an_epoch_when_no_whole_epoch_is_within_five_percent():
    from gapbench.matching import match_steps

    spe, per_step = 17, 3.0  # dense: every step costs the same
    target = per_step * 27.4  # 1.61 epochs: 1 epoch is 38% short, 2 are 24% over
    steps, epochs, reached = match_steps(lambda n: per_step * n, target, 2, spe)
    assert (steps, epochs) == (27, 2) and abs(reached / target - 1) < 0.02
    whole, epochs, _ = match_steps(lambda n: per_step * n, per_step * 34, 2, spe)
    assert whole is None and epochs == 2  # exactly two epochs: a whole-epoch budget
    short = match_steps(lambda n: None if n < 20 else per_step * n, per_step * 10, 1, spe)
    assert short[0] == 20  # never below the first feasible budget
