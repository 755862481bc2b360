"""Sweeps on submitit (the executor FAIR's research code uses): each run of a grid is one job, as a
local process per CPU or GPU slot or as a SLURM job. The sweep waits, reports progress, names the
log of any failed job and lets the others go on; the caller writes the leaderboard once at the end.

Two sweeps over one output folder never train the same run twice: a job trains only while it holds
the run's lock (gapbench.runner.RunLock) and skips a run whose complete record exists.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gapbench.errors import UserError
from gapbench.runner import OUTCOMES, ExecOptions, outcome_kind
from gapbench.runspec import RunSpec

LAUNCHERS = ("none", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    time_min: int = 24 * 60
    extra: dict[str, Any] = field(default_factory=dict)  # slurm_additional_parameters


def job_main(
    spec: dict[str, Any], options: dict[str, Any], threads: int, plugins: list[str]
) -> str:
    """Runs inside a job: one spec under its lock. Returns a one-line summary."""
    import torch

    from gapbench.registry import load_plugin
    from gapbench.runner import execute_locked

    for plugin in plugins:
        load_plugin(plugin)
    if threads:
        torch.set_num_threads(threads)
    options = {**options, "out": Path(options["out"])}
    outcome, record = execute_locked(RunSpec(**spec), ExecOptions(**options))
    if record is None:
        return outcome
    return f"{outcome}: {record.metric}={record.metrics.get(record.metric, float('nan')):.3f}"


def local_threads(jobs: int) -> int:
    """Torch threads for each of `jobs` local runs: OMP_NUM_THREADS where it is set, else the
    cores shared out. The explicit setting wins because the sweep cannot see what else runs:
    two sweeps side by side with `--jobs 1` each took every core twice over, and on 2 cores the
    oversubscribed runs trained 5-8x slower."""
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _executor(launcher: str, folder: Path, slurm: SlurmOptions):
    try:
        import submitit
    except ImportError as exc:  # the [sweep] extra
        raise UserError("--launcher needs submitit: pip install 'gapbench[sweep]'") from exc
    if launcher == "local":
        return submitit.LocalExecutor(folder=folder)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": slurm.time_min,
        "gpus_per_node": slurm.gpus_per_job,
        "cpus_per_task": slurm.cpus_per_job,
        "slurm_additional_parameters": dict(slurm.extra),
    }
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    executor.update_parameters(**params)
    return executor


def run_sweep(
    specs: list[RunSpec],
    options: ExecOptions,
    launcher: str,
    jobs: int,
    slurm: SlurmOptions | None = None,
    log=print,
    plugins: list[str] | None = None,
) -> dict[str, int]:
    """Submit every spec as a job, at most `jobs` at once; returns counts by outcome (trained,
    reused, skipped: another sweep holds it, failed)."""
    slurm = slurm or SlurmOptions()
    folder = Path(options.out) / "logs"
    executor = _executor(launcher, folder, slurm)
    gpus = _visible_gpus() if launcher == "local" else []
    threads = local_threads(jobs) if launcher == "local" else 0
    payload = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    pending = list(enumerate(specs, 1))
    running: dict[Any, tuple[int, RunSpec, int | None]] = {}
    free_gpus = list(gpus)
    counts = dict.fromkeys(OUTCOMES, 0)
    while pending or running:
        while pending and len(running) < jobs:
            index, spec = pending.pop(0)
            gpu = free_gpus.pop(0) if free_gpus else None
            if launcher == "local":
                executor.update_parameters(
                    timeout_min=slurm.time_min, visible_gpus=[gpu] if gpu is not None else []
                )
            job = executor.submit(job_main, asdict(spec), payload, threads, list(plugins or []))
            running[job] = (index, spec, gpu)
            log(f"[{index}/{len(specs)}] {spec.label()}: submitted as job {job.job_id}")
        time.sleep(0.5)
        for job in [j for j in running if j.done()]:
            index, spec, gpu = running.pop(job)
            if gpu is not None:
                free_gpus.append(gpu)
            try:
                outcome = job.result()
                log(f"[{index}/{len(specs)}] {spec.label()}: {outcome}")
                counts[outcome_kind(outcome)] += 1
            except Exception as exc:  # a failed job is reported; the sweep goes on
                first = (
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                )
                log(
                    f"[{index}/{len(specs)}] {spec.label()}: FAILED ({first}); log: {job.paths.stderr}"
                )
                counts["failed"] += 1
    return counts


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []
