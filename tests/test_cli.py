"""The command line: end to end on the embedded data, up-front validation, and one-line errors
with exit code 2."""

import json
import subprocess
from pathlib import Path

import pytest
from helpers import cli, records, spec_for

REPO = Path(__file__).resolve().parents[1]


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
        (["run", "--task", "classification", "--profile", "paper"], "needs --data-root"),
        (["run", "--task", "classification", "--method-arg", "gap.nope=1"], "no parameter"),
        (["run", "--task", "classification", "--method-arg", "gap.rounds=two"], "gap.rounds=two"),
        (
            ["run", "--task", "classification", "--method-arg", "gap.schedule=spiral"],
            "one of cyclic, random",
        ),
        (
            ["run", "--task", "classification", "--methods", "rigl", "--distribution", "global"],
            "does not support",
        ),
        (["run", "--task", "classification", "--dense-layers", "middle"], "--dense-layers"),
        (["run", "--task", "classification", "--epochs", "0"], "at least 1"),
        (["run", "--task", "classification", "--device", "cuda:7"], "--device"),
        (["run", "--task", "classification", "--device", "tpu"], "--device"),
        (["run", "--task", "classification", "--precision", "fp8"], "--precision"),
        (["leaderboard", "--out", "/no/such/out"], "no run records"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_parameters_of_a_later_method_fail_before_anything_trains(tmp_path, capsys):
    code, out, err = cli(
        capsys, "run", "--task", "classification", "--methods", "dense,gap",
        "--method-arg", "gap.partitions=0", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "partitions" in err and "starting" not in out
    assert not (tmp_path / "records").exists()


def test_gap_budget_shorter_than_its_grow_phase_is_a_user_error(tmp_path, capsys):
    code, _, err = cli(
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


def test_malformed_data_root_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train").mkdir()  # exists, but no class folders and no val/
    code, _, err = cli(
        capsys, "run", "--task", "classification", "--profile", "paper", "--data-root", str(tmp_path),
        "--device", "cpu", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def test_run_ids_hash_the_resolved_run():
    from tasks.classification.task import PROFILES

    tiny = PROFILES["tiny"]
    base = spec_for(method="gap")
    rounds = base.params["rounds"]
    # The profile's defaults, spelled out, are the same run; a changed one is another.
    assert spec_for(method="gap", epochs=tiny.epochs).run_id == base.run_id
    assert spec_for(method="gap", params={"rounds": rounds}).run_id == base.run_id
    assert spec_for(method="gap", batch_size=tiny.batch_size).run_id == base.run_id
    assert spec_for(method="gap", epochs=tiny.epochs + 4).run_id != base.run_id
    assert spec_for(method="gap", params={"lr_restart": True}).run_id != base.run_id
    assert base.epochs == tiny.epochs and base.params["finetune"] == -1
    assert rounds == tiny.method_defaults["gap"]["rounds"]


def test_pgap_paper_profile_gets_its_own_schedule():
    cgap = spec_for(method="gap", profile="paper", data_root="/")
    assert cgap.epochs == 990 and cgap.params["rounds"] == 7  # 7 x 4 x 30 + 150
    pgap = spec_for(method="gap", profile="paper", data_root="/", params={"mode": "parallel"})
    assert pgap.params["rounds"] == 8 and pgap.params["finetune"] == 150
    assert pgap.epochs == 8 * 30 + 150  # per worker; not 990 - 240 = 750 epochs of fine-tune


def test_dense_layer_policy_is_resolved_and_recorded_per_distribution():
    assert spec_for(method="rigl", profile="paper", data_root="/").dense_layers == "first"
    erk = spec_for(method="rigl", profile="paper", data_root="/", distributions=["erk"])
    assert erk.dense_layers == "none"  # RigL's released ERK runs sparsify the first conv
    assert spec_for(method="static", dense_layers="first,last").dense_layers == "first,last"


@pytest.mark.slow
def test_run_writes_records_and_leaderboard_then_reuses_them(tmp_path, capsys):
    argv = ["run", "--task", "classification", "--profile", "digits", "--methods", "dense,gap", "--epochs", "4",
            "--method-arg", "gap.rounds=1", "--method-arg", "gap.epochs_per_step=1",
            "--sparsity", "0.8", "0.9", "--out", str(tmp_path)]  # fmt: skip
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert len(records(tmp_path)) == 3  # dense once, gap at two sparsities
    assert "| gap | uniform | 0.90 |" in out and "| dense | dense | 0.00 |" in out
    csv = (tmp_path / "leaderboard.csv").read_text()
    assert csv.splitlines()[0].startswith(
        "task,profile,budget_mode,multiplier,epochs,match_ref,method,distribution,sparsity,pattern,variant"
    )
    assert (tmp_path / "leaderboard.md").read_text().count("| gap |") == 2
    assert list((tmp_path / "plots").glob("classification-digits-*-sparsity.png"))
    record = next(r for r in records(tmp_path) if r["method"] == "gap" and r["sparsity"] == 0.9)
    assert record["params"]["rounds"] == 1 and record["params"]["partitions"] == 3
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and out.count("reusing") == 3
    code, out, _ = cli(capsys, "leaderboard", "--out", str(tmp_path))
    assert code == 0 and "classification (digits, 4 epochs)" in out


@pytest.mark.slow
def test_leaderboard_skips_a_broken_record_with_a_warning_naming_it(tmp_path, capsys):
    cli(
        capsys,
        "run",
        "--task",
        "classification",
        "--methods",
        "dense",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    )
    half = dict(records(tmp_path)[0])
    del half["metrics"]
    (tmp_path / "records" / "broken.json").write_text("{not json")
    (tmp_path / "records" / "half.json").write_text(json.dumps(half))
    code, out, err = cli(capsys, "leaderboard", "--out", str(tmp_path))
    assert code == 0 and "| dense |" in out
    assert "broken.json" in err and "half.json" in err and "Traceback" not in err


def test_user_runs_go_where_git_ignores_them():
    from gapbench.cli import DEFAULT_OUT

    probe = REPO / DEFAULT_OUT / "records" / "x.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO)
    assert ignored.returncode == 0
    shipped = subprocess.run(
        ["git", "check-ignore", "-q", str(REPO / "results/reference/records/x.json")], cwd=REPO
    )
    assert shipped.returncode == 1  # shipped records are committed


def test_methods_and_tasks_are_listed(capsys):
    code, out, _ = cli(capsys, "methods")
    assert code == 0 and "gap.partitions = 4" in out and "magnitude:" in out
    code, out, _ = cli(capsys, "tasks")
    assert code == 0 and "classification:" in out and "profiles: tiny, bench, digits, paper" in out
