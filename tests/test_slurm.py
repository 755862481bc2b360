"""SLURM on a real scheduler (the one-node cluster of tools/slurm_cluster.sh): a grid goes out as
one job array and every record lands; a job requeued after its first checkpoint resumes (its log
says from where) and ends with an uninterrupted run's metrics; torchrun with 2 CPU processes
under SLURM. Off a cluster, and for malformed options, one line and exit 2.

The cluster tests need `sbatch`: under CI (CI set) its absence fails them, elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gapbench.slurm import Watch, parse_slurm_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DIGITS = ["run", "--task", "classification", "--profile", "digits", "--device", "cpu"]
SLURM = ["--launcher", "slurm", "--slurm-cpus-per-job", "1", "--slurm-time", "15"]


@pytest.fixture
def cluster() -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("sbatch not found under CI: .ci/run starts tools/slurm_cluster.sh first")
        pytest.skip("no SLURM here (sbatch not on PATH); sudo bash tools/slurm_cluster.sh")


def _gapbench(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gapbench", *argv],
        capture_output=True, text=True, env=ENV, timeout=600, **kw,
    )  # fmt: skip


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


@pytest.mark.slow
def test_a_grid_goes_out_as_one_array_and_every_record_lands(cluster, tmp_path):
    argv = [*DIGITS, "--methods", "dense,static", "--epochs", "2", *SLURM, "--jobs", "2"]
    done = _gapbench(*argv, "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert done.stdout.count("as SLURM job array") == 1
    array = done.stdout.split("as SLURM job array ")[1].split()[0]
    assert f"job {array}_0 running" in done.stdout and f"job {array}_1 running" in done.stdout
    assert "sweep: 2 trained, 0 reused, 0 skipped, 0 failed" in done.stdout
    assert "accounting storage" not in (done.stdout + done.stderr).lower()  # quiet polling
    records = _records(tmp_path)
    assert sorted(r["method"] for r in records) == ["dense", "static"]
    assert all(r["status"] == "complete" for r in records)
    for r in records:  # each job kept its run's log beside the records
        assert (tmp_path / "logs" / f"{r['run_id']}.log").read_text().count(": loss ") == 2


@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    cluster, tmp_path
):
    argv = [*DIGITS, "--methods", "rigl", "--epochs", "8"]
    reference = _gapbench(*argv, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-1500:]
    out = tmp_path / "slurm"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "gapbench", *argv, *SLURM, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("*.pt")) and time.time() < deadline:
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.1)
    (submitted,) = (out / "logs").glob("*_submitted.pkl")
    job = submitted.name.removesuffix("_submitted.pkl")
    subprocess.run(["scontrol", "requeue", job], check=True)
    stdout, stderr = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, stdout[-1500:] + stderr[-1500:]
    assert f"job {job} requeued (1x)" in stdout and "sweep: 1 trained" in stdout
    (record,) = _records(out)
    logged = (out / "logs" / f"{record['run_id']}.log").read_text()
    assert "SIGTERM: stopped" in logged and "kept" in logged
    resumed_line = next(line for line in logged.splitlines() if "resuming" in line)
    assert " from epoch " in resumed_line
    (straight,) = _records(tmp_path / "reference")
    assert record["metrics"] == straight["metrics"]  # bit-identical
    assert record["val_metrics"] == straight["val_metrics"]
    assert record["flops"]["train"] == straight["flops"]["train"]
    assert record["timing"]["attempts"] == 2


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="per-rank BatchNorm statistics and DistributedSampler order: measured on digits "
    "static 2 epochs, top1 33.89 (1 process) vs 18.33 (2 gloo processes), epoch losses "
    "[2.2455, 1.4001] vs [2.2543, 1.5314]; same run id, world_size 2 recorded",
)
def test_torchrun_with_two_cpu_processes_under_slurm_matches_one_process(cluster, tmp_path):
    argv = [*DIGITS, "--methods", "static", "--epochs", "2"]
    one = _gapbench(*argv, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-1500:]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = f"{torchrun} --standalone --nproc_per_node 2 -m gapbench {' '.join(argv)}"
    two = subprocess.run(
        ["sbatch", "--wait", "-c", "2", "-o", str(tmp_path / "two.out"),
         "--wrap", f"{command} --out {tmp_path / 'two'}"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, (tmp_path / "two.out").read_text()[-1500:]
    (a,), (b,) = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert a["run_id"] == b["run_id"] and b["budget"]["world_size"] == 2
    assert b["metrics"]["top1"] == pytest.approx(a["metrics"]["top1"], abs=0.5)
    losses = [[h["train_loss"] for h in r["history"]] for r in (a, b)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_off_a_cluster_and_malformed_options_are_one_line(monkeypatch, capsys, tmp_path):
    from gapbench.cli import main

    argv = [*DIGITS, "--methods", "static", "--out", str(tmp_path), "--launcher", "slurm"]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SLURM here (sbatch, squeue, scontrol not on PATH)" in err
    monkeypatch.undo()
    assert main([*argv, "--slurm-arg", "account"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--slurm-arg 'account' must look like key=value" in err
    assert not list((tmp_path / "records").glob("*.json"))


def test_slurm_args_and_requeue_detection():
    assert parse_slurm_args(["account=abc", "--mem-per-cpu=2G"]) == {
        "account": "abc",
        "mem_per_cpu": "2G",
    }
    watch = Watch()
    assert watch.update("PENDING", "N/A") is None
    assert watch.update("RUNNING", "10:00:00") == "running"
    assert watch.update("RUNNING", "10:00:00") is None
    assert watch.update("PENDING", "10:02:00") == "requeued" and watch.requeues == 1
    assert watch.update("RUNNING", "10:02:01") == "running"
    assert watch.update("RUNNING", "10:05:00") == "requeued" and watch.requeues == 2
