"""The budget axis (budget.md and plots/<task>-<profile>-budget.png): cells checked against
statistics computed here, the runs that must not count, and byte-for-byte rebuilds."""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from gapbench.cli import main
from gapbench.report.budget import budget_markdown, budget_table
from gapbench.report.leaderboard import _digits, _fmt, leaderboard_frame, records_frame
from gapbench.report.records import (
    SCHEMA_VERSION,
    RunRecord,
    load_records,
    run_id,
    write_record,
)

BASE = {"dense": 92.0, "gap": 88.0, "magnitude": 86.0}
GAIN = {"dense": 0.5, "gap": 3.0, "magnitude": 1.0}  # per doubling of the budget
SEEDS = (0, 1, 2)
BUDGETS = (1.0, 2.0, 4.0)
PNG = "plots/classification-tiny-budget.png"


def make(
    method: str,
    seed: int,
    value: float,
    multiplier: float = 1.0,
    status: str = "complete",
    mode: str = "epochs",
    metric: str = "top1",
    **identity_overrides: Any,
) -> RunRecord:
    """A valid record as the runner writes it at `multiplier` (epochs and GaP's T stretched)."""
    dense = method == "dense"
    epochs = round(20 * multiplier)
    params = {} if method != "gap" else {"epochs_per_step": round(2 * multiplier), "finetune": -1}
    identity = {
        "task": "classification",
        "profile": "tiny",
        "dataset": "shapes",
        "method": method,
        "params": params,
        "sparsity": 0.0 if dense else 0.9,
        "distribution": "dense" if dense else "uniform",
        "dense_layers": "first",
        "seed": seed,
        "epochs": epochs,
        "batch_size": 64,
        "precision": "fp32",
        "max_steps": None,
        "pattern": "unstructured",
        "budget_mode": mode,
        "multiplier": multiplier,
        "match_ref": "gap" if mode == "flops" else "",
        "match_epochs": epochs if mode == "flops" else 0,
        "data": None,
        "schema": SCHEMA_VERSION,
        **identity_overrides,
    }
    scored = status == "complete"
    return RunRecord(
        schema=SCHEMA_VERSION, run_id=run_id(identity), status=status, identity=identity,
        task="classification", profile="tiny", dataset="shapes", method=method, params=params,
        sparsity=identity["sparsity"], distribution=identity["distribution"], seed=seed,
        epochs=epochs, budget_mode=mode, multiplier=multiplier, metric=metric,
        metrics={metric: value},  # kept even where not scored: the board must not count it
        val_metrics={}, measured_sparsity=identity["sparsity"], prunable_params=100,
        alive_prunable_params=10, conv_linear_density=0.1, params_total=120, params_alive=30,
        policy={}, per_layer={}, budget={"trainer_epochs": epochs}, plan={},
        flops={"train": 30.0 * multiplier, "dense_train_budget": 100.0 * multiplier,
               "inference": 1.0, "dense_inference": 10.0},
        method_log={}, history=[], wall_time_s=1.0, device="cpu", versions={}, git_commit=None,
        task_extra={}, status_reason="" if scored else "stopped",
    )  # fmt: skip


def value(method: str, seed: int, multiplier: float) -> float:
    return BASE[method] + GAIN[method] * math.log2(multiplier) + (0.3, -0.4, 0.9)[seed]


def grid(methods=("dense", "gap", "magnitude"), budgets=BUDGETS) -> list[RunRecord]:
    return [make(m, s, value(m, s, x), x) for m in methods for x in budgets for s in SEEDS]


def write(out: Path, records: list[RunRecord]) -> list[RunRecord]:
    for r in records:
        write_record(r, out)
    return load_records(out)  # through the schema check, as the board reads them


def expected_cell(values: list[float], digits: int = 2) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1)"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.{digits}f} ± {half:.{digits}f} ({len(values)})"


def test_cells_are_mean_and_half_interval_over_seeds_per_method_and_budget(tmp_path):
    tables = budget_table(write(tmp_path, grid()))
    assert list(tables) == [("classification", "tiny", 0.9)]
    table = tables[("classification", "tiny", 0.9)]
    assert list(table.index) == ["dense", "gap", "magnitude"]  # GaP's stretched T: one row
    assert list(table.columns) == ["1x", "2x", "4x", "rank"]
    for method in BASE:
        for x in BUDGETS:
            want = expected_cell([value(method, s, x) for s in SEEDS])
            assert table.loc[method, f"{x:g}x"] == want, (method, x)
    # gap starts above magnitude and gains faster: first at every budget
    assert table.loc["gap", "rank"] == "1/1/1" and table.loc["magnitude", "rank"] == "2/2/2"
    assert table.loc["dense", "rank"] == ""
    assert table.attrs == {"metric": "top1", "epochs": {"1x": [20], "2x": [40], "4x": [80]}}


def test_cells_agree_with_the_leaderboards_rows_at_every_budget(tmp_path):
    records = write(tmp_path, grid() + [make("rigl", 0, 80.0, 2.0)])
    table = budget_table(records)[("classification", "tiny", 0.9)]
    board = leaderboard_frame(records_frame(records))
    checked = 0
    for _, section in board.groupby("multiplier"):
        places = _digits(section)
        for _, row in section.iterrows():
            mean = _fmt(row["mean"], places)
            half = _fmt(row["ci95_high"] - row["mean"], places)
            want = f"{mean} ({row['n']})" if row["n"] == 1 else f"{mean} ± {half} ({row['n']})"
            assert table.loc[row["method"], f"{row['multiplier']:g}x"] == want
            checked += 1
    assert checked == 10


def test_ranks_follow_the_means_at_each_budget(tmp_path):
    records = grid(("gap", "magnitude"), (1.0, 2.0))
    records += [make("static", s, 87.0 + 10 * (x - 1), x) for x in (1.0, 2.0) for s in SEEDS]
    table = budget_table(write(tmp_path, records))[("classification", "tiny", 0.9)]
    assert table.loc["gap", "rank"] == "1/2"  # 88.27 | 91.27
    assert table.loc["static", "rank"] == "2/1"  # 87 | 97
    assert table.loc["magnitude", "rank"] == "3/3"


def test_a_single_seed_cell_and_a_missing_budget(tmp_path):
    records = grid(("gap",), (1.0, 2.0)) + [make("magnitude", 0, 80.0, 2.0)]
    table = budget_table(write(tmp_path, records))[("classification", "tiny", 0.9)]
    assert table.loc["magnitude", "1x"] == "-" and table.loc["magnitude", "2x"] == "80.00 (1)"
    assert table.loc["magnitude", "rank"] == "-/2"
    assert "dense" not in table.index  # no dense runs: no dense row


def test_metrics_in_zero_one_get_three_digits(tmp_path):
    means = {("gap", 1.0): 0.80, ("gap", 2.0): 0.85, ("magnitude", 1.0): 0.70}
    means[("magnitude", 2.0)] = 0.72
    records = [
        make(m, s, v + 0.01 * s, x, metric="miou") for (m, x), v in means.items() for s in (0, 1)
    ]
    table = budget_table(write(tmp_path, records))[("classification", "tiny", 0.9)]
    assert table.loc["gap", "2x"] == expected_cell([0.85, 0.86], digits=3)


def test_no_table_unless_a_sparse_method_ran_at_two_budgets(tmp_path):
    # Dense at 1x and 2x (as the shipped partseg bench board), sparse methods at 1x only.
    records = grid(("dense",), (1.0, 2.0)) + grid(("gap", "magnitude"), (1.0,))
    loaded = write(tmp_path, records)
    assert budget_table(loaded) == {} and budget_markdown(loaded) == ""
    assert main(["leaderboard", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "leaderboard.md").exists()
    assert not (tmp_path / "budget.md").exists() and not (tmp_path / PNG).exists()


def test_configurations_that_differ_are_separate_rows_never_pooled(tmp_path):
    records = grid(("gap",), (1.0,)) + [
        make("gap", s, value("gap", s, x), x, precision="fp16") for x in (2.0,) for s in SEEDS
    ]
    # fp32 at 1x only, fp16 at 2x only: no configuration has two budgets.
    assert budget_table(write(tmp_path / "a", records)) == {}
    records += [make("gap", s, 50.0, 1.0, precision="fp16") for s in SEEDS]
    table = budget_table(write(tmp_path / "b", records))[("classification", "tiny", 0.9)]
    assert list(table.index) == ["gap [precision=fp16]", "gap [precision=fp32]"]
    assert table.loc["gap [precision=fp16]", "1x"] == expected_cell([50.0] * 3)
    assert table.loc["gap [precision=fp32]", "2x"] == "-"


@pytest.mark.parametrize("status", ["diverged", "stopped_early", "no_metric"])
def test_runs_that_are_not_complete_never_count(tmp_path, status):
    records = grid() + [make("gap", s, 0.0, 2.0, status=status) for s in (5, 6)]
    table = budget_table(write(tmp_path, records))[("classification", "tiny", 0.9)]
    assert table.loc["gap", "2x"] == expected_cell([value("gap", s, 2.0) for s in SEEDS])
    # Where a sparse method's only second budget is not complete, there is no axis.
    only = grid(("gap",), (1.0,)) + [make("gap", s, 0.0, 2.0, status=status) for s in SEEDS]
    assert budget_table(write(tmp_path / "only", only)) == {}


def test_flops_matched_runs_never_count(tmp_path):
    flops = [make(m, s, 0.0, 2.0, mode="flops") for m in ("dense", "gap") for s in SEEDS]
    table = budget_table(write(tmp_path, grid() + flops))[("classification", "tiny", 0.9)]
    assert table.loc["gap", "2x"] == expected_cell([value("gap", s, 2.0) for s in SEEDS])
    assert table.loc["dense", "2x"] == expected_cell([value("dense", s, 2.0) for s in SEEDS])
    only = grid(("gap",), (1.0,)) + [make("gap", s, 90.0, 2.0, mode="flops") for s in SEEDS]
    assert budget_table(write(tmp_path / "only", only)) == {}


def test_other_distributions_and_patterns_never_count(tmp_path):
    records = grid(("gap",), (1.0,))
    records += [make("gap", s, 0.0, 2.0, distribution="erk") for s in SEEDS]
    records += [make("gap", s, 0.0, 2.0, pattern="2:4") for s in SEEDS]
    assert budget_table(write(tmp_path, records)) == {}


def test_leaderboard_writes_budget_md_and_plot_and_rebuilds_byte_for_byte(tmp_path, capsys):
    write(tmp_path / "a", grid())
    assert main(["leaderboard", "--out", str(tmp_path / "a")]) == 0
    md = (tmp_path / "a" / "budget.md").read_text()
    assert md.startswith("# gapbench budget axis\n")
    assert "mean ± half the 95% t-interval" in md and "multiple of the profile's epochs" in md
    assert "## classification (tiny), 90% uniform: top1 vs budget" in md
    assert "| method | 1x (20 ep) | 2x (40 ep) | 4x (80 ep) | rank (1x/2x/4x) |" in md
    gap = expected_cell([value("gap", s, 4.0) for s in SEEDS])
    assert any(line.startswith("| gap |") and gap in line for line in md.splitlines())
    png = (tmp_path / "a" / PNG).read_bytes()
    assert png.startswith(b"\x89PNG")
    # Rebuilding, in place or from a copy of the records, gives the same bytes.
    assert main(["leaderboard", "--out", str(tmp_path / "a")]) == 0
    shutil.copytree(tmp_path / "a" / "records", tmp_path / "b" / "records")
    assert main(["leaderboard", "--out", str(tmp_path / "b")]) == 0
    for folder in ("a", "b"):
        assert (tmp_path / folder / "budget.md").read_text() == md
        assert (tmp_path / folder / PNG).read_bytes() == png


def test_the_plot_draws_only_methods_run_at_two_budgets(tmp_path):
    """The table lists a one-budget method (SNIP at 1x on the classification board); the plot
    draws lines only, so a lone collapsed point does not squash the axis."""
    from gapbench.report.plots import budget_lines

    records = grid(("dense", "gap", "magnitude"), (1.0, 2.0))
    records += [make("snip", s, 40.0 + s, 1.0) for s in SEEDS]
    loaded = write(tmp_path, records)
    assert "snip" in budget_table(loaded)[("classification", "tiny", 0.9)].index
    assert set(budget_lines(loaded)["method"]) == {"dense", "gap", "magnitude"}
