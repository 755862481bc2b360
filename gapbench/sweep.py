"""Sweeps on submitit (the executor FAIR's research code uses): each run of a grid is one job, as a
local process per CPU or GPU slot, or one task of a single SLURM job array (`--jobs` = the
array's parallelism). The sweep waits, reports progress (and, on SLURM, every requeue), names the
log of any failed job and lets the others go on; the caller writes the leaderboard once at the end.

On SLURM a job is submitit-checkpointable (RunJob): on preemption or at its time limit submitit
calls `checkpoint()`, which requeues the same run; the run then resumes from its last checkpoint
(every epoch, and every `--checkpoint-every` steps). A SIGTERM (scontrol requeue, preemption)
finishes the current step and writes a checkpoint first; SIGUSR1 does the same and requeues.

Two sweeps over one output folder never train the same run twice: a job trains only while it holds
the run's lock (gapbench.runner.RunLock) and skips a run whose complete record exists.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gapbench.engine.signals import Interrupted
from gapbench.errors import UserError
from gapbench.runner import OUTCOMES, ExecOptions, outcome_kind
from gapbench.runspec import RunSpec
from gapbench.slurm import Watch, check_cluster, queue_states, requeue_self

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
    try:
        outcome, record = execute_locked(RunSpec(**spec), ExecOptions(**options))
    except Interrupted as exc:
        if os.environ.get("SLURM_JOB_ID") is None:
            raise
        print(f"gapbench: {exc}", file=sys.stderr, flush=True)
        if exc.signum == signal.SIGUSR1:
            requeue_self()
        # No result file: SLURM requeues the job (scontrol requeue, preemption) or it ends
        # cancelled; either way the launcher reads the job's state, not a failure.
        sys.stdout.flush()
        os._exit(exc.exit_code)
    if record is None:
        return outcome
    return f"{outcome}: {record.metric}={record.metrics.get(record.metric, float('nan')):.3f}"


class RunJob:
    """The callable of a sweep job. Checkpointable in submitit's sense: on preemption or time-out
    submitit calls `checkpoint`, which submits the same run again; that run resumes from its
    last checkpoint (runs resume by default)."""

    def __call__(
        self, spec: dict[str, Any], options: dict[str, Any], threads: int, plugins: list[str]
    ) -> str:
        return job_main(spec, options, threads, plugins)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


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
    check_cluster()
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
    if launcher == "slurm":
        return _run_array(executor, specs, options, jobs, log, plugins or [])
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


def _payload(options: ExecOptions) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}


def _run_array(
    executor: Any,
    specs: list[RunSpec],
    options: ExecOptions,
    jobs: int,
    log: Any,
    plugins: list[str],
) -> dict[str, int]:
    """The grid as one SLURM job array, at most `jobs` tasks at once; waits through requeues
    (each reported) and returns counts by outcome."""
    from submitit.core.utils import FailedJobError, pickle_load

    executor.update_parameters(slurm_array_parallelism=jobs)
    payload, n = _payload(options), len(specs)
    try:
        submitted = executor.map_array(
            RunJob(), [asdict(s) for s in specs], [payload] * n, [0] * n, [list(plugins)] * n
        )
    except (FailedJobError, OSError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next(
            (line for line in lines if "error" in line.lower()), lines[-1] if lines else ""
        )
        raise UserError(
            f"sbatch refused the job array ({reason}); check --slurm-arg, --slurm-partition, "
            "--slurm-cpus-per-job and --slurm-time"
        ) from None
    array_id = str(submitted[0].job_id).split("_")[0]
    log(f"submitted {n} run(s) as SLURM job array {array_id} (at most {jobs} at once)")
    tasks = {job.job_id: (i, spec, job) for i, (spec, job) in enumerate(zip(specs, submitted), 1)}
    watches = {job_id: Watch() for job_id in tasks}
    counts = dict.fromkeys(OUTCOMES, 0)
    while tasks:
        time.sleep(1.0)
        states = queue_states(array_id)
        for job_id in list(tasks):
            index, spec, job = tasks[job_id]
            tag = f"[{index}/{n}] {spec.label()}"
            state, started = states.get(job_id, ("", ""))
            if state:
                news = watches[job_id].update(state, started)
                if news == "requeued":
                    count = watches[job_id].requeues
                    log(f"{tag}: job {job_id} requeued ({count}x); it resumes from its checkpoint")
                elif news == "running":
                    log(f"{tag}: job {job_id} running")
                continue
            result = Path(job.paths.result_pickle)
            if not result.exists():
                time.sleep(1.0)  # the pickle is written before the task leaves the queue
                if not result.exists() and job_id not in queue_states(array_id):
                    log(
                        f"{tag}: FAILED (job {job_id} ended without a result); log: {job.paths.stderr}"
                    )
                    counts["failed"] += 1
                    del tasks[job_id]
                continue
            outcome, value = pickle_load(result)
            if outcome == "success":
                log(f"{tag}: {value}")
                counts[outcome_kind(value)] += 1
            else:
                lines = [line for line in str(value).strip().splitlines() if line.strip()]
                log(f"{tag}: FAILED ({lines[-1] if lines else outcome}); log: {job.paths.stderr}")
                counts["failed"] += 1
            del tasks[job_id]
    return counts


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []
