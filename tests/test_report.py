"""Leaderboards and plots from records alone: statistics, paired deltas, published rows, plots,
and byte-for-byte rebuilds."""

import math
import shutil

import pandas as pd
import pytest
from helpers import cli
from scipy import stats

from gapbench.report.intervals import t_interval
from gapbench.report.leaderboard import write_leaderboard
from gapbench.report.records import SCHEMA_VERSION, RunRecord, run_id, write_record


def fake(
    method,
    seed,
    value,
    sparsity=0.9,
    task="classification",
    profile="tiny",
    mode="epochs",
    epochs=20,
    match_epochs=None,
):
    dist = "dense" if method == "dense" else "uniform"
    sparsity = 0.0 if method == "dense" else sparsity
    identity = {
        "task": task,
        "profile": profile,
        "method": method,
        "params": {},
        "sparsity": sparsity,
        "distribution": dist,
        "seed": seed,
        "epochs": epochs,
        "budget_mode": mode,
        "pattern": "unstructured",
        "match_ref": "gap" if mode == "flops" else "",
        "match_epochs": match_epochs or epochs,
    }
    return RunRecord(
        schema=SCHEMA_VERSION, run_id=run_id(identity), status="complete", identity=identity,
        task=task, profile=profile, dataset="test data", method=method, params={},
        sparsity=sparsity, distribution=dist, seed=seed, epochs=epochs,
        budget_mode=mode, multiplier=1.0, metric="top1", metrics={"top1": value}, val_metrics={"top1": value},
        measured_sparsity=sparsity, prunable_params=100, alive_prunable_params=10, conv_linear_density=0.1,
        params_total=120, params_alive=30, policy={}, per_layer={}, budget={"trainer_epochs": epochs},
        plan={}, flops={"train": 30.0, "dense_train_budget": 100.0, "inference": 1.0, "dense_inference": 10.0},
        method_log={"partition_density": [[1.0, 0.1], [0.1, 1.0]]} if method == "gap" else {"updates": [{"step": 0, "turnover": 0.2}, {"step": 5, "turnover": 0.1}]},
        history=[], wall_time_s=1.0, device="cpu", versions={}, git_commit=None, task_extra={},
    )  # fmt: skip


def _write(out, runs):
    for r in runs:
        write_record(r, out)


def test_t_interval_matches_scipy():
    values = [90.0, 91.0, 93.0]
    mean, std, low, high = t_interval(values)
    assert mean == pytest.approx(91.333333) and std == pytest.approx(1.527525, rel=1e-5)
    half = stats.t.ppf(0.975, 2) * std / math.sqrt(3)
    assert (low, high) == pytest.approx((mean - half, mean + half))
    assert math.isnan(t_interval([1.0])[2])


def test_leaderboard_has_intervals_and_paired_differences(tmp_path):
    runs = [fake("magnitude", s, v) for s, v in enumerate([90.0, 91.0, 92.0])]
    runs += [fake("gap", s, v) for s, v in enumerate([92.0, 93.1, 93.9])]  # +2 every seed
    runs += [fake("static", s, v) for s, v in enumerate([91.0, 89.0, 93.0])]  # noisy, no signal
    _write(tmp_path, runs)
    table = write_leaderboard(tmp_path)
    csv = (tmp_path / "leaderboard.csv").read_text().splitlines()
    header = csv[0].split(",")
    for column in (
        "mean",
        "std",
        "n",
        "ci95_low",
        "ci95_high",
        "delta_vs_ref",
        "delta_ci95_low",
        "delta_ci95_high",
    ):
        assert column in header
    gap = table[table["method"] == "gap"].iloc[0]
    assert gap["delta_vs_ref"] == pytest.approx(2.0, abs=1e-9) and gap["delta_n"] == 3
    assert gap["delta_ci95_low"] > 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| gap | uniform | 0.90 | 93.00 ± 0.95 |" in md
    gap_line = next(line for line in md.splitlines() if line.startswith("| gap |"))
    static_line = next(line for line in md.splitlines() if line.startswith("| static |"))
    assert gap_line.count("*") == 1 and "*" not in static_line  # significant vs not


def test_rebuilding_from_records_reproduces_every_file_byte_for_byte(tmp_path):
    runs = [
        fake(m, s, 80.0 + s + i)
        for i, m in enumerate(["dense", "magnitude", "gap", "rigl"])
        for s in range(3)
    ]
    _write(tmp_path / "a", runs)
    write_leaderboard(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "records", tmp_path / "b" / "records")
    write_leaderboard(tmp_path / "b")
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert any(str(f).endswith(".png") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_plots_people_expect_are_written(tmp_path):
    _write(
        tmp_path,
        [
            fake(m, s, 80.0 + s)
            for m in ("dense", "magnitude", "gap", "rigl", "set")
            for s in range(2)
        ],
    )
    write_leaderboard(tmp_path)
    names = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert {
        "classification-tiny-flops.png",
        "classification-tiny-gap-schedule.png",
        "classification-tiny-turnover.png",
    } <= names
    assert any(n.endswith("-sparsity.png") for n in names)


def test_a_retired_boards_plots_go_with_its_records_and_other_files_stay(tmp_path):
    methods = ("dense", "magnitude", "gap", "rigl", "set")
    _write(tmp_path, [fake(m, s, 80.0 + s, profile=p) for m in methods for s in range(2)
                      for p in ("tiny", "bench")])  # fmt: skip
    write_leaderboard(tmp_path)
    (tmp_path / "plots" / "my-notes.png").write_bytes(b"not a board plot")
    assert (tmp_path / "plots" / "classification-tiny-flops.png").exists()
    for record in (tmp_path / "records").glob("*.json"):
        if '"profile": "tiny"' in record.read_text():
            record.unlink()
    write_leaderboard(tmp_path)
    names = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert not any(n.startswith("classification-tiny-") for n in names)
    assert "classification-bench-flops.png" in names and "my-notes.png" in names


def test_flops_matched_runs_form_their_own_section_keyed_by_the_reference_budget(tmp_path):
    runs = [fake("gap", s, 90.0, mode="flops", epochs=20) for s in range(2)]
    runs += [fake("magnitude", s, 89.0, mode="flops", epochs=17, match_epochs=20) for s in range(2)]
    runs += [fake("magnitude", s, 91.0) for s in range(2)]
    _write(tmp_path, runs)
    md = write_leaderboard(tmp_path) is not None and (tmp_path / "leaderboard.md").read_text()
    assert "training FLOPs matched to gap" in md
    section = md.split("training FLOPs matched to gap")[1]
    assert "| gap |" in section and "+1.00 [" in section  # paired with the matched magnitude


def test_paper_sections_show_published_rows_labelled(tmp_path):
    _write(tmp_path, [fake("gap", 0, 70.0, profile="paper", epochs=990)])
    write_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "published: github.com/boone891214/GaP README" in md and "77.856" in md
    assert "never mixed" in md


def test_published_lists_the_gap_transformer_rows_with_sources(capsys):
    code, out, _ = cli(capsys, "published", "--task", "translation")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| translation")]
    assert len(rows) == 8 and all("github.com/boone891214/GaP README" in r for r in rows)
    assert "27.93" in out
    code, _, err = cli(capsys, "published", "--task", "nope")
    assert code == 2 and "unknown task" in err


REFERENCE = __import__("pathlib").Path(__file__).resolve().parents[1] / "results" / "reference"


def test_shipped_boards_rebuild_byte_for_byte_from_their_records(tmp_path):
    shutil.copytree(REFERENCE / "records", tmp_path / "records")
    write_leaderboard(tmp_path)
    tables = [
        p for p in ("leaderboard.md", "leaderboard.csv", "budget.md") if (REFERENCE / p).exists()
    ]
    plots = sorted(str(p.relative_to(REFERENCE)) for p in (REFERENCE / "plots").glob("*.png"))
    rebuilt = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "plots").glob("*.png"))
    assert len(plots) > 10
    assert rebuilt == plots  # no plot shipped without its records, none missing
    assert (tmp_path / "budget.md").exists() == (REFERENCE / "budget.md").exists()
    for name in tables + plots:
        assert (tmp_path / name).read_bytes() == (REFERENCE / name).read_bytes(), name


HEADLINE = {"dense", "static", "magnitude", "set", "rigl", "gap"}


def _shipped_headline():
    """Each task's shipped 1x headline board: the bench board at the profile's headline sparsity
    (dense beside it). Bench boards are also held to their criteria in
    tests/test_shipped_bench.py."""
    import pandas as pd

    from gapbench.cli import headline_sparsity

    table = pd.read_csv(REFERENCE / "leaderboard.csv")
    table = table[
        (table["budget_mode"] == "epochs")
        & (table["multiplier"] == 1)
        & (table["pattern"] == "unstructured")
        & (table["profile"] == "bench")
    ]
    boards = []
    for task in ("classification", "detection", "partseg", "translation"):
        rows = table[table["task"] == task]
        rows = rows[
            (rows["sparsity"] == headline_sparsity(task, "bench"))
            & (rows["distribution"] == "uniform")
            | (rows["method"] == "dense")
        ]
        boards.append(rows)
    return pd.concat(boards)


def test_every_row_of_each_tasks_shipped_headline_comparison_has_three_seeds():
    headline = _shipped_headline()
    for task in ("classification", "detection", "partseg", "translation"):
        rows = headline[headline["task"] == task]
        assert HEADLINE <= set(rows["method"]), task
    assert (headline["n"] >= 3).all()


def test_shipped_classification_comparison_separates_best_and_worst_sparse_methods():
    table = _shipped_headline()
    rows = table[(table["task"] == "classification") & (table["method"] != "dense")]
    assert {"snip", "grasp", "synflow", "snfs"} <= set(rows["method"])
    best, worst = rows.loc[rows["mean"].idxmax()], rows.loc[rows["mean"].idxmin()]
    assert worst["ci95_high"] < best["ci95_low"], (best["method"], worst["method"])


@pytest.mark.slow
def test_flops_matched_runs_reach_the_reference_flops_within_five_percent(tmp_path, capsys):
    code, out, err = cli(
        capsys, "run", "--task", "classification", "--profile", "digits", "--methods", "gap,static,rigl,magnitude,dense",
        "--epochs", "6", "--method-arg", "gap.rounds=1", "--method-arg", "gap.epochs_per_step=1",
        "--match", "flops", "--device", "cpu", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    from helpers import records

    runs = {r["method"]: r for r in records(tmp_path)}
    reference = runs["gap"]["flops"]["train"]
    # Dense is on the matched board too: no whole number of its epochs is within 5% of gap's
    # FLOPs, so its budget ends inside an epoch (a step count), and it trains exactly that.
    dense = runs["dense"]
    assert dense["budget_mode"] == "flops" and dense["identity"]["train_steps"] is not None
    assert dense["budget"]["steps_run"] == dense["identity"]["train_steps"]
    assert dense["budget"]["exact_epochs"] % 1 != 0
    for method in ("static", "rigl", "magnitude", "dense"):
        record = runs[method]
        assert record["budget_mode"] == "flops" and record["identity"]["match_ref"] == "gap"
        assert record["plan"]["match_epochs"] == 6 and record["epochs"] != 6
        assert abs(record["flops"]["train"] / reference - 1) <= 0.05, method
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    matched = table[table["budget_mode"] == "flops"].set_index("method")["train_flops_vs_dense"]
    for method in ("static", "rigl", "magnitude", "dense"):  # on the comparison's budget
        assert abs(matched[method] / matched["gap"] - 1) <= 0.05, method
    assert "training FLOPs matched to gap" in (tmp_path / "leaderboard.md").read_text()
