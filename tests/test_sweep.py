"""Sweeps through submitit's local executor: a grid as parallel jobs, two sweeps sharing one
output folder without training a run twice, and a killed run resumed."""

import json
import os
import subprocess
import sys
import time

import pytest

GRID = ["run", "--task", "classification", "--profile", "digits", "--methods", "dense,static",
        "--seeds", "0", "1", "--epochs", "2", "--device", "cpu"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _gapbench(*argv, **kw):
    return subprocess.run(
        [sys.executable, "-m", "gapbench", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
        **kw,
    )


@pytest.mark.parametrize(
    ("omp", "jobs", "cores", "threads"),
    [
        (None, 1, 2, 2),
        (None, 2, 2, 1),
        (None, 3, 2, 1),
        ("1", 1, 2, 1),
        ("3", 2, 8, 3),
        ("x", 2, 8, 4),
    ],
)
def test_local_runs_share_the_cores_unless_omp_num_threads_says(
    monkeypatch, omp, jobs, cores, threads
):
    from gapbench.sweep import local_threads

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert local_threads(jobs) == threads


@pytest.mark.slow
def test_a_grid_runs_as_local_jobs_and_the_leaderboard_is_written_once(tmp_path):
    result = _gapbench(*GRID, "--launcher", "local", "--jobs", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sweep: 4 trained, 0 reused, 0 skipped, 0 failed" in result.stdout
    assert len(list((tmp_path / "records").glob("*.json"))) == 4
    assert (tmp_path / "leaderboard.md").read_text().count("| static |") == 1
    assert list((tmp_path / "logs").glob("*_log.out"))  # submitit's per-job logs


@pytest.mark.slow
def test_two_sweeps_over_one_folder_train_each_run_once(tmp_path):
    argv = [
        sys.executable,
        "-m",
        "gapbench",
        *GRID,
        "--launcher",
        "local",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    second = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    outs = [p.communicate(timeout=900) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-1500:] for o in outs]
    trained = sum(o[0].count(": trained") for o in outs)
    assert trained == 4  # every run trained by exactly one of the sweeps
    summaries = [line for o in outs for line in o[0].splitlines() if line.startswith("sweep: ")]
    assert sum(int(line.split()[1]) for line in summaries) == 4  # "sweep: 2 trained, 2 reused"
    assert len(list((tmp_path / "records").glob("*.json"))) == 4


@pytest.mark.slow
def test_a_killed_run_resumes_with_resume(tmp_path):
    argv = ["run", "--task", "classification", "--profile", "digits", "--methods", "static", "--epochs", "6",
            "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "gapbench", *argv],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((tmp_path / "checkpoints").glob("*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert list((tmp_path / "checkpoints").glob("*.pt")), "no checkpoint before the kill"
    assert not list((tmp_path / "records").glob("*.json"))
    result = _gapbench(*argv, "--resume")
    assert result.returncode == 0, result.stderr[-1500:]
    assert "resuming" in result.stderr and "from epoch" in result.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert record["status"] == "complete" and [h["epoch"] for h in record["history"]] == list(
        range(6)
    )
