"""Runs resume by default: SIGTERM mid-run keeps a checkpoint and says so in one line, the same
command continues bit-identically (at an epoch end or, with --checkpoint-every, inside an epoch),
--restart starts over, and a corrupt checkpoint gets one line naming it and the two choices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import spec_for

from gapbench.engine.loop import StepLoop
from gapbench.engine.signals import Interrupted
from gapbench.runner import ExecOptions, checkpoint_path, execute

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = ["run", "--task", "classification", "--profile", "digits", "--methods", "rigl",
       "--epochs", "5", "--device", "cpu"]  # fmt: skip


def _gapbench(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gapbench", *RUN, "--out", str(out), *extra],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip


def _record(out: Path) -> dict:
    (path,) = (out / "records").glob("*.json")
    return json.loads(path.read_text())


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if not k.endswith("_time_s")} for e in history]


def _stop_after_first_checkpoint(out: Path, signum: int, *extra: str) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gapbench", *RUN, "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("*.pt")) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_keeps_a_checkpoint_the_same_command_resumes_identically_restart_restarts(
    tmp_path,
):
    straight = _gapbench(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-1500:]
    out = tmp_path / "stopped"
    code, err = _stop_after_first_checkpoint(out, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-1500:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("gapbench: SIGTERM: stopped") and "kept" in last, last
    assert "rerun the same command" in last and "--restart" in last
    assert "Traceback" not in err
    (kept,) = (out / "checkpoints").glob("*.pt")
    assert str(kept) in last and not list((out / "records").glob("*.json"))

    again = _gapbench(out)
    assert again.returncode == 0, again.stderr[-1500:]
    assert "resuming" in again.stderr and "from epoch" in again.stderr
    resumed, reference = _record(out), _record(tmp_path / "straight")
    assert resumed["metrics"] == reference["metrics"]  # bit-identical, not approximately
    assert resumed["val_metrics"] == reference["val_metrics"]
    assert _untimed(resumed["history"]) == _untimed(reference["history"])
    assert resumed["flops"]["train"] == reference["flops"]["train"]
    assert resumed["timing"]["attempts"] == 2
    assert not list((out / "checkpoints").glob("*.pt"))  # finished: the checkpoint is done with

    out2 = tmp_path / "restarted"
    code, _ = _stop_after_first_checkpoint(out2, signal.SIGUSR1)
    assert code == 128 + signal.SIGUSR1
    restarted = _gapbench(out2, "--restart", "--resume")  # --resume: accepted, a no-op
    assert restarted.returncode == 0, restarted.stderr[-1500:]
    assert "--restart: discarded checkpoint" in restarted.stderr
    assert "resuming" not in restarted.stderr
    record = _record(out2)
    assert record["timing"]["attempts"] == 1 and len(record["history"]) == 5
    assert record["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_a_stop_inside_an_epoch_resumes_bit_identically_from_checkpoint_every(
    tmp_path, monkeypatch
):
    spec = spec_for(method="rigl", profile="digits", epochs=2)
    straight = execute(spec, ExecOptions(out=tmp_path / "a", device="cpu"))
    original = StepLoop.run_step
    calls = []

    def step_then_signal(self, micro_batches):  # a SIGUSR1 arrives during step 24 (epoch 2)
        loss = original(self, micro_batches)
        calls.append(self.step)
        if self.step == 24:
            signal.raise_signal(signal.SIGUSR1)
        return loss

    options = ExecOptions(out=tmp_path / "b", device="cpu", checkpoint_every=5)
    monkeypatch.setattr(StepLoop, "run_step", step_then_signal)
    with pytest.raises(Interrupted) as stopped:
        execute(spec, options)
    assert stopped.value.exit_code == 128 + signal.SIGUSR1 and calls[-1] == 24
    state = torch.load(checkpoint_path(tmp_path / "b", spec))
    assert state["step"] == 24 and state["epoch"] == 1 and state["epoch_step"] > 0
    monkeypatch.setattr(StepLoop, "run_step", original)
    resumed = execute(spec, options)
    assert resumed.metrics == straight.metrics and resumed.val_metrics == straight.val_metrics
    assert _untimed(resumed.history) == _untimed(straight.history)
    assert resumed.flops == straight.flops


@pytest.mark.slow
def test_periodic_checkpoints_inside_an_epoch_resume_bit_identically(tmp_path, monkeypatch):
    """A kill (no chance to save) after a --checkpoint-every checkpoint inside an epoch."""
    spec = spec_for(method="set", profile="digits", epochs=2)
    straight = execute(spec, ExecOptions(out=tmp_path / "a", device="cpu"))
    options = ExecOptions(out=tmp_path / "b", device="cpu", checkpoint_every=7)
    original = StepLoop.run_step

    class Killed(BaseException):
        pass

    def die_at_step_26(self, micro_batches):
        if self.step == 26:  # the checkpoint of step 21 (epoch 2, step 4 of it) is the last
            raise Killed
        return original(self, micro_batches)

    monkeypatch.setattr(StepLoop, "run_step", die_at_step_26)
    with pytest.raises(Killed):
        execute(spec, options)
    state = torch.load(checkpoint_path(tmp_path / "b", spec))
    assert state["step"] == 21 and state["epoch_step"] == 21 - 17
    monkeypatch.setattr(StepLoop, "run_step", original)
    resumed = execute(spec, options)
    assert resumed.metrics == straight.metrics
    assert _untimed(resumed.history) == _untimed(straight.history)


def test_a_corrupt_checkpoint_is_one_line_naming_it_and_the_two_choices(tmp_path, capsys):
    from gapbench.cli import main

    spec = spec_for(method="static", profile="digits", epochs=1)
    path = checkpoint_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    argv = ["run", "--task", "classification", "--profile", "digits", "--methods", "static",
            "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gapbench: error")]
    assert code == 2 and len(lines) == 1, err
    assert str(path) in lines[0] and "--restart" in lines[0] and "delete it" in lines[0]
    assert path.exists()  # never deleted without being asked


def test_checkpoint_every_must_be_positive(capsys):
    from gapbench.cli import main

    code = main(["run", "--task", "classification", "--checkpoint-every", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gapbench: error: --checkpoint-every must be at least 1")
