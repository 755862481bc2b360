"""The one training loop: any task with any method under one budget, leaving one result record."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gapbench import distributed
from gapbench.budget import Budget
from gapbench.flops import FlopsLedger, measure_forward_flops
from gapbench.masks import MaskSet
from gapbench.method import Method, MethodContext, get_method_class
from gapbench.results import atomic_torch_save, make_record, run_id, write_record
from gapbench.task import TaskSetup, get_task


@dataclass
class RunConfig:
    """One run: the resolved settings that identify it (hashed into its run id)."""

    task: str
    method: str
    sparsity: float = 0.9
    distribution: str = "uniform"
    seed: int = 0
    profile: str = "tiny"
    epochs: int | None = None  # comparison budget; None = the task profile's default
    batch_size: int | None = None
    data_root: str | None = None
    max_steps: int | None = None
    method_params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    out: str = "results"

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same run (device and output folder do not)."""
        d = asdict(self)
        d.pop("device")
        d.pop("out")
        return d


def default_cache_dir(task: str) -> Path:
    """Where embedded data sets are generated: $GAPBENCH_CACHE or ~/.cache/gapbench."""
    root = os.environ.get("GAPBENCH_CACHE") or Path.home() / ".cache" / "gapbench"
    return Path(root) / task


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(schedule: str, position: int, length: int, warmup: int) -> float:
    """Multiplier of the peak LR at `position` of a schedule `length` steps long."""
    if schedule == "inverse_sqrt":
        step = position + 1
        w = max(1, warmup)
        return min(step / w, math.sqrt(w / step))
    if warmup and position < warmup:
        return (position + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, length - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (position - warmup) / span)))
    raise ValueError(f"unknown lr schedule {schedule!r}")


def batch_samples(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return batch_samples(next(iter(batch.values())))
    if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor | dict):
        return len(batch)  # a list of per-sample tensors/targets (detection)
    if isinstance(batch, list | tuple) and batch:
        return batch_samples(batch[0])
    return 1


def recalibrate_batchnorm(
    model: nn.Module, setup: TaskSetup, device: torch.device, batches: int
) -> None:
    """Re-estimate BN running statistics (after a P-GaP merge) from a few training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or setup.forward is None:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i, batch in enumerate(setup.train_loader):
            if i >= batches:
                break
            setup.forward(model, setup.to_device(batch, device))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.train(was_training)


class Trainer:
    """Builds task and method from a RunConfig, trains, evaluates, writes the record."""

    def __init__(self, config: RunConfig, budget_epochs: int | None = None):
        self.config = config
        self.dist, self.device = distributed.init_from_env(torch.device(config.device))
        self.out = Path(config.out)
        self.run_id = run_id(config.identity())
        self.checkpoint_path = self.out / "checkpoints" / f"{self.run_id}.pt"
        self._budget_epochs = budget_epochs

    # ---- build -------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        self.task = get_task(cfg.task)
        if cfg.profile not in self.task.profiles:
            from gapbench.errors import UserError

            raise UserError(
                f"task {cfg.task!r} has no profile {cfg.profile!r}; choose one of {', '.join(self.task.profiles)}"
            )
        # Rank 0 builds first: it generates an embedded data set once, the other ranks then read it.
        if not self.dist.is_main:
            distributed.barrier(self.dist)
        self.setup = self.task.setup(
            cfg.profile,
            Path(cfg.data_root) if cfg.data_root else None,
            cfg.seed,
            self.device,
            batch_size=cfg.batch_size,
            cache_dir=default_cache_dir(cfg.task),
        )
        if self.dist.is_main:
            distributed.barrier(self.dist)
        s = self.setup
        self.model = s.model.to(self.device)
        method_cls = get_method_class(cfg.method)
        # The task's GaP schedule (kappa, R, T); fine-tune fills the rest of the budget.
        params = dict(s.method_defaults.get(cfg.method, {}))
        if cfg.method == "gap":
            params.update({k: v for k, v in s.gap_defaults.items() if k != "finetune"})
        params.update(cfg.method_params)
        self.method: Method = method_cls(**params)
        self.budget_epochs = self._budget_epochs or cfg.epochs or s.epochs
        self.trainer_epochs = self.method.total_epochs(self.budget_epochs)
        self.optimizer = s.make_optimizer(self.model.parameters())
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.masks = MaskSet(self.model, s.prunable)
        flops, order = self._measure_flops()
        self.ledger = FlopsLedger(flops, self.masks)
        prunable = set(s.prunable)
        forward_order = [n for n in order if n in prunable]
        forward_order += [n for n in s.prunable if n not in forward_order]
        # Under torchrun each rank takes every world_size-th batch; all ranks take equally many.
        self.steps_per_epoch = len(s.train_loader) // self.dist.world_size  # type: ignore[arg-type]
        self.budget = Budget(self.trainer_epochs, self.steps_per_epoch, cfg.max_steps)
        ctx = MethodContext(
            sparsity=cfg.sparsity,
            distribution=cfg.distribution,
            seed=cfg.seed,
            forward_order=forward_order,
            task_partitions=s.partitions,
            recalibrate_bn=lambda m: recalibrate_batchnorm(
                m, s, self.device, int(self.method.params.get("bn_batches", 20))
            ),
        )
        self.method.setup(self.model, self.optimizer, self.budget, self.masks, ctx)
        distributed.check_same_on_all_ranks(self.masks.checksum(), self.dist, "initial masks")
        self.train_model = distributed.wrap(self.model, self.dist)

    def _measure_flops(self) -> tuple[dict[str, float], list[str]]:
        s = self.setup
        if s.forward is None or s.flops_batch is None:
            return {}, []
        batch = s.to_device(s.flops_batch, self.device)
        flops, order = measure_forward_flops(self.model, lambda: s.forward(self.model, batch))
        per_sample = {k: v / max(1, s.flops_batch_size) for k, v in flops.items()}
        return per_sample, order

    # ---- checkpoint --------------------------------------------------------------------------
    def _save_checkpoint(self, epoch: int, step: int, history: list[dict], elapsed: float) -> None:
        state = {
            "epoch": epoch,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "ledger": self.ledger.state_dict(),
            "history": history,
            "elapsed": elapsed,
        }
        atomic_torch_save(state, self.checkpoint_path)

    def _load_checkpoint(self) -> tuple[int, int, list[dict], float]:
        state = torch.load(self.checkpoint_path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.ledger.load_state_dict(state["ledger"])
        return state["epoch"], state["step"], state["history"], state["elapsed"]

    # ---- loop --------------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_after_epoch: int | None = None) -> dict | None:
        """Train and evaluate; returns the record (None if stopped early for a resume test)."""
        start = time.time()
        self._build()
        s, cfg = self.setup, self.config
        start_epoch, step, history, elapsed_before = 0, 0, [], 0.0
        if resume and self.checkpoint_path.exists():
            start_epoch, step, history, elapsed_before = self._load_checkpoint()
        warmup = max(s.warmup_steps, int(round(s.warmup_epochs * self.steps_per_epoch)))
        total_steps = self.budget.total_steps
        stopped = False
        epoch = start_epoch - 1
        bar = tqdm(
            range(start_epoch, self.trainer_epochs),
            desc=f"{cfg.task}/{cfg.method} s={cfg.sparsity} seed={cfg.seed}",
            disable=None,
            leave=False,
        )
        for epoch in bar:
            seed_everything(cfg.seed * 100_003 + epoch)
            self.model.train()
            self.method.on_epoch_start(epoch)
            losses = []
            for index, batch in enumerate(s.train_loader):
                if index % self.dist.world_size != self.dist.rank:
                    continue
                if index // self.dist.world_size >= self.steps_per_epoch:
                    break
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    stopped = True
                    break
                batch = s.to_device(batch, self.device)
                position, length = self.method.lr_progress(step, total_steps)
                factor = lr_factor(s.lr_schedule, position, length, warmup)
                for group in self.optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                self.optimizer.zero_grad(set_to_none=True)
                loss = s.loss(self.train_model, batch)
                loss.backward()
                if s.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                self.method.before_step(step)
                self.optimizer.step()
                self.method.after_step(step)
                self.ledger.charge_step(
                    batch_samples(batch) * self.dist.world_size, self.method.dense_grad_step(step)
                )
                losses.append(float(loss.detach()))
                step += 1
            self.method.on_epoch_end(epoch)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)) if losses else None,
                    "steps": step,
                    "sparsity": round(self.masks.overall_sparsity(), 6),
                }
            )
            bar.set_postfix(loss=history[-1]["train_loss"], sparsity=history[-1]["sparsity"])
            distributed.check_same_on_all_ranks(self.masks.checksum(), self.dist, "masks")
            if self.dist.is_main:
                self._save_checkpoint(
                    epoch + 1, step, history, elapsed_before + time.time() - start
                )
            if stopped or (stop_after_epoch is not None and epoch + 1 >= stop_after_epoch):
                break
        if stop_after_epoch is not None and not stopped and epoch + 1 < self.trainer_epochs:
            return None
        return self._finish(step, history, elapsed_before + time.time() - start, stopped)

    def _finish(self, step: int, history: list[dict], elapsed: float, stopped: bool) -> dict:
        self.method.on_train_end()
        if self.method.sparse:
            self.masks.apply()
            wrong = {
                n: (self.masks.count(n), k)
                for n, k in self.method.target_counts.items()
                if self.masks.count(n) != k
            }
            if wrong:
                raise RuntimeError(f"method {self.config.method} left wrong keep counts: {wrong}")
        metrics = {
            "test": self._evaluate(self.setup.test_loader),
            "val": self._evaluate(self.setup.val_loader),
        }
        record = make_record(self, metrics, history, step, elapsed, stopped)
        record["_path"] = None
        if self.dist.is_main:
            record["_path"] = str(write_record(record, Path(self.config.out)))
            self.checkpoint_path.unlink(missing_ok=True)
        distributed.barrier(self.dist)
        return record

    def _evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            return {k: float(v) for k, v in self.setup.evaluate(self.model, loader).items()}
