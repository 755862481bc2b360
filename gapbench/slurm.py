"""SLURM as clusters are used: options checked before anything is submitted, a job array's tasks
followed through `squeue` (quiet: no sacct, which warns on every call where accounting storage
is disabled), and a job that requeues itself.

Why squeue: submitit's own `job.done()` asks sacct; on clusters without slurmdbd every poll
printed two warnings. A task is finished when it has left the queue; its result is submitit's
result pickle, or nothing when it was killed or cancelled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from gapbench.errors import UserError

KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def parse_slurm_args(items: list[str]) -> dict[str, str]:
    """`key=value` strings (sbatch options without their dashes) -> {key: value}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not KEY.match(key) or not value.strip():
            raise UserError(
                f"--slurm-arg {item!r} must look like key=value (an sbatch option without its "
                "dashes), e.g. account=abc or mem=4G"
            )
        out[key.replace("-", "_")] = value.strip()
    return out


def check_cluster() -> None:
    """One line, before anything is built, when this machine cannot submit SLURM jobs."""
    missing = [tool for tool in ("sbatch", "squeue", "scontrol") if shutil.which(tool) is None]
    if missing:
        raise UserError(
            f"--launcher slurm: no SLURM here ({', '.join(missing)} not on PATH); run from a "
            "cluster's login node, or use --launcher local"
        )


@dataclass
class Watch:
    """What the launcher last saw of one task: a task that was running and is pending again,
    or running with a new start time, was requeued."""

    state: str = ""
    started: str = ""
    requeues: int = 0

    def update(self, state: str, started: str) -> str | None:
        """Take a new squeue reading; returns "requeued", "running" or None (nothing new)."""
        was_running = self.state in ("RUNNING", "COMPLETING")
        news = None
        if was_running and state not in ("RUNNING", "COMPLETING"):
            news = "requeued"
        elif state == "RUNNING" and self.started and started != self.started and self.state:
            news = "requeued" if was_running else "running"
        elif state == "RUNNING" and self.state != "RUNNING":
            news = "running"
        if news == "requeued":
            self.requeues += 1
        self.state = state
        if state == "RUNNING":
            self.started = started
        return news


def queue_states(array_id: str) -> dict[str, tuple[str, str]]:
    """{'<array>_<index>': (state, start time)} for the array's tasks still in the queue."""
    try:
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-j", array_id, "-o", "%i %T %S"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if listed.returncode != 0:  # the array left the queue ("Invalid job id specified")
        return {}
    states = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def this_job() -> str | None:
    """The SLURM id of the job this process runs in (array tasks as <array>_<index>)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_self() -> bool:
    """Put this job back in the queue (it resumes from its checkpoint); False if it cannot."""
    job = this_job()
    if job is None or shutil.which("scontrol") is None:
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=60)
    return done.returncode == 0
