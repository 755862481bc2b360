"""The one step loop: every optimizer step of every method runs here — in the Trainer, in the
public conformance harness (gapbench.testing) and in the tests.

Inside a step, in this order (and why):
1. the LR comes from the method's clock (GaP's restarts, P-GaP's per-worker schedule);
2. forward and backward over the micro-batches of gradient accumulation, under autocast for
   bf16/fp16 (DDP synchronises gradients on the last micro-batch only);
3. fp16: gradients are unscaled first, so methods and clipping see true values;
4. on `plan.dense_grad` steps the method reads the dense gradients (RigL), before masking;
5. gradients of pruned weights are zeroed, then clipped: the clip norm sees only what is applied;
6. the optimizer steps (the MaskEnforcer hooks keep pruned weights and state at zero) — except
   on `plan.replaces_step` steps, where the mask update takes its place (RigL). A step the fp16
   scaler skips is no step: the method's schedule and the step counter do not advance;
7. `method.update(step)`, and the step's FLOPs are charged at its real densities.

A non-finite training loss stops the run (`Diverged`) before the optimizer steps on it: a
diverged run is recorded as such, never scored as if it had trained. Under fp16 an overflowing
step is the GradScaler's to skip, so only `FP16_OVERFLOW_STEPS` non-finite losses in a row count
as divergence there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gapbench.engine.flops import FlopsLedger
from gapbench.engine.lr import lr_factor
from gapbench.sparse.enforce import MaskEnforcer
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Method, Plan

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_OVERFLOW_STEPS = 20  # consecutive non-finite fp16 losses that mean divergence, not overflow


class Diverged(RuntimeError):
    """The training loss went non-finite: the run stops and is recorded as diverged."""

    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"training loss {loss} at step {step}")


def batch_samples(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor. Tasks whose batches are
    lists of per-sample items (detection) give the Workload their own `samples`."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return batch_samples(next(iter(batch.values())))
    if isinstance(batch, list | tuple) and batch:
        return batch_samples(batch[0])
    return 1


@dataclass
class EpochStats:
    losses: list[float]
    steps: int  # optimizer steps taken in the epoch (skipped fp16 steps excluded)
    stopped: bool  # max_steps reached
    interrupted: bool = False  # a stop request ended the epoch early (its end hook did not run)


class StepLoop:
    """Drives one model, optimizer, mask set and method through optimizer steps."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        masks: MaskSet,
        method: Method,
        plan: Plan,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        *,
        total_steps: int,
        lr_kind: str = "constant",
        warmup: int = 0,
        grad_clip: float | None = None,
        precision: str = "fp32",
        ledger: FlopsLedger | None = None,
        samples: Callable[[Any], int] = batch_samples,
        world: int = 1,
        train_module: nn.Module | None = None,
    ):
        self.model, self.optimizer, self.masks = model, optimizer, masks
        self.method, self.plan, self.loss_fn = method, plan, loss_fn
        self.total_steps, self.lr_kind, self.warmup = total_steps, lr_kind, warmup
        self.grad_clip = grad_clip or None
        self.ledger, self.samples, self.world = ledger, samples, world
        self.train_module = train_module if train_module is not None else model
        self.step = 0
        self._nonfinite = 0  # non-finite losses in a row
        self.enforcer = (
            MaskEnforcer(masks, optimizer, before_mask=self._read) if method.sparse else None
        )
        self.dtype = PRECISIONS[precision]
        self.device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def _read(self) -> None:
        if self.plan.dense_grad(self.step):
            self.method.read_gradients(self.step)

    # ---- one step ----------------------------------------------------------------------------
    def set_lr(self) -> float:
        if self.plan.lr_clock is None:
            position, length, peak = self.step, self.total_steps, 1.0
        else:
            position, length, peak = self.plan.lr_clock(self.step)
        factor = lr_factor(self.lr_kind, position, length, self.warmup) * peak
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return factor

    def _backward(self, micro_batches: list[Any]) -> float:
        total = 0.0
        ddp = isinstance(self.train_module, nn.parallel.DistributedDataParallel)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not ddp else self.train_module.no_sync()
            with sync:
                with torch.autocast(self.device_type, self.dtype, enabled=self.dtype is not None):
                    loss = self.loss_fn(self.train_module, batch) / len(micro_batches)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
        return total

    def run_step(self, micro_batches: list[Any]) -> float:
        """One optimizer step over `micro_batches` (already on the device); returns the loss."""
        step, plan = self.step, self.plan
        self.set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._backward(micro_batches)
        self._nonfinite = 0 if math.isfinite(loss) else self._nonfinite + 1
        if self._nonfinite > (FP16_OVERFLOW_STEPS - 1 if self.scaler else 0):
            raise Diverged(step, loss)
        if self.ledger is not None:  # at the masks this step's forward and backward ran with
            samples = sum(self.samples(b) for b in micro_batches) * self.world
            self.ledger.charge_step(samples, plan.dense_grad(step))
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.enforcer:
            self.enforcer.mask_grads()  # the method reads dense gradients first where it asked
        elif plan.dense_grad(step):
            self.method.read_gradients(step)
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if plan.replaces_step(step):
            pass  # the method's mask update replaces this step's weight update
        elif self.scaler:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:  # inf/nan gradients: the step was skipped
                return loss
        else:
            self.optimizer.step()
        self.method.update(step)
        self.step += 1
        return loss

    # ---- one epoch ---------------------------------------------------------------------------
    def run_epoch(
        self,
        epoch: int,
        batches: Iterable[Any],
        accumulate: int = 1,
        steps_per_epoch: int | None = None,
        max_steps: int | None = None,
        on_step: Callable[[], None] | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        resumed: bool = False,
        losses: list[float] | None = None,
    ) -> EpochStats:
        """Every step of one epoch between the method's epoch hooks; `on_step` is called after
        each step (the conformance checks, periodic checkpoints). `should_stop` is read between
        steps: when it says stop before the epoch's last step, the epoch ends there without its
        end hook (the run resumes inside it). `resumed`: the epoch was begun before a checkpoint,
        so its start hook has run already. `losses`, if given, is the list this epoch's losses
        are appended to (holding those of a part run before a checkpoint)."""
        self.model.train()
        if not resumed:
            self.method.on_epoch_start(epoch)
        losses = [] if losses is None else losses
        group: list[Any] = []
        taken, stopped = 0, False
        for batch in batches:
            if steps_per_epoch is not None and taken >= steps_per_epoch:
                break
            if max_steps is not None and self.step >= max_steps:
                stopped = True
                break
            group.append(batch)
            if len(group) < accumulate:
                continue
            before = self.step
            losses.append(self.run_step(group))
            taken += self.step - before
            group = []
            if on_step is not None:
                on_step()
            last = steps_per_epoch is not None and taken >= steps_per_epoch
            if should_stop is not None and not last and should_stop():
                return EpochStats(losses, taken, stopped, interrupted=True)
        self.method.on_epoch_end(epoch)
        return EpochStats(losses, taken, stopped)
