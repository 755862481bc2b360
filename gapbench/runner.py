"""Run one resolved RunSpec: build the task's workload and the method, train, write the record."""

from __future__ import annotations

import fcntl
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gapbench.deploy.export import weights_path
from gapbench.engine import distributed
from gapbench.engine.trainer import RunResult, Trainer, TrainSettings, seed_everything
from gapbench.errors import UserError
from gapbench.logs import get_logger, log_path, run_clock_start, run_logging
from gapbench.registry import get_task_class
from gapbench.report.atomic import atomic_torch_save, check_writable_folder, remove_stale_temps
from gapbench.report.records import (
    SCHEMA_VERSION,
    RunRecord,
    find_record,
    git_commit,
    versions,
    write_record,
)
from gapbench.runspec import RunSpec
from gapbench.sparse.selection import parse_dense_layers
from gapbench.task import BuildRequest, Profile

log = get_logger("run")


@dataclass(frozen=True)
class ExecOptions:
    """How to run, not what: none of these change a run's identity."""

    out: Path = Path("results/runs")
    device: str = "cpu"
    resume: bool = True  # continue from a checkpoint where one exists (`--resume` says so)
    restart: bool = False  # discard a run's checkpoint and train it from scratch
    checkpoint_every: int | None = None  # also checkpoint every N optimizer steps
    workers: int | None = None  # data-loader processes; default: 8 on paper profiles, 0 on embedded
    accumulate: int | None = None  # default: from the profile's device batch
    channels_last: bool = False
    compile: bool = False
    save_weights: bool = False  # keep the final masked weights and masks (for export)
    force: bool = False  # train although a complete record exists
    log: tuple[str, ...] = ()  # experiment trackers: tensorboard, wandb, mlflow


def default_cache_dir(task: str) -> Path:
    """Where embedded data sets are generated: $GAPBENCH_CACHE or ~/.cache/gapbench."""
    root = os.environ.get("GAPBENCH_CACHE") or Path.home() / ".cache" / "gapbench"
    return Path(root) / task


def _workers(requested: int | None, profile: Profile) -> int:
    """Real data sets decode images in worker processes; embedded ones stay in-process, which
    keeps small runs deterministic and cheap."""
    if requested is not None:
        return requested
    return min(8, os.cpu_count() or 1) if profile.needs_data_root else 0


def split_batch(
    profile: Profile, global_batch: int, world: int, accumulate: int | None
) -> tuple[int, int]:
    """(per-device micro-batch, accumulation steps) for a global batch on `world` ranks."""
    if accumulate is None:
        if profile.device_batch:
            accumulate = max(1, global_batch // (profile.device_batch * world))
        else:
            accumulate = 1
    per_device, rest = divmod(global_batch, world * accumulate)
    if rest or per_device < 1:
        raise UserError(
            f"global batch {global_batch} does not split over {world} rank(s) x {accumulate} "
            "accumulation step(s); change --batch-size or --accumulate"
        )
    return per_device, accumulate


def save_weights(trainer: Trainer, path: Path) -> None:
    """The final masked state dict and the bool masks, loadable with weights_only=True."""
    state = {
        "weights": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "masks": {n: m.cpu() for n, m in trainer.masks.masks.items()},
    }
    atomic_torch_save(state, path)


def checkpoint_path(out: Path, spec: RunSpec) -> Path:
    return Path(out) / "checkpoints" / f"{spec.run_id}.pt"


def output_folders(options: ExecOptions) -> list[Path]:
    """Every folder a run of `options` writes into: records, locks, checkpoints, weights, logs."""
    out = Path(options.out)
    names = ["records", "locks", "checkpoints", "logs"]
    names += ["weights"] if options.save_weights else []
    names += ["tracking"] if options.log else []
    return [out, *(out / name for name in names)]


def check_output(options: ExecOptions) -> None:
    """Make sure every output folder exists (or can be made) and takes files, before the first
    run trains: a run whose record cannot be written is hours lost. Also clears temporary files
    that killed writers left behind."""
    for folder in output_folders(options):
        check_writable_folder(folder)
        remove_stale_temps(folder)


def execute(
    spec: RunSpec, options: ExecOptions, stop_after_epoch: int | None = None
) -> RunRecord | None:
    """Train one run and write its record (rank 0); None when stopped early on purpose. Its
    log lines go to stderr and to `<out>/logs/<run_id>.log` (rank 0)."""
    started = run_clock_start()
    main = int(os.environ.get("RANK", "0")) == 0
    with run_logging(log_path(options.out, spec.run_id) if main else None, console=main):
        return _execute(spec, options, stop_after_epoch, started)


def discard_checkpoints(out: Path, spec: RunSpec) -> list[Path]:
    """--restart: remove the run's checkpoint(s) (one per P-GaP worker group); returns them."""
    path = checkpoint_path(out, spec)
    found = sorted(path.parent.glob(f"{spec.run_id}*.pt"))
    for old in found:
        old.unlink(missing_ok=True)
    return found


def _execute(
    spec: RunSpec, options: ExecOptions, stop_after_epoch: int | None, started: float
) -> RunRecord | None:
    device = distributed.resolve_device(options.device)
    dist, device = distributed.init_from_env(device)
    task = get_task_class(spec.task)()
    profile = task.profile(spec.profile)
    method = spec.build_method()
    # P-GaP under torchrun: kappa worker groups, each data-parallel inside itself.
    groups = distributed.make_groups(dist, method.worker_groups())
    rank, world = (groups.local_rank, groups.size) if groups else (dist.rank, dist.world_size)
    per_device, accumulate = split_batch(profile, spec.batch_size, world, options.accumulate)
    request = BuildRequest(
        data_root=Path(spec.data_root) if spec.data_root else None,
        cache_dir=default_cache_dir(spec.task),
        seed=spec.seed,
        device=device,
        batch_size=per_device,
        rank=rank,
        world=world,
        workers=_workers(options.workers, profile),
    )
    # Rank 0 builds first: it generates an embedded data set once, the other ranks then read it.
    if options.restart and dist.is_main:
        for old in discard_checkpoints(options.out, spec):
            log.info("%s: --restart: discarded checkpoint %s", spec.label(), old)
    if not dist.is_main:
        distributed.barrier(dist)
    data_start = time.time()
    seed_everything(spec.seed)
    workload = task.build(profile, request)
    data_s = time.time() - data_start
    if dist.is_main:
        distributed.barrier(dist)
    settings = TrainSettings(
        epochs=spec.epochs,
        sparsity=spec.sparsity,
        distribution=spec.distribution,
        dense_layers=parse_dense_layers(spec.dense_layers),
        pattern=spec.pattern,
        seed=spec.seed,
        global_batch=spec.batch_size,
        accumulate=accumulate,
        precision=spec.precision,
        max_steps=spec.max_steps,
        train_steps=spec.train_steps,
        channels_last=options.channels_last,
        compile=options.compile,
        checkpoint=checkpoint_path(options.out, spec),
        checkpoint_every=options.checkpoint_every,
        log=tuple(options.log),
        log_dir=Path(options.out) / "tracking" / spec.run_id,
    )
    trainer = Trainer(profile, workload, method, settings, device, dist, groups)
    trainer.clock_start, trainer.data_s = started, data_s
    resume = options.resume and not options.restart
    result = trainer.run(resume=resume, stop_after_epoch=stop_after_epoch, label=spec.label())
    if result is None:
        return None
    dataset = public_dataset(workload.dataset or spec.dataset, spec.data_root)
    record = build_record(spec, result, profile, dataset, str(device))
    record.task_extra = workload.extra
    if dist.is_main:
        _write_outputs(trainer, record, options)
        for path in settings.checkpoint.parent.glob(f"{spec.run_id}*.pt"):
            path.unlink(missing_ok=True)
    distributed.barrier(dist)
    return record


def public_dataset(dataset: str, data_root: str | None) -> str:
    """The data set's description without the user's path (records are shared): the data root
    is named by its folder name alone; `identity["data"]` identifies its contents."""
    if not data_root:
        return dataset
    root = Path(data_root)
    spellings = {str(root.resolve()), str(root), data_root.rstrip("/")} - {"", ".", "/"}
    for spelled in sorted(spellings, key=len, reverse=True):  # the longest first
        dataset = dataset.replace(spelled, root.resolve().name)
    return dataset


def _write_outputs(trainer: Trainer, record: RunRecord, options: ExecOptions) -> None:
    """Weights (if asked) and the record; a failure names the file instead of a traceback."""
    try:
        if options.save_weights:
            save_weights(trainer, weights_path(options.out, record.run_id))
        write_record(record, options.out)
    except OSError as exc:
        raise UserError(
            f"run {record.run_id} trained but its results could not be written to "
            f"{options.out} ({exc.strerror or exc}); free space or fix permissions and rerun "
            "the same command (it resumes from the run's checkpoint)"
        ) from None


def _match_info(spec: RunSpec) -> dict[str, object]:
    if spec.budget_mode != "flops":
        return {}
    return {
        "match_ref": spec.match_ref,
        "match_epochs": spec.match_epochs,
        "match_target_flops": spec.match_target_flops,
    }


# A run that ended one of these ways is not trained again unless --force: a diverged run would
# diverge again (training is deterministic); a smoke run (stopped_early) is.
FINAL_STATUSES = ("complete", "diverged", "no_metric")


def run_status(result: RunResult) -> tuple[str, str]:
    """(status, reason): only a run that trained to its end and got finite metrics is scored."""
    if result.diverged:
        return "diverged", result.diverged
    if result.stopped_early:
        return "stopped_early", "--max-steps reached (a smoke run, never on a board)"
    if not result.metrics:
        return "no_metric", "the task's evaluation returned no metric"
    bad = sorted(k for k, v in result.metrics.items() if not math.isfinite(v))
    if bad:
        return "no_metric", f"test metric(s) {', '.join(bad)} not finite"
    return "complete", ""


def build_record(
    spec: RunSpec, result: RunResult, profile: Profile, dataset: str, device: str
) -> RunRecord:
    # Read from the weights, not the masks: a record states what the model holds.
    alive = sum(layer.get("nonzero", layer["alive"]) for layer in result.per_layer.values())
    total = sum(layer["numel"] for layer in result.per_layer.values())
    status, reason = run_status(result)
    return RunRecord(
        schema=SCHEMA_VERSION,
        run_id=spec.run_id,
        status=status,
        status_reason=reason,
        identity=spec.identity(),
        task=spec.task,
        profile=spec.profile,
        dataset=dataset,
        method=spec.method,
        params=spec.params,
        sparsity=spec.sparsity,
        distribution=spec.distribution,
        seed=spec.seed,
        epochs=spec.epochs,
        budget_mode=spec.budget_mode,
        multiplier=spec.multiplier,
        metric=get_task_class(spec.task).metrics[0],
        metrics=result.metrics,
        val_metrics=result.val_metrics,
        measured_sparsity=(1.0 - alive / total) if total else 0.0,
        prunable_params=total,
        alive_prunable_params=alive,
        conv_linear_density=result.conv_linear_alive / max(1, result.conv_linear_total),
        params_total=result.params_total,
        params_alive=result.params_alive,
        policy=result.policy,
        per_layer=result.per_layer,
        budget={**result.budget, "steps_run": result.steps_run, "batch_unit": profile.batch_unit},
        plan={**result.plan_points, **_match_info(spec)},
        flops={
            **result.flops,
            "convention": "2 FLOPs per multiply-add; conv/linear only; per sample",
        },
        method_log=result.method_log,
        history=result.history,
        wall_time_s=result.wall_time_s,
        device=device,
        versions=versions(),
        git_commit=git_commit(),
        task_extra={},
        timing=result.timing,
    )


class RunLock:
    """Exclusive, per run id, on the output folder: an flock on `<out>/locks/<run_id>.lock`. The
    operating system releases it when the holder exits or is killed, so a stale lock never blocks a
    `--resume`."""

    def __init__(self, out: Path, run_id: str):
        self.path = Path(out) / "locks" / f"{run_id}.lock"
        self.handle = None

    def acquire(self) -> bool:
        """True when this process now holds the lock, False when another one does."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 (held until release)
        except OSError as exc:
            raise UserError(
                f"cannot create lock file {self.path} ({exc.strerror or exc}); "
                "pass a writable --out"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")  # the pid alone: lock files sit in shared folders
        handle.flush()
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def reusable(existing: RunRecord | None, options: ExecOptions) -> bool:
    """A finished record stands in for its run, unless --force, or --save-weights asks for final
    weights that run did not keep (the weights batch reuses the headline runs' configurations)."""
    if existing is None or existing.status not in FINAL_STATUSES or options.force:
        return False
    return not options.save_weights or weights_path(options.out, existing.run_id).exists()


def execute_locked(spec: RunSpec, options: ExecOptions) -> tuple[str, RunRecord | None]:
    """Train `spec` unless its complete record exists or another process is training it.

    Returns (outcome, record): "reusing", "trained" or "skipped: ...". Under torchrun every rank
    trains (rank 0 alone writes), so no lock is taken there."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "trained", execute(spec, options)
    existing = find_record(options.out, spec.run_id)
    if reusable(existing, options):
        return f"reusing {existing.run_id} (use --force to rerun)", existing
    lock = RunLock(options.out, spec.run_id)
    if not lock.acquire():
        return f"skipped: another process is training {spec.run_id} ({lock.path})", None
    try:
        existing = find_record(options.out, spec.run_id)  # finished while we waited for the lock
        if reusable(existing, options):
            return f"reusing {existing.run_id} (written by another sweep)", existing
        if existing and existing.status in FINAL_STATUSES and not options.force:
            print(f"retraining {spec.run_id}: --save-weights asks for weights its record lacks")
        return "trained", execute(spec, options)
    finally:
        lock.release()


OUTCOMES = ("trained", "reused", "skipped", "failed")


def outcome_kind(outcome: str) -> str:
    """Which of OUTCOMES an `execute_locked` outcome line is, for a sweep's summary."""
    if outcome.startswith("reusing"):
        return "reused"
    if outcome.startswith("skipped"):
        return "skipped"
    return "trained" if outcome.startswith("trained") else "failed"


def summary(counts: dict[str, int]) -> str:
    """'2 trained, 2 reused, 0 skipped, 0 failed'."""
    return ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in OUTCOMES)
