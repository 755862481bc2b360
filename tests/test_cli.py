"""The command line: end to end on the embedded data, and one-line errors with exit code 2."""

import json

import pytest

from gapbench.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--task", "nope"], "unknown task"),
        (["run", "--task", "classification", "--methods", "nope"], "unknown method"),
        (["run", "--task", "classification", "--sparsity", "1.0"], "outside [0, 1)"),
        (["run", "--task", "classification", "--sparsity", "x"], "must be numbers"),
        (["run", "--task", "classification", "--distribution", "odd"], "unknown distribution"),
        (["run", "--task", "classification", "--data-root", "/no/such/dir"], "does not exist"),
        (["run", "--task", "classification", "--profile", "huge"], "no profile"),
        (["run", "--task", "classification", "--method-arg", "gap.nope=1"], "no parameter"),
        (["run", "--task", "classification", "--method-arg", "gap.rounds=two"], "gap.rounds=two"),
        (["run", "--task", "classification", "--epochs", "0"], "at least 1"),
        (["leaderboard", "--out", "/no/such/out"], "no run records"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_malformed_data_root_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train").mkdir()  # exists, but no class folders and no val/
    code, _, err = _run(
        capsys,
        "run",
        "--task",
        "classification",
        "--profile",
        "paper",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def test_gap_budget_shorter_than_its_grow_phase_is_a_user_error(tmp_path, capsys):
    code, _, err = _run(
        capsys,
        "run",
        "--task",
        "classification",
        "--methods",
        "gap",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
    )
    assert code == 2 and "grow phase" in err


def test_run_writes_records_and_leaderboard_then_reuses_them(tmp_path, capsys):
    argv = [
        "run",
        "--task",
        "classification",
        "--methods",
        "dense,gap",
        "--epochs",
        "4",
        "--method-arg",
        "gap.rounds=1",
        "--method-arg",
        "gap.epochs_per_step=1",
        "--sparsity",
        "0.8",
        "0.9",
        "--out",
        str(tmp_path),
    ]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert len(runs) == 3  # dense once, gap at two sparsities
    assert "| gap | uniform | 0.90 |" in out and "| dense | dense | 0.00 |" in out
    csv = (tmp_path / "leaderboard.csv").read_text()
    assert csv.splitlines()[0].startswith("task,profile,epochs,method,distribution,sparsity")
    assert (tmp_path / "leaderboard.md").read_text().count("| gap |") == 2
    assert list(tmp_path.glob("leaderboard-classification-*.png"))
    record = json.loads(next((tmp_path / "runs").glob("*gap-s0.9*")).read_text())
    assert record["method_params"]["rounds"] == 1 and record["method_params"]["partitions"] == 3
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and out.count("reusing") == 3
    code, out, _ = _run(capsys, "leaderboard", "--out", str(tmp_path))
    assert code == 0 and "classification (tiny, 4 epochs)" in out


def test_methods_and_tasks_are_listed(capsys):
    code, out, _ = _run(capsys, "methods")
    assert code == 0 and "gap.partitions = 4" in out and "magnitude:" in out
    code, out, _ = _run(capsys, "tasks")
    assert code == 0 and "classification:" in out and "tiny, paper" in out
