"""The board checks read what they claim from records: each passes on a board built to pass and
fails, naming the number, on one built to fail."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import cli

from gapbench.report.board_checks import board_checks, convergence_checks, schedule_checks
from gapbench.report.records import (
    REQUIRED_FLOPS as FLOPS,
)
from gapbench.report.records import (
    SCHEMA_VERSION,
    RunRecord,
    run_id,
    write_record,
)

TOTAL = 1000


def rec(method: str, seed: int, value: float, multiplier: float = 1.0, **over: Any) -> RunRecord:
    sparsity = 0.0 if method == "dense" else 0.9
    identity = {"task": "classification", "profile": "bench", "method": method, "seed": seed,
                "sparsity": sparsity, "multiplier": multiplier, "epochs": 20}  # fmt: skip
    plan, log, params = {}, {}, {}
    if method == "gap":
        params = {"partitions": 3}
        plan = {"grow_steps": 9, "steps_per_grow_step": 100, "finetune_epochs": 4,
                "trainer_epochs": 20}  # fmt: skip
    if method == "magnitude":
        log = {"end_step": 600, "updates": []}
    if method in ("rigl", "set"):
        log = {"t_end_step": 750, "updates": [{"step": 50 * i} for i in range(16)]}
    budget = {"total_steps": TOTAL, "warmup_steps": 50, "lr_schedule": "cosine",
              "test_examples": 2000, "trainer_epochs": 20}  # fmt: skip
    fields: dict[str, Any] = dict(
        schema=SCHEMA_VERSION, run_id=run_id(identity), status="complete", identity=identity,
        task="classification", profile="bench", dataset="d", method=method, params=params,
        sparsity=sparsity, distribution="dense" if method == "dense" else "uniform", seed=seed,
        epochs=20, budget_mode="epochs", multiplier=multiplier, metric="top1",
        metrics={"top1": value}, val_metrics={}, measured_sparsity=sparsity, prunable_params=10,
        alive_prunable_params=1, conv_linear_density=0.1, params_total=10, params_alive=1,
        policy={}, per_layer={}, budget=budget, plan=plan, flops=dict.fromkeys(FLOPS, 1.0), method_log=log, history=[],
        wall_time_s=1.0, device="cpu", versions={}, git_commit=None, task_extra={},
    )  # fmt: skip
    for key, value in over.items():
        target, _, leaf = key.partition("__")
        if leaf:
            fields[target] = {**fields[target], leaf: value}
        else:
            fields[key] = value
    return RunRecord(**fields)


def good_board() -> list[RunRecord]:
    runs = []
    for seed in range(3):
        runs.append(rec("dense", seed, 95.0 + 0.1 * seed))
        runs.append(rec("dense", seed, 95.3 + 0.1 * seed, multiplier=2.0))
        runs.append(rec("gap", seed, 90.0 + 0.2 * seed))
        runs.append(rec("magnitude", seed, 88.0 + 0.2 * seed))
        runs.append(rec("rigl", seed, 85.0 + 0.2 * seed))
        runs.append(rec("set", seed, 80.0 + 0.2 * seed))
    return runs


def failing(checks) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_a_board_built_to_pass_passes_every_check():
    checks = board_checks(good_board(), {("classification", "bench"): 0.9})
    assert len(checks) >= 12 and failing(checks) == []


@pytest.mark.parametrize(
    "method, override, failing_check",
    [
        ("dense", {"budget__warmup_steps": 200}, "warm-up"),
        ("gap", {"plan__grow_steps": 6}, "rounds R >= 3"),
        ("gap", {"plan__steps_per_grow_step": 40}, "grow phase"),
        ("gap", {"plan__finetune_epochs": 8}, "fine-tune"),
        ("magnitude", {"method_log__end_step": 750}, "last prune"),  # cosine LR 0.15x there
        ("rigl", {"method_log__updates": [{"step": 1}] * 5}, "mask updates"),
        ("set", {"method_log__updates": []}, "mask updates"),
        ("dense", {"budget__test_examples": 500}, "test split"),
    ],
)
def test_each_schedule_check_fails_on_the_record_that_breaks_it(method, override, failing_check):
    runs = [r for r in good_board() if r.method != method]
    runs.append(rec(method, 0, 90.0, **override))
    names = failing(schedule_checks(runs))
    assert names and all(failing_check in n for n in names), names


def test_dense_still_improving_at_twice_the_budget_fails_convergence():
    runs = [r for r in good_board() if not (r.method == "dense" and r.multiplier == 2.0)]
    runs += [rec("dense", s, 97.0, multiplier=2.0) for s in range(3)]
    (check,) = convergence_checks(runs)
    assert not check.ok and "2x 97.000" in check.value


def test_a_ceiling_board_and_overlapping_intervals_fail_separation():
    runs = [r for r in good_board() if r.method not in ("gap", "set")]
    runs += [rec("gap", s, 88.0 + 7.2 * s) for s in range(3)]  # at dense's level, wide
    runs += [rec("set", s, 78.0 + 3 * s) for s in range(3)]  # the worst, overlapping gap
    names = failing(board_checks(runs, {("classification", "bench"): 0.9}))
    assert any("dense's 95% interval" in n for n in names)
    assert any("intervals disjoint" in n for n in names)


def test_check_board_command_prints_every_check_and_exits_one_on_a_failure(tmp_path, capsys):
    for r in good_board():
        write_record(r, tmp_path)
    code, out, _ = cli(capsys, "check-board", "--out", str(tmp_path))
    assert code == 0 and "FAIL" not in out and "board checks hold" in out
    write_record(rec("gap", 3, 90.0, plan__grow_steps=3), tmp_path)
    code, out, _ = cli(capsys, "check-board", "--out", str(tmp_path))
    assert code == 1 and "FAIL  classification/bench gap x1: rounds R >= 3" in out
