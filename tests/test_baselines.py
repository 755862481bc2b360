"""RigL, SET and GMP held to their reference code: schedules, what an update does, seeding."""

import math

import pytest
import torch

from baselines.rigl import RigLParams, UpdateSchedule, drop_and_grow, drop_scores
from gapbench.errors import UserError
from gapbench.registry import get_method_class
from gapbench.sparse.method import Budget
from gapbench.testing import Harness


def _run(name, params, seed=0, epochs=6, steps=5, optimizer="sgd"):
    return Harness(get_method_class(name), params, 0.8, "uniform", seed, epochs, steps, optimizer)


def test_rigl_updates_from_step_zero_to_t_end_inclusive_with_cosine_drop():
    run = _run("rigl", {"alpha": 0.3, "delta_t": 4, "delta_t_batch": 8, "t_end": 0.75})
    schedule = run.method.schedule
    assert schedule.t_end == round(0.75 * 30) == 22
    assert [s for s in range(30) if schedule.is_update(s)] == [0, 4, 8, 12, 16, 20]
    schedule = UpdateSchedule(RigLParams(delta_t=4, delta_t_batch=8, t_end=0.8), Budget(6, 5, 8))
    assert [s for s in range(30) if schedule.is_update(s)] == [
        0,
        4,
        8,
        12,
        16,
        20,
        24,
    ]  # 24 = T_end
    assert schedule.drop_fraction(0) == pytest.approx(0.3)
    assert schedule.drop_fraction(12) == pytest.approx(0.15)
    assert schedule.drop_fraction(24) == pytest.approx(0.0)
    run.train_epochs(0, run.epochs)
    log = run.method.log["updates"]
    assert [u["step"] for u in log] == [0, 4, 8, 12, 16, 20]
    assert log[0]["turnover"] > log[-1]["turnover"] > 0
    assert run.method.log["delta_t_steps"] == 4 and run.method.log["t_end_step"] == 22


def test_rigl_interval_is_defined_in_samples_and_scales_with_the_batch():
    imagenet = UpdateSchedule(RigLParams(), Budget(100, 5000, 256))
    assert imagenet.delta_t == 1600  # 100 steps at batch 4096 = 409,600 samples
    assert UpdateSchedule(RigLParams(), Budget(100, 312, 4096)).delta_t == 100
    assert UpdateSchedule(RigLParams(delta_frac=0.1), Budget(6, 5, 8)).delta_t == 3
    with pytest.raises(UserError, match="delta_t"):
        RigLParams(delta_t=0)


def test_rigl_update_iteration_replaces_the_optimizer_step():
    run = _run("rigl", {"delta_t": 4, "delta_t_batch": 8})
    loop = run.loop
    weights = {}

    def snapshot():
        weights[loop.step] = {n: run.masks.params[n].detach().clone() for n in run.masks.names}

    snapshot()
    run.train_epochs(0, 1, on_step=lambda r: snapshot())
    for step in (0, 4):  # update iterations: surviving weights did not move
        before, after = weights[step], weights[step + 1]
        for n in run.masks.names:
            both = (before[n] != 0) & (after[n] != 0)
            assert torch.equal(before[n][both], after[n][both])
    # a normal step moves them
    assert not torch.equal(weights[1]["fc1.weight"], weights[2]["fc1.weight"])
    run = _run("rigl", {"delta_t": 4, "delta_t_batch": 8, "replace_step": False})
    assert not run.plan.replaces_step(4) and run.plan.dense_grad(4)


def test_rigl_keeps_a_weight_dropped_and_regrown_in_one_update():
    run = _run("rigl", {"alpha": 0.5, "delta_t": 100, "delta_t_batch": 8}, optimizer="sgd")
    run.train_epochs(0, 1)  # momentum buffers exist
    name = "fc2.weight"
    masks, param = run.masks, run.masks.params[name]
    alive = masks.masks[name].clone()
    smallest = run.method.magnitude(name).masked_fill(~alive, float("inf")).flatten().argmin()
    # Grow scores: highest exactly where the smallest live weight is (it will be dropped).
    score = torch.zeros_like(param).flatten()
    score[smallest] = 10.0
    value = param.detach().flatten()[smallest].item()
    buf = run.opt.state[param]["momentum_buffer"].flatten()[smallest].item()
    drop_and_grow(run.method, name, 0.5, score.view_as(param), reinit_when_same=False)
    assert masks.masks[name].flatten()[smallest]
    assert param.detach().flatten()[smallest].item() == value  # value kept
    assert run.opt.state[param]["momentum_buffer"].flatten()[smallest].item() == buf  # state kept
    drop_and_grow(run.method, name, 0.5, score.view_as(param), reinit_when_same=True)
    assert param.detach().flatten()[smallest].item() == 0.0


def test_rigl_grows_where_the_dense_gradient_is_largest_and_starts_them_at_zero():
    run = _run("rigl", {"alpha": 0.5, "delta_t": 1, "delta_t_batch": 8, "t_end": 1.0})
    name = "fc1.weight"
    before = run.masks.masks[name].clone()
    grad = torch.zeros_like(run.masks.params[name])
    grad[~before] = torch.rand(int((~before).sum()))
    drop_and_grow(run.method, name, 0.25, grad, reinit_when_same=False)
    grown = run.masks.masks[name] & ~before
    k = int(0.25 * int(before.sum()))
    assert int(grown.sum()) == k
    assert set(torch.topk(grad.flatten(), k).indices.tolist()) == set(
        grown.flatten().nonzero().flatten().tolist()
    )
    assert torch.all(run.masks.params[name][grown] == 0)


def test_rigl_drop_ties_fall_at_random_with_the_reference_noise_and_by_index_without():
    """google-research/rigl adds N(0, 1e-5^2) to |w| before the drop (`noise_std`): among weights
    of equal magnitude (grown ones still at zero) which go is random, seeded by (seed, step,
    layer); drop_noise=0 keeps the lower indices."""
    name = "fc1.weight"

    def dropped(params, seed=0, step=4):
        run = _run("rigl", {"delta_t": 1, "delta_t_batch": 8, **params}, seed=seed)
        masks, param = run.masks, run.masks.params[name]
        with torch.no_grad():  # every live weight tied at 0.5
            param.copy_(masks.masks[name].float() * 0.5)
        before = masks.masks[name].clone()
        scores = drop_scores(run.method, name, step, run.method.params.drop_noise)
        # Grow scores that never pick a dropped weight back: what goes is what the drop chose.
        grow = before.float().neg()
        drop_and_grow(run.method, name, 0.25, grow, False, scores)
        gone = (before & ~masks.masks[name]).flatten().nonzero().flatten().tolist()
        live = before.flatten().nonzero().flatten().tolist()
        return gone, live

    gone, live = dropped({"drop_noise": 0.0})
    assert gone == live[-len(gone) :]  # ties by index: the lower indices are kept
    a, live = dropped({})
    assert a != live[-len(a) :] and len(a) == len(gone)  # the reference's noise breaks the tie
    assert dropped({}) == (a, live) and dropped({}, seed=1)[0] != a and dropped({}, step=8)[0] != a
    assert RigLParams().drop_noise == 1e-5


def test_set_original_removes_the_weakest_positives_and_negatives_separately():
    run = _run("set", {"zeta": 0.25})
    name = "fc2.weight"
    masks, param = run.masks, run.masks.params[name]
    alive = masks.masks[name]
    with torch.no_grad():  # 26 live weights: 13 positive (1..13), 13 negative (-1..-13)
        values = torch.zeros(param.numel())
        idx = alive.flatten().nonzero().flatten()
        values[idx[:13]] = torch.arange(1, 14, dtype=torch.float)
        values[idx[13:26]] = -torch.arange(1, 14, dtype=torch.float)
        param.copy_(values.view_as(param))
    pos, neg = idx[:3].tolist(), idx[13:16].tolist()  # int(0.25 * 13) = 3 each side
    run.method.on_epoch_end(0)
    now = param.detach().flatten()
    for i in pos + neg:  # removed (regrown ones restart at zero)
        assert now[i] == 0
    for i in idx[3:13].tolist() + idx[16:26].tolist():
        assert now[i] != 0 and masks.masks[name].flatten()[i]
    assert masks.count(name) == 26  # as many regrown at random
    assert run.method.log["updates"][0]["drop_fraction"] == 0.25


def test_set_rewires_after_every_epoch_but_the_last_and_is_seeded():
    def final(seed):
        run = _run("set", {}, seed=seed)
        run.train_epochs(0, run.epochs)
        return run.masks.checksum(), run.method.log["updates"]

    a, log = final(0)
    assert [u["step"] for u in log] == [5, 10, 15, 20, 25]  # 6 epochs of 5 steps, to the end
    assert all(u["drop_fraction"] == 0.3 for u in log)  # constant zeta
    assert final(0)[0] == a and final(1)[0] != a
    run = _run("set", {})
    assert not any(run.plan.dense_grad(s) for s in range(30))  # random growth reads no gradient


def test_set_rigl_variant_follows_rigls_schedule_after_the_weight_step():
    run = _run("set", {"variant": "rigl", "delta_t": 4, "delta_t_batch": 8})
    assert not run.plan.replaces_step(4) and not run.plan.dense_grad(4)
    run.train_epochs(0, run.epochs)
    log = run.method.log["updates"]
    assert [u["step"] for u in log] == [0, 4, 8, 12, 16, 20]
    assert log[0]["drop_fraction"] == pytest.approx(0.3) and log[-1]["drop_fraction"] < 0.3


def test_gmp_follows_the_cubic_schedule_and_only_prunes():
    run = _run("magnitude", {"start": 0.2, "end": 0.8})
    gmp = run.method
    assert gmp.t0 == 6 and gmp.t_end == 24 and gmp.interval == 5
    assert gmp.sparsity_at(6) == 0.0 and gmp.sparsity_at(24) == pytest.approx(0.8)
    assert gmp.sparsity_at(15) == pytest.approx(0.8 * (1 - 0.5**3))
    run.train_epochs(0, run.epochs)
    sparsities = [u["sparsity"] for u in gmp.log["updates"]]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.8, abs=1e-3)
    assert math.isclose(run.masks.overall_sparsity(), 0.8, abs_tol=1e-3)


def test_gmp_never_rounds_a_layer_below_its_final_count():
    from torch import nn

    from gapbench.engine.loop import StepLoop
    from gapbench.sparse.distribution import uniform_counts
    from gapbench.sparse.masks import MaskSet
    from gapbench.sparse.method import Context

    # Layer sizes whose largest-remainder split at the 193rd of 200 steps gives one layer fewer
    # weights than at the final sparsity (found by search; what broke a real run).
    sizes = [2483, 2573, 2103, 2362]
    final = uniform_counts(sizes, 0.9)
    early = uniform_counts(sizes, 0.9 * (1 - (1 - 193 / 200) ** 3))
    assert min(a - b for a, b in zip(early, final)) < 0
    model = nn.Sequential(*[nn.Linear(1, n, bias=False) for n in sizes])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    names = [f"{i}.weight" for i in range(3)]
    masks = MaskSet(model, names)
    gmp = get_method_class("magnitude")(start=0.0, end=1.0, interval=1)
    budget = Budget(1, 200)
    plan = gmp.plan(budget)
    gmp.setup(Context(model, opt, masks, budget, 0.9, "uniform", 0))
    loop = StepLoop(
        model,
        opt,
        masks,
        gmp,
        plan,
        lambda m, x: sum(layer(x).sum() for layer in m),
        total_steps=200,
    )
    loop.run_epoch(0, (torch.randn(2, 1) for _ in range(200)))
    gmp.finish()
    assert masks.counts() == gmp.target_counts == dict(zip(names, uniform_counts(sizes, 0.9)))


def test_set_original_removes_live_zeros_as_the_reference_thresholds_do():
    """A kept weight stuck at exactly zero (a dead channel) is removed and regrown elsewhere; keeping
    it let dead connections pile up and the real density fall every epoch."""
    run = _run("set", {"zeta": 0.25})
    name = "fc2.weight"
    masks, param = run.masks, run.masks.params[name]
    alive = masks.masks[name]
    idx = alive.flatten().nonzero().flatten()
    with torch.no_grad():  # 20 signed live weights and 6 live zeros
        values = torch.zeros(param.numel())
        values[idx[:10]] = torch.arange(1, 11, dtype=torch.float)
        values[idx[10:20]] = -torch.arange(1, 11, dtype=torch.float)
        param.copy_(values.view_as(param))
    removed = run.method._rewire(name, run.method.random_scores(5)[name])
    now = masks.masks[name].flatten()
    zeros = idx[20:26].tolist()
    # int(0.25 * 10) = 2 removed each side plus the 6 zeros, as many regrown at random.
    assert removed == 10 and masks.count(name) == 26
    kept = idx[2:10].tolist() + idx[12:20].tolist()
    assert all(bool(now[i]) for i in kept)
    regrown_in_place = sum(bool(now[i]) for i in zeros)  # random regrowth may land on one again
    assert regrown_in_place < 6
