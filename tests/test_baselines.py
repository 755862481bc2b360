"""RigL and SET schedules, SET's seeded randomness, and the six-method comparison end to end."""

import json
import math

import pytest
import torch

from gapbench.cli import main
from gapbench.errors import UserError
from gapbench.method import get_method_class
from gapbench.testing import _Run


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core box run several times faster on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(name, params, seed=0, epochs=6, steps=5):
    return _Run(get_method_class(name), params, 0.8, "uniform", seed, epochs, steps, "sgd")


def test_rigl_update_steps_and_cosine_drop_fraction():
    run = _run("rigl", {"alpha": 0.3, "delta_t": 4, "t_end": 0.75})
    rigl = run.method
    assert rigl.t_end == round(0.75 * 30) == 22
    updates = [s for s in range(30) if rigl.is_update_step(s)]
    assert updates == [4, 8, 12, 16, 20]
    assert rigl.drop_fraction(0) == pytest.approx(0.3)
    assert rigl.drop_fraction(11) == pytest.approx(0.15)
    assert rigl.drop_fraction(8) == pytest.approx(0.15 * (1 + math.cos(math.pi * 8 / 22)))
    assert all(rigl.dense_grad_step(s) == (s in updates) for s in range(30))
    counts = {n: run.masks.count(n) for n in run.masks.names}
    run.train_epochs(0, run.epochs)
    log = rigl.log["updates"]
    assert [u["step"] for u in log] == updates
    assert all(u["turnover"] > 0 for u in log)
    assert log[0]["turnover"] > log[-1]["turnover"]  # the drop fraction decays
    assert {n: run.masks.count(n) for n in run.masks.names} == counts  # exact counts throughout
    assert rigl.log["delta_t_steps"] == 4 and rigl.log["t_end_step"] == 22


def test_rigl_delta_as_a_fraction_of_the_run():
    run = _run("rigl", {"delta_frac": 0.1})
    assert run.method.delta_t == 3 and run.method.log["delta_t_steps"] == 3
    with pytest.raises(UserError, match="delta_t"):
        _run("rigl", {"delta_t": 0})


def test_set_updates_once_per_epoch_by_default_and_keeps_its_params():
    run = _run("set", {})
    assert run.method.delta_t == 5 and run.method.params["delta_t"] == 0  # as the user gave it
    run.train_epochs(0, run.epochs)
    assert [u["step"] for u in run.method.log["updates"]] == [5, 10, 15, 20]  # t_end = 22


def test_rigl_grows_where_the_gradient_is_largest_and_starts_them_at_zero():
    run = _run("rigl", {"alpha": 0.5, "delta_t": 1, "t_end": 1.0})
    rigl, name = run.method, "fc1.weight"
    before = run.masks.masks[name].clone()
    grad = torch.zeros_like(run.masks.params[name])
    grad[~before] = torch.rand(int((~before).sum()))
    run.masks.params[name].grad = grad.clone()
    rigl._scores = {n: torch.zeros_like(run.masks.params[n]) for n in run.masks.names}
    rigl._scores[name] = grad.abs()
    rigl._update(1)
    after = run.masks.masks[name]
    grown = after & ~before
    k = int(grown.sum())
    assert k == int(0.5 * 0.5 * (1 + math.cos(math.pi / 30)) * int(before.sum()))
    best = torch.topk(grad.flatten(), k).indices
    assert set(best.tolist()) == set(grown.flatten().nonzero().flatten().tolist())
    assert torch.all(run.masks.params[name][grown] == 0)


def test_set_regrowth_is_seeded():
    def final_masks(seed):
        run = _run("set", {"delta_t": 5}, seed=seed)
        run.train_epochs(0, run.epochs)
        return run.masks.checksum(), run.method.log["updates"]

    a, log_a = final_masks(0)
    b, _ = final_masks(0)
    c, _ = final_masks(1)
    assert a == b and a != c
    assert all(u["drop_fraction"] == 0.3 for u in log_a)  # SET's constant zeta
    assert not any(_run("set", {}).method.dense_grad_step(s) for s in range(30))


def test_six_methods_on_the_embedded_classification_task(tmp_path, capsys):
    code = main(
        [
            "run",
            "--task",
            "classification",
            "--methods",
            "dense,static,magnitude,set,rigl,gap",
            "--epochs",
            "4",
            "--method-arg",
            "gap.rounds=1",
            "--method-arg",
            "gap.epochs_per_step=1",
            "--method-arg",
            "rigl.delta_frac=0.1",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for method in ("dense", "static", "magnitude", "set", "rigl", "gap"):
        assert f"| {method} |" in out
    records = {
        r["method"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))
    }
    for method in ("static", "magnitude", "set", "rigl", "gap"):
        assert records[method]["measured_sparsity"] == pytest.approx(0.9, abs=1e-4)
    steps = records["rigl"]["budget"]["total_steps"]
    for method in ("set", "rigl"):  # schedule in steps and turnover of every update, recorded
        log = records[method]["method_log"]
        assert log["t_end_step"] == round(0.75 * steps) and log["alpha"] == 0.3
        assert log["updates"] and all(0 < u["turnover"] <= 0.3 for u in log["updates"])
    assert records["rigl"]["method_log"]["delta_t_steps"] == round(0.1 * steps)
    # RigL's dense-gradient steps cost training FLOPs that static sparse training does not pay.
    assert records["rigl"]["train_flops"] > records["static"]["train_flops"]
