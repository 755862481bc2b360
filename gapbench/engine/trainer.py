"""The Trainer: one built task (Workload) and one method under one budget -> a RunResult.

It measures dense FLOPs once, selects the prunable tensors from the profile's policy, lets the
method plan and set up its masks, drives the StepLoop epoch by epoch (checkpointing atomically
after each), settles and checks exact sparsity, and evaluates the final model on the test split.
It knows no method and no task by name.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gapbench.engine import distributed
from gapbench.engine.distributed import DistInfo, WorkerGroups
from gapbench.engine.flops import FlopsLedger, measure_forward_flops
from gapbench.engine.loop import Diverged, StepLoop, batch_samples
from gapbench.engine.progress import MethodEvents, epoch_line, rng_state, set_rng_state
from gapbench.engine.signals import Interrupted, StopFlag, stop_on_signals
from gapbench.errors import UserError
from gapbench.logs import get_logger
from gapbench.report.atomic import atomic_torch_save
from gapbench.sparse.distribution import total_keep
from gapbench.sparse.enforce import count_weights
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context, Method
from gapbench.sparse.partition import partitions_by_prefix
from gapbench.sparse.pattern import Pattern
from gapbench.sparse.selection import Selection, select_prunable
from gapbench.task import DeviceLoader, Profile, Workload, move_to_device

log = get_logger("train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainSettings:
    """The resolved run, as far as training is concerned."""

    epochs: int  # the comparison budget (per worker for P-GaP)
    sparsity: float
    distribution: str
    dense_layers: tuple[str, ...]
    seed: int
    global_batch: int  # samples (or tokens) per optimizer step over all ranks
    pattern: str = "unstructured"
    accumulate: int = 1
    precision: str = "fp32"
    max_steps: int | None = None
    train_steps: int | None = None  # a budget ending inside its last epoch (FLOPs matching)
    channels_last: bool = False
    compile: bool = False
    checkpoint: Path | None = None
    checkpoint_every: int | None = None  # also checkpoint every N optimizer steps (long epochs)
    log: tuple[str, ...] = ()  # experiment trackers (tensorboard, wandb, mlflow)
    log_dir: Path | None = None


@dataclass
class RunResult:
    """What a finished run measured; the record is built from these values alone."""

    metrics: dict[str, float]
    val_metrics: dict[str, float]
    history: list[dict[str, Any]]
    steps_run: int
    stopped_early: bool
    wall_time_s: float  # training: model build to the last epoch (no data build, no evaluation)
    budget: dict[str, Any]
    plan_points: dict[str, Any]
    method_log: dict[str, Any]
    per_layer: dict[str, dict[str, int]]
    policy: dict[str, Any]
    flops: dict[str, float]
    params_total: int
    params_alive: int
    conv_linear_total: int
    conv_linear_alive: int
    world_size: int
    extra: dict[str, Any] = field(default_factory=dict)
    diverged: str = ""  # why the run stopped on a non-finite loss (then nothing is evaluated)
    timing: dict[str, Any] = field(default_factory=dict)  # the run's true cost, see Trainer.timing


def recalibrate_batchnorm(
    model: nn.Module, workload: Workload, device: torch.device, batches: int
) -> None:
    """Re-estimate batch-norm running statistics from a few training batches (after a merge)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    was_training = model.training
    model.train()
    move = workload.to_device or move_to_device
    with torch.no_grad():
        for i, batch in enumerate(workload.train_loader):
            if i >= batches:
                break
            workload.forward(model, move(batch, device))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.train(was_training)


@contextlib.contextmanager
def kept_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Run with every batch-norm statistic swapped for a copy, the originals put back on exit: a
    probe's train-mode forward leaves the statistics training starts from as they were (copies,
    not an in-place restore, since the probe's graph holds the tensors it ran with)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    originals = [{k: b for k, b in bn._buffers.items() if b is not None} for bn in bns]
    for bn, buffers in zip(bns, originals):
        for key, value in buffers.items():
            bn._buffers[key] = value.clone()
    try:
        yield
    finally:
        for bn, buffers in zip(bns, originals):
            bn._buffers.update(buffers)


def slice_batch(batch: Any, index: int, parts: int) -> Any:
    """The index-th of `parts` slices along the sample axis ([i*N//k, (i+1)*N//k), as GraSP's
    reference halves its data): tensors and lists whose leading size is the batch's N."""
    n = _leading(batch)
    if n is None:
        raise UserError("cannot slice this task's batch into parts")
    lo, hi = index * n // parts, (index + 1) * n // parts

    def cut(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x[lo:hi] if x.dim() and x.shape[0] == n else x
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return tuple(cut(v) for v in x)
        if isinstance(x, list):
            container = all(_leading(v) == n for v in x)  # [inputs, labels] as collated
            return [cut(v) for v in x] if container or len(x) != n else x[lo:hi]
        return x

    return cut(batch)


def _leading(batch: Any) -> int | None:
    """The sample count of a batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, list | tuple) or isinstance(batch, dict):
        for v in values:
            found = _leading(v)
            if found is not None:
                return found
    return None


def _examples(loader: Any) -> int | None:
    """Examples in a split (images, shapes, sentences); None where the loader cannot say."""
    counted = getattr(loader, "samples_per_epoch", None) or getattr(loader, "dataset", None)
    if isinstance(counted, int):
        return counted
    try:
        return len(counted) if counted is not None else None
    except TypeError:
        return None


class Trainer:
    def __init__(
        self,
        profile: Profile,
        workload: Workload,
        method: Method,
        settings: TrainSettings,
        device: torch.device,
        dist: DistInfo | None = None,
        groups: WorkerGroups | None = None,
    ):
        self.profile, self.workload, self.method = profile, workload, method
        self.settings, self.device = settings, device
        self.dist = dist or DistInfo()
        self.groups = groups  # multi-process P-GaP: this rank's worker group
        self.move = workload.to_device or move_to_device
        # The run's clock (the runner sets it to the process start) and what earlier attempts
        # of a resumed run spent, so a record's total time is its whole cost.
        self.clock_start = time.time()
        self.prior_s = 0.0
        self.attempts = 0
        self.data_s = 0.0  # data build, measured by the runner
        self._epoch_rng: dict[str, Any] | None = None

    # ---- build -------------------------------------------------------------------------------
    def _probe_flops(self) -> tuple[dict[str, float], list[str]]:
        w = self.workload
        batch = self.move(w.example_batch, self.device)
        flops, order = measure_forward_flops(self.model, lambda: w.forward(self.model, batch))
        return {k: v / max(1, w.example_samples) for k, v in flops.items()}, order

    def build(self) -> None:
        s, w = self.settings, self.workload
        seed_everything(s.seed)
        self.model = w.model.to(self.device)
        if s.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        flops, order = self._probe_flops()
        self.selection: Selection = select_prunable(
            self.model, self.profile.exclude, s.dense_layers, order
        )
        prunable = self.selection.prunable
        self.masks = MaskSet(self.model, prunable)
        self.pattern = Pattern.parse(s.pattern)
        for name in prunable:
            self.pattern.check_shape(name, self.masks.params[name].shape)
        self.ledger = FlopsLedger(flops, self.masks)
        self.optimizer = self.profile.optimizer.build(self.model.parameters(), s.global_batch)
        self.steps_per_epoch = max(1, len(w.train_loader) // s.accumulate)  # type: ignore[arg-type]
        train_samples = getattr(w.train_loader, "samples_per_epoch", None) or len(
            getattr(w.train_loader, "dataset", [])
        )
        self.train_samples = int(train_samples) or self.steps_per_epoch
        samples_per_step = max(1, round(self.train_samples / self.steps_per_epoch))
        workers = self.groups.count if self.groups else 1
        steps = s.train_steps
        if steps is not None and not (s.epochs - 1) * self.steps_per_epoch < steps:
            raise UserError(
                f"a budget of {steps} steps does not end inside epoch {s.epochs} "
                f"({self.steps_per_epoch} steps per epoch)"
            )
        comparison = Budget(s.epochs, self.steps_per_epoch, samples_per_step, workers, steps)
        self.plan = self.method.plan(comparison)
        if steps is not None and self.plan.epochs != s.epochs:
            raise UserError(
                f"{self.method.name} trains {self.plan.epochs} epochs on a budget of {s.epochs}: "
                "a budget ending inside an epoch needs a method that trains the budget's epochs"
            )
        self.budget = Budget(
            self.plan.epochs, self.steps_per_epoch, samples_per_step, workers, steps
        )
        partitions = {
            k: partitions_by_prefix(prunable, prefixes)
            for k, prefixes in self.profile.partitions.items()
        }
        ctx = Context(
            model=self.model,
            optimizer=self.optimizer,
            masks=self.masks,
            budget=self.budget,
            sparsity=s.sparsity,
            distribution=s.distribution,
            seed=s.seed,
            forward_order=[n for n in order if n in set(prunable)] or prunable,
            partitions=partitions,
            dense_weights=self.selection.dense_layers + self.selection.excluded,
            recalibrate_bn=lambda n: recalibrate_batchnorm(self.model, w, self.device, n),
            probe_loss=self._probe_loss,
            probe_ones=self._probe_ones,
            probe_temperature=w.tempered_loss is not None,
            probe_classes=w.class_batch is not None,
            workers=self.groups,
            pattern=self.pattern,
        )
        self._probe_batches: dict[int, Any] = {}
        self.method.setup(ctx)
        self._probe_batches = {}  # probes only serve setup
        distributed.check_same_on_all_ranks(self.masks.checksum(), self.dist, "initial masks")
        train_module = distributed.wrap(self.model, self.dist, self.groups)
        if s.compile:
            train_module = torch.compile(train_module)
        self.loop = StepLoop(
            self.model,
            self.optimizer,
            self.masks,
            self.method,
            self.plan,
            w.loss,
            total_steps=self.budget.total_steps,
            lr_kind=self.profile.lr_schedule.kind,
            warmup=self.profile.lr_schedule.warmup(self.steps_per_epoch),
            grad_clip=self.profile.grad_clip,
            precision=s.precision,
            ledger=self.ledger,
            samples=w.samples or batch_samples,
            world=self.groups.size if self.groups else self.dist.world_size,
            train_module=train_module,
        )

    def _probe_batch(self, samples_per_class: int = 0) -> Any:
        """The probe data of this build, drawn once: every probe of a setup scores the same
        samples (the first training batch, or the task's class-balanced batch)."""
        cache = self._probe_batches
        if samples_per_class not in cache:
            w = self.workload
            if samples_per_class > 0:
                if w.class_batch is None:
                    raise UserError("this task cannot give a class-balanced probe batch")
                batch = w.class_batch(samples_per_class)
            else:
                batch = next(iter(w.train_loader))
            cache[samples_per_class] = self.move(batch, self.device)
        return cache[samples_per_class]

    @property
    def exact_epochs(self) -> float:
        """The comparison budget in epochs, fractional when it ends inside an epoch."""
        s = self.settings
        return s.epochs if s.train_steps is None else s.train_steps / self.steps_per_epoch

    def _probe_loss(
        self,
        model: nn.Module | None = None,
        part: tuple[int, int] | None = None,
        temperature: float | None = None,
        samples_per_class: int = 0,
    ) -> torch.Tensor:
        """The loss on the probe batch (or its slice `part=(i, k)`), graph kept, train mode,
        batch-norm running statistics restored (pruning at initialisation must not move them)."""
        model = self.model if model is None else model
        batch = self._probe_batch(samples_per_class)
        if part is not None:
            batch = slice_batch(batch, *part)
        w = self.workload
        model.train()
        with kept_batchnorm_stats(model):
            if temperature is None:
                return w.loss(model, batch)
            if w.tempered_loss is None:
                raise UserError("this task has no logits to divide by a temperature")
            return w.tempered_loss(model, batch, temperature)

    def _probe_ones(self) -> Any:
        """The forward output on the example batch with every floating input set to one."""
        dtype = next(self.model.parameters()).dtype

        def ones(x: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                return torch.ones_like(x, dtype=dtype)
            if isinstance(x, list | tuple):
                return type(x)(ones(v) for v in x)
            if isinstance(x, dict):
                return {k: ones(v) for k, v in x.items()}
            return x

        with kept_batchnorm_stats(self.model):
            return self.workload.forward(
                self.model, ones(self.move(self.workload.example_batch, self.device))
            )

    # ---- checkpoint --------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path | None:
        """One checkpoint per run, or per worker group (their states differ inside a round)."""
        path = self.settings.checkpoint
        if path is None or self.groups is None:
            return path
        return path.with_name(f"{path.stem}.group{self.groups.index}{path.suffix}")

    def _save(self, epoch: int, history: list[dict], elapsed: float, **inside: Any) -> None:
        """A checkpoint after `epoch` whole epochs, or, with `inside` (epoch_step, losses,
        epoch_rng, epoch_s), part-way through epoch `epoch`: the RNG states then let a resume
        replay the epoch's data order and continue bit-identically."""
        path = self._checkpoint_path()
        leader = self.groups.local_rank == 0 if self.groups else self.dist.is_main
        if path is None or not leader:
            return
        state = {
            "epoch": epoch,
            "step": self.loop.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "ledger": self.ledger.state_dict(),
            "scaler": self.loop.scaler.state_dict() if self.loop.scaler else None,
            "history": history,
            "elapsed": elapsed,
            "spent_s": self.prior_s + time.time() - self.clock_start,
            "attempts": self.attempts,
            "epoch_step": inside.get("epoch_step", 0),
            "epoch_losses": list(inside.get("losses", [])),
            "epoch_rng": inside.get("epoch_rng"),
            "step_rng": rng_state() if inside else None,
            "epoch_s": inside.get("epoch_s", 0.0),
        }
        atomic_torch_save(state, path)

    def _load(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint into the built run; a file that cannot be read or does not fit
        this run is one UserError naming it and the two ways on."""
        try:
            state = torch.load(path, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
            self.ledger.load_state_dict(state["ledger"])
            if self.loop.scaler and state["scaler"]:
                self.loop.scaler.load_state_dict(state["scaler"])
            self.loop.step = int(state["step"])
        except Exception as exc:  # truncated, foreign or from other code: same two choices
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise UserError(
                f"checkpoint {path} cannot be resumed ({type(exc).__name__}: {first}); rerun with "
                "--restart to discard it and train from scratch, or delete it"
            ) from None
        return state

    # ---- run ---------------------------------------------------------------------------------
    def _epoch_batches(self, skip: int = 0, step_rng: dict | None = None) -> Iterator[Any]:
        """The epoch's batches on the device. A resume inside an epoch sets the RNG the epoch's
        iterator began from, draws the `skip` batches already trained on (the same data-order
        draws), then sets the RNG of the checkpoint's step."""
        if step_rng is not None and self._epoch_rng is not None:
            set_rng_state(self._epoch_rng)
        self._epoch_rng = rng_state()
        iterator = iter(self.workload.train_loader)
        for _ in range(skip):
            next(iterator)
        if step_rng is not None:
            set_rng_state(step_rng)
        for batch in iterator:
            yield self.move(batch, self.device)

    def run(
        self, resume: bool = False, stop_after_epoch: int | None = None, label: str = ""
    ) -> RunResult | None:
        """Train and evaluate; None if stopped by `stop_after_epoch` (resume tests). A stop
        signal ends the run after its current step with a checkpoint (raises Interrupted)."""
        start = time.time()
        self.build()
        checkpoint = self._checkpoint_path()
        self.attempts += 1
        state: dict[str, Any] = {"epoch": 0, "history": [], "elapsed": 0.0, "epoch_step": 0}
        if resume and checkpoint is not None and checkpoint.exists():
            state = self._load(checkpoint)
            self.prior_s = float(state.get("spent_s", 0.0))
            self.attempts += int(state.get("attempts", 1))
            where = f"epoch {state['epoch'] + 1}"
            if state.get("epoch_step"):
                where += f" step {state['epoch_step']} of {self.steps_per_epoch}"
            if self.dist.is_main:
                log.info(
                    "resuming %s from %s (%d of %d epochs done, checkpoint %s)",
                    label, where, state["epoch"], self.plan.epochs, checkpoint,
                )  # fmt: skip
        tracker = None
        if self.settings.log and self.dist.is_main:
            from gapbench.engine.tracking import Tracker

            tracker = Tracker(
                list(self.settings.log), self.settings.log_dir or Path("."), label,
                {"label": label, **self.plan.points},
            )  # fmt: skip
        try:
            with stop_on_signals() as stop:
                outcome = self._train(state, start, stop, label, tracker, stop_after_epoch)
        except BaseException:
            if tracker is not None:
                tracker.close()
            raise
        history, stopped, diverged, elapsed = outcome
        incomplete = not stopped and not diverged and len(history) < self.plan.epochs
        if stop_after_epoch is not None and incomplete:
            if tracker is not None:
                tracker.close()
            return None
        result = self._finish(history, elapsed, stopped, diverged)
        if tracker is not None:
            final = {f"test/{k}": v for k, v in result.metrics.items()}
            final.update({f"val/{k}": v for k, v in result.val_metrics.items()})
            tracker.log(final, step=len(history))
            tracker.close()
        return result

    def _train(
        self,
        state: dict[str, Any],
        start: float,
        stop: StopFlag,
        label: str,
        tracker: Any,
        stop_after_epoch: int | None,
    ) -> tuple[list[dict], bool, str, float]:
        """The epochs from the checkpoint's position on: (history, stopped, diverged, elapsed)."""
        s = self.settings
        first_epoch, history = int(state["epoch"]), list(state["history"])
        elapsed_before = float(state["elapsed"])
        inside = int(state.get("epoch_step") or 0)  # steps already done in epoch first_epoch
        self._epoch_rng = state.get("epoch_rng")
        events = MethodEvents(self.method.name, self.method.log)
        attempt_epochs, attempt_start = 0, time.time()
        show_bar = self.dist.is_main and sys.stderr.isatty()
        epochs = range(first_epoch, self.plan.epochs)
        bar = tqdm(epochs, desc=label, disable=not show_bar, leave=True, initial=first_epoch,
                   total=self.plan.epochs)  # fmt: skip
        stopped, diverged = False, ""
        redirect = logging_redirect_tqdm([log.parent]) if show_bar else contextlib.nullcontext()
        with redirect:
            for epoch in bar:
                data_epoch = self.plan.data_epoch(epoch) if self.plan.data_epoch else epoch
                seed_everything(s.seed * 100_003 + data_epoch)
                sampler = getattr(self.workload.train_loader, "sampler", None)
                for target in (sampler, self.workload.train_loader):
                    if hasattr(target, "set_epoch"):
                        target.set_epoch(data_epoch)
                resumed = inside > 0
                epoch_base = self.loop.step - inside
                losses = list(state.get("epoch_losses") or []) if resumed else []
                epoch_s_before = float(state.get("epoch_s") or 0.0) if resumed else 0.0
                # A budget in steps ends inside its last epoch; every other epoch runs whole.
                steps_this_epoch = min(self.steps_per_epoch, self.budget.total_steps - epoch_base)
                epoch_start = time.time()

                def save_inside(epoch=epoch, epoch_base=epoch_base, losses=losses,
                                epoch_start=epoch_start, before=epoch_s_before) -> None:  # fmt: skip
                    self._save(
                        epoch, history, elapsed_before + time.time() - start,
                        epoch_step=self.loop.step - epoch_base, losses=losses,
                        epoch_rng=self._epoch_rng, epoch_s=before + time.time() - epoch_start,
                    )  # fmt: skip

                def every(save_inside=save_inside, epoch_base=epoch_base, n=steps_this_epoch):
                    k = s.checkpoint_every
                    done = self.loop.step - epoch_base
                    if k and self.loop.step % k == 0 and done < n:
                        save_inside()

                try:
                    stats = self.loop.run_epoch(
                        epoch,
                        self._epoch_batches(inside * s.accumulate, state.get("step_rng") if resumed else None),
                        s.accumulate,
                        steps_this_epoch - inside,
                        s.max_steps,
                        on_step=every if s.checkpoint_every else None,
                        should_stop=stop,
                        resumed=resumed,
                        losses=losses,
                    )  # fmt: skip
                except Diverged as exc:
                    diverged = f"{exc} (epoch {epoch})"
                    if self.dist.is_main:
                        log.info("%s: diverged: %s; recorded as diverged", label, diverged)
                    break
                inside = 0
                if stats.interrupted:
                    save_inside()
                    done = self.loop.step - epoch_base
                    raise self._interrupted(stop, label, f"in epoch {epoch + 1} after step {done}")
                stopped = stats.stopped
                train_s = epoch_s_before + time.time() - epoch_start
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": round(float(np.mean(losses)), 6) if losses else None,
                        "steps": self.loop.step,
                        "sparsity": round(self.masks.overall_sparsity(), 6),
                        "train_time_s": round(train_s, 3),
                        "eval_time_s": 0.0,  # the bench evaluates once, after the last epoch
                    }
                )
                if tracker is not None:
                    from gapbench.engine.tracking import epoch_scalars

                    span = (epoch_base, self.loop.step)
                    tracker.log(epoch_scalars(history[-1], self.method.log, span), step=epoch)
                checksum = self.masks.checksum()
                distributed.check_same_on_all_ranks(checksum, self.dist, "masks", self.groups)
                self._save(epoch + 1, history, elapsed_before + time.time() - start)
                attempt_epochs += 1
                if self.dist.is_main:
                    self._say_epoch(label, epoch, history, events, elapsed_before + time.time() - start,
                                    (time.time() - attempt_start) / attempt_epochs, stats)  # fmt: skip
                if stop() and epoch + 1 < self.plan.epochs and not stopped:
                    raise self._interrupted(stop, label, f"after epoch {epoch + 1}")
                if stopped or (stop_after_epoch is not None and epoch + 1 >= stop_after_epoch):
                    break
        bar.close()
        return history, stopped, diverged, elapsed_before + time.time() - start

    def _say_epoch(
        self,
        label: str,
        epoch: int,
        history: list[dict],
        events: MethodEvents,
        elapsed: float,
        per_epoch: float,
        stats: Any,
    ) -> None:
        entry = history[-1]
        lr = float(self.optimizer.param_groups[0]["lr"])
        step_s = entry["train_time_s"] / stats.steps if stats.steps else None
        eta = per_epoch * (self.plan.epochs - epoch - 1)
        log.info(epoch_line(label, epoch, self.plan.epochs, entry, lr, step_s, elapsed, eta))
        for line in events.new_lines(self.method.log, epoch):
            log.info("%s %s", label, line)

    def _interrupted(self, stop: StopFlag, label: str, where: str) -> Interrupted:
        path = self._checkpoint_path()
        error = Interrupted(int(stop.signum or 0), label, path, where)
        if self.dist.is_main:
            log.info("%s", error)
        return error

    def _finish(
        self, history: list[dict], elapsed: float, stopped: bool, diverged: str = ""
    ) -> RunResult:
        """Settle and check the masks, count the weights, evaluate. A diverged run is neither
        settled nor evaluated: its weights are not finite, its record says why."""
        method, masks, s = self.method, self.masks, self.settings
        if not diverged:
            method.finish()
        distributed.check_same_on_all_ranks(masks.checksum(), self.dist, "final masks")
        weights = count_weights(masks)
        if method.sparse and not diverged:
            self._check_exact_counts()
            weights.check(f"method {method.name}")
        train_flops, same_steps = self.ledger.train_flops, self.ledger.dense_train_flops
        if self.groups is not None:  # every group's own steps, counted once per group
            train_flops = distributed.all_reduce_sum(train_flops, self.dist) / self.groups.size
            same_steps = distributed.all_reduce_sum(same_steps, self.dist) / self.groups.size
        metrics, val = {}, {}
        eval_start = time.time()
        if self.dist.is_main and not diverged:
            metrics = self._evaluate(self.workload.test_loader)
            val = self._evaluate(self.workload.val_loader)
        eval_s = time.time() - eval_start
        if history:
            history[-1]["eval_time_s"] = round(eval_s, 3)
        distributed.barrier(self.dist)
        # alive: what the mask keeps; nonzero: what the weights hold (records state the latter).
        per_layer = {
            n: {"numel": masks.numel(n), "alive": masks.count(n), "nonzero": weights.nonzero[n]}
            for n in masks.names
        }
        n_params = sum(p.numel() for p in self.model.parameters())
        pruned = masks.total() - weights.total_nonzero  # zero weights, whatever the masks say
        conv_linear = sum(self.selection.all_weights.values())
        dense_fwd = self.ledger.dense_inference_flops()
        return RunResult(
            metrics=metrics,
            val_metrics=val,
            history=history,
            steps_run=self.loop.step,
            stopped_early=stopped,
            wall_time_s=round(elapsed, 2),
            budget={
                "comparison_epochs": s.epochs,
                "trainer_epochs": self.plan.epochs,
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.budget.total_steps,
                "exact_epochs": self.exact_epochs,  # fractional where the budget is in steps
                "samples_per_step": self.budget.samples_per_step,
                "train_samples_per_epoch": self.train_samples,
                "global_batch": s.global_batch,
                "accumulate": s.accumulate,
                "world_size": self.dist.world_size,
                "max_steps": s.max_steps,
                # What a reader needs to judge the board: how much of the run warms up, and how
                # many examples the reported metric averages over.
                "lr_schedule": self.profile.lr_schedule.kind,
                "warmup_steps": self.loop.warmup,
                "test_examples": _examples(self.workload.test_loader),
            },
            plan_points=self.plan.points,
            method_log=method.log,
            per_layer=per_layer,
            policy=self.selection.describe(
                ",".join(s.dense_layers) or "none", self.profile.exclude
            ),
            flops={
                "train": train_flops,
                "dense_train_same_steps": same_steps,
                # What dense training costs over the comparison's budget: every method's
                # training FLOPs are read against this one number.
                "dense_train_budget": 3 * dense_fwd * self.train_samples * self.exact_epochs,
                "inference": self.ledger.inference_flops(),
                "dense_inference": dense_fwd,
            },
            params_total=n_params,
            params_alive=n_params - pruned,
            conv_linear_total=conv_linear,
            conv_linear_alive=conv_linear - pruned,
            world_size=self.dist.world_size,
            diverged=diverged,
            timing=self.timing(elapsed, eval_s),
        )

    def timing(self, train_s: float, eval_s: float) -> dict[str, Any]:
        """The run's cost in seconds. `total_s`: every attempt from its process start (or, for a
        later run of one process, its start) to the end of evaluation, so interpreter start,
        imports, data build and evaluation are in; `train_s` is the record's `wall_time_s`
        (model build and the epochs); `data_s` and `eval_s` are this attempt's."""
        return {
            "total_s": round(self.prior_s + time.time() - self.clock_start, 2),
            "train_s": round(train_s, 2),
            "data_s": round(self.data_s, 2),
            "eval_s": round(eval_s, 2),
            "attempts": self.attempts,
        }

    def _check_exact_counts(self) -> None:
        masks, method, s = self.masks, self.method, self.settings
        wrong = {
            n: (masks.count(n), k) for n, k in method.target_counts.items() if masks.count(n) != k
        }
        numels = [masks.numel(n) for n in masks.names]
        expected = total_keep(numels, s.sparsity)
        if self.pattern.kind == "block":  # whole blocks: the total rounded to blocks
            expected = round(expected / self.pattern.unit) * self.pattern.unit
        outside = [n for n in masks.names if not self.pattern.holds(masks.masks[n])]
        if outside:
            raise RuntimeError(
                f"method {method.name} left masks outside --pattern {self.pattern}: {outside}"
            )
        if wrong or masks.alive() != expected:
            raise RuntimeError(
                f"method {method.name} left wrong keep counts: {wrong or ''} "
                f"alive {masks.alive()} (expected {expected})"
            )

    def _evaluate(self, loader: Any) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            batches = DeviceLoader(loader, self.device, self.move)
            return {k: float(v) for k, v in self.workload.evaluate(self.model, batches).items()}
