"""Scheduled Grow-and-Prune (GaP), Ma et al., ICLR 2022 (arXiv 2106.09857), as GAP_SPEC.md defines it.

C-GaP (mode="sequential"): the prunable tensors are split into kappa partitions; one at a time a
partition grows dense for T epochs and is pruned back by magnitude; after R rounds all masks
freeze for F fine-tune epochs. Budget: R*kappa*T + F epochs.
P-GaP (mode="parallel"): each round, kappa workers start from the same state and worker k grows
partition k; partition k (with its biases and norms) comes from worker k, the rest is averaged,
everything is pruned and batch norm recalibrated (gapbench/gap/merge.py). On one device the
workers run one after another (same math, kappa times the wall time); per-worker budget R*T + F.

Where gapbench follows the official code (github.com/boone891214/GaP, Transformer only) and
where it deviates, each deviation being an option:
- grown weights restart at exactly zero; pruning keeps the exact per-layer top-k |w|: as official.
- one optimizer for the whole run with the state of changed entries zeroed and gradients masked;
  under Adam/AdamW a grown entry is bias-corrected by its own age, as a fresh Adam would
  (`per_entry_adam_age`; torch's per-tensor step count makes its first update 3.16x a fresh
  Adam's); official: a new process, a new Adam and a new LR warm-up every step (ddp_trainer.py
  `load_checkpoint` with --restart-training) -> `optimizer_restart=true`, `lr_restart=true`.
- official C-GaP first trains partition 1 dense from its random init for one extra step
  (sequential_gap_distributed_run_3_partition.py: 1 + R*kappa steps) -> `first_dense=true`.
- random partitions: each step grows len/kappa tensors, never those of the previous step
  (prune_utils/utils_pr.py); the driver's peak LR across steps is constant by default, cosine and
  linear exist (run_rand_partition_seq_gap.py) -> `peak_lr_decay`.
- `--distribution global`: like the official `--sp-global-weight-sparsity` (admm.py
  `update_prune_ratio`), every prune re-derives one magnitude threshold from the current weights
  of the tensors pruned in that step (a partition; everything after a P-GaP merge), keeping that
  pool's share of the budget. Initial masks (before any training) are uniform.
- masks are drawn from one seeded generator (official: per-rank numpy, unseeded).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from gapbench.errors import UserError
from gapbench.gap.merge import (
    MergeAccumulator,
    flatten_optimizer_state,
    merge_across_groups,
    owners,
    slot_owner,
    unflatten_optimizer_state,
)
from gapbench.registry import register_method
from gapbench.sparse.distribution import global_counts_total, uniform_counts
from gapbench.sparse.method import Budget, Context, LrPoint, Method, Params, Plan
from gapbench.sparse.partition import check_partitions, consecutive_partitions


@dataclass(frozen=True)
class GaPParams(Params):
    EPOCH_FIELDS: ClassVar[tuple[str, ...]] = ("epochs_per_step", "finetune")

    partitions: int = 4  # kappa
    schedule: Literal["cyclic", "random"] = "cyclic"
    mode: Literal["sequential", "parallel"] = "sequential"  # C-GaP | P-GaP
    epochs_per_step: int = 1  # T
    rounds: int = 1  # R
    finetune: int = -1  # F; -1 = the rest of the comparison's budget
    balance: Literal["params", "layers"] = "params"  # default partitioning (task gives none)
    lr_restart: bool = False  # restart the LR schedule every step (official)
    optimizer_restart: bool = False  # clear all optimizer state every step (official)
    first_dense: bool = False  # extra first step: partition 1 dense from its init (official)
    peak_lr_decay: Literal["constant", "cosine", "linear"] = "constant"  # across steps
    bn_batches: int = 20  # batches for batch-norm recalibration after a P-GaP merge

    def check(self) -> None:
        for key in ("partitions", "epochs_per_step", "rounds"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1")
        if self.finetune < -1:
            raise UserError("finetune must be >= 0 epochs, or -1 for the rest of the budget")
        if self.mode == "parallel" and self.schedule != "cyclic":
            raise UserError("mode=parallel needs schedule=cyclic (each worker owns a partition)")
        if self.peak_lr_decay != "constant" and self.mode != "sequential":
            raise UserError("peak_lr_decay is a C-GaP option (mode=sequential)")
        if self.first_dense and (self.mode, self.schedule) != ("sequential", "cyclic"):
            raise UserError("first_dense is a C-GaP option (mode=sequential, schedule=cyclic)")
        if self.bn_batches < 0:
            raise UserError("bn_batches must be >= 0")


@register_method("gap")
class GaP(Method):
    description = "Scheduled Grow-and-Prune: cyclically grow one partition dense, prune it back"
    reference = "Ma et al., ICLR 2022 (arXiv 2106.09857); github.com/boone891214/GaP"
    Params = GaPParams
    params: GaPParams
    global_split_from_training = True  # `global` re-ranks each pruned pool's trained weights
    # Grown weights restart with zeroed moments: bias-correct them by their own age under Adam,
    # as a fresh Adam would (the official code restarts Adam: `optimizer_restart=true`).
    per_entry_adam_age = True

    # ---- budget ------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Grow steps over the whole run (all workers, for P-GaP)."""
        p = self.params
        return p.rounds * p.partitions + int(p.first_dense)

    def worker_groups(self) -> int:
        """Process groups this method can use at once: P-GaP's kappa workers."""
        return self.params.partitions if self.params.mode == "parallel" else 1

    @property
    def grow_epochs_per_worker(self) -> int:
        """Epochs of the grow phase one worker trains (the wall-clock budget it takes)."""
        p = self.params
        if p.mode == "parallel":
            return p.rounds * p.epochs_per_step
        return self.steps * p.epochs_per_step

    def implied_epochs(self) -> int | None:
        """The budget this schedule fills on its own, when `finetune` is given."""
        f = self.params.finetune
        return None if f < 0 else self.grow_epochs_per_worker + f

    def plan(self, budget: Budget) -> Plan:
        p = self.params
        finetune = budget.epochs - self.grow_epochs_per_worker
        if finetune < 0:
            raise UserError(
                f"budget of {budget.epochs} epochs is shorter than GaP's grow phase "
                f"({self.grow_epochs_per_worker} epochs per worker); raise --epochs or lower "
                "gap.rounds / gap.epochs_per_step"
            )
        if p.finetune >= 0 and p.finetune != finetune:
            raise UserError(
                f"gap.finetune={p.finetune} does not fill the budget of {budget.epochs} epochs "
                f"(needs {finetune}); drop gap.finetune or set --epochs "
                f"{self.grow_epochs_per_worker + p.finetune}"
            )
        multi = p.mode == "parallel" and budget.workers == p.partitions
        # Trainer epochs of grow steps: all workers one after another, or one worker's own.
        grow = self.grow_epochs_per_worker if multi else self.steps * p.epochs_per_step
        spe = budget.steps_per_epoch
        points = {
            "grow_steps": self.steps,
            "epochs_per_step": p.epochs_per_step,
            "grow_epochs_per_worker": self.grow_epochs_per_worker,
            "finetune_epochs": finetune,
            "trainer_epochs": grow + finetune,
            "steps_per_grow_step": p.epochs_per_step * spe,
        }
        clock = None
        if p.lr_restart or (p.mode == "parallel" and not multi) or p.peak_lr_decay != "constant":
            clock = self._lr_clock(grow, finetune, spe)
        data_epoch = self._serial_epoch if multi else None
        points["worker_groups"] = budget.workers if multi else 1
        return Plan(epochs=grow + finetune, lr_clock=clock, points=points, data_epoch=data_epoch)

    def _serial_epoch(self, epoch: int) -> int:
        """The one-device emulation's epoch that a worker group's `epoch` stands for: both see
        the same data order and dropout, so they merge to the same model."""
        p, k = self.params, self.ctx.workers.index
        T, grow = p.epochs_per_step, self.grow_epochs_per_worker
        if epoch >= grow:
            return self.steps * T + epoch - grow
        return ((epoch // T) * p.partitions + k) * T + epoch % T

    def _lr_clock(self, grow: int, finetune: int, spe: int):
        """Where the LR schedule stands at an optimizer step."""
        p, steps, T = self.params, self.steps, self.params.epochs_per_step
        worker_total = (self.grow_epochs_per_worker + finetune) * spe

        def peak(step_index: int) -> float:
            x = step_index / steps
            if p.peak_lr_decay == "cosine":
                return 0.5 * (1 + math.cos(math.pi * x))
            if p.peak_lr_decay == "linear":
                return 1.0 - x
            return 1.0

        def clock(step: int) -> LrPoint:
            epoch, within = divmod(step, spe)
            if epoch >= grow:  # fine-tune
                done = epoch - grow
                if p.lr_restart:
                    return done * spe + within, max(1, finetune * spe), 1.0
                return (self.grow_epochs_per_worker + done) * spe + within, worker_total, 1.0
            index = epoch // T
            if p.lr_restart:
                return (epoch % T) * spe + within, T * spe, peak(index)
            if p.mode == "parallel":  # every worker sees the schedule of one worker
                rnd = index // p.partitions
                return (rnd * T + epoch % T) * spe + within, worker_total, 1.0
            return step, (grow + finetune) * spe, peak(index)

        return clock

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.multi = self.params.mode == "parallel" and ctx.workers is not None
        p, masks = self.params, ctx.masks
        if ctx.distribution == "global":
            # Before training, magnitudes carry no information: start uniform; every prune then
            # re-derives the split from the current weights (see the module docstring).
            sizes = [masks.numel(n) for n in masks.names]
            self.target_counts = dict(zip(masks.names, uniform_counts(sizes, ctx.sparsity)))
        order = ctx.forward_order or masks.names
        if p.partitions in ctx.partitions:
            self.groups = [list(g) for g in ctx.partitions[p.partitions]]
        else:
            sizes = [masks.numel(n) for n in order]
            self.groups = consecutive_partitions(order, sizes, p.partitions, p.balance)
        check_partitions(self.groups, masks.names)
        first = self.groups[0] if p.first_dense else []
        self.draw_random_masks([n for n in masks.names if n not in first])
        self._grown: list[str] = []
        self._grow_history: list[list[int]] = []
        self._snapshot: dict[str, Any] | None = None
        self._merge: MergeAccumulator | None = None
        self._opt_merge: MergeAccumulator | None = None
        self.log = {
            "partitions": self.groups,
            "partition_sizes": [sum(masks.numel(n) for n in g) for g in self.groups],
            "schedule": [],  # one entry per grow step: trainer epochs and grown tensors
            "partition_density": [],  # per trainer epoch: density of each partition during it
        }

    # ---- schedule ----------------------------------------------------------------------------
    def _step_of(self, epoch: int) -> int | None:
        """Grow step that trainer epoch `epoch` belongs to (None during fine-tune). A worker
        group of multi-process P-GaP runs the steps of its own partition only."""
        p = self.params
        if self.multi:
            epoch = self._serial_epoch(epoch)
        index = epoch // p.epochs_per_step
        return index if index < self.steps else None

    def _names_grown(self, step: int) -> list[str]:
        if self.params.schedule == "cyclic":
            return list(self.groups[step % self.params.partitions])
        names = self.masks.names
        while len(self._grow_history) <= step:
            n_grow = max(1, len(names) // self.params.partitions)
            previous = set(self._grow_history[-1]) if self._grow_history else set()
            candidates = [i for i in range(len(names)) if i not in previous]
            rng = random.Random(self.ctx.seed * 100_003 + len(self._grow_history))
            self._grow_history.append(sorted(rng.sample(candidates, min(n_grow, len(candidates)))))
        return [names[i] for i in self._grow_history[step]]

    # ---- hooks -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        step = self._step_of(epoch)
        T = self.params.epochs_per_step
        if step is None or epoch % T:
            return
        if self.params.optimizer_restart:
            self.ctx.optimizer.state.clear()
        if self.params.mode == "parallel" and not self.multi:
            worker = step % self.params.partitions
            if worker == 0:
                self._snapshot = self._capture()
                self._start_merge()
            else:
                self._restore(self._snapshot)
        self._grown = self._names_grown(step)
        for name in self._grown:
            self.masks.set_mask(name, torch.ones_like(self.masks.masks[name]), self.ctx.optimizer)
        self.log["schedule"].append(
            {"step": step, "epochs": [epoch, epoch + T - 1], "grown": self._grown}
        )

    def on_epoch_end(self, epoch: int) -> None:
        self.log["partition_density"].append(
            [
                round(sum(self.masks.count(n) for n in g) / sum(self.masks.numel(n) for n in g), 6)
                for g in self.groups
            ]
        )
        step = self._step_of(epoch)
        if step is None or (epoch + 1) % self.params.epochs_per_step:
            return
        if self.params.mode == "sequential":
            self._prune(self._grown)
        elif self.multi:
            self._merge_groups()
        else:
            worker = step % self.params.partitions
            self._fold_in(worker)
            if worker == self.params.partitions - 1:
                self._finish_merge()
        self._grown = []

    def expected_densities(self, epoch: int) -> dict[str, float]:
        step = self._step_of(epoch)
        grown = set(self._names_grown(step)) if step is not None else set()
        target = super().expected_densities(epoch)
        return {n: 1.0 if n in grown else target[n] for n in self.masks.names}

    def finish(self) -> None:
        # A run cut short (--max-steps) may stop inside a grow step: settle at the target anyway.
        self._prune([n for n in self.masks.names if self.masks.count(n) != self.target_counts[n]])

    # ---- grow / prune ------------------------------------------------------------------------
    def _prune(self, names: list[str]) -> None:
        if not names:
            return
        if self.ctx.distribution == "global":
            budget = sum(self.target_counts[n] for n in names)
            scores = [self.magnitude(n) for n in names]
            self.target_counts.update(zip(names, global_counts_total(scores, budget)))
        for name in names:
            self.prune_to(name, self.target_counts[name])

    # ---- P-GaP on one device -----------------------------------------------------------------
    def _param_names(self) -> list[str | None]:
        name_of = {id(p): n for n, p in self.ctx.model.named_parameters()}
        return [name_of.get(id(p)) for g in self.ctx.optimizer.param_groups for p in g["params"]]

    def _capture(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.ctx.model.state_dict()),
            "optimizer": copy.deepcopy(self.ctx.optimizer.state_dict()),
            "masks": self.masks.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.ctx.model.load_state_dict(state["model"])
        self.ctx.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.masks.load_state_dict(state["masks"])

    def _start_merge(self) -> None:
        keys = list(self.ctx.model.state_dict())
        owner = owners(keys, self.groups, self.ctx.dense_weights)
        self._merge = MergeAccumulator(owner.get)
        self._opt_merge = MergeAccumulator(slot_owner(owner))

    def _fold_in(self, worker: int) -> None:
        self._merge.add(worker, self.ctx.model.state_dict())
        flat = flatten_optimizer_state(self.ctx.optimizer.state_dict(), self._param_names())
        self._opt_merge.add(worker, flat)

    def _finish_merge(self) -> None:
        model = self.ctx.model
        model.load_state_dict(self._merge.result(model.state_dict()))
        names = self._param_names()
        template = self.ctx.optimizer.state_dict()
        flat = self._opt_merge.result(flatten_optimizer_state(template, names))
        self.ctx.optimizer.load_state_dict(unflatten_optimizer_state(flat, template, names))
        # Every partition was dense in its own worker: prune all back to the target at once.
        for name in self.masks.names:
            self.masks.set_mask(name, torch.ones_like(self.masks.masks[name]))
        self._prune(list(self.masks.names))
        if self.ctx.recalibrate_bn is not None and self.params.bn_batches:
            self.ctx.recalibrate_bn(self.params.bn_batches)
        self._snapshot, self._merge, self._opt_merge = None, None, None

    # ---- P-GaP on worker groups (torch.distributed) -------------------------------------------
    def _merge_groups(self) -> None:
        model, optimizer, groups = self.ctx.model, self.ctx.optimizer, self.ctx.workers
        owner = owners(list(model.state_dict()), self.groups, self.ctx.dense_weights)
        model.load_state_dict(merge_across_groups(model.state_dict(), owner.get, groups))
        names = self._param_names()
        template = optimizer.state_dict()
        flat = merge_across_groups(
            flatten_optimizer_state(template, names), slot_owner(owner), groups
        )
        optimizer.load_state_dict(unflatten_optimizer_state(flat, template, names))
        for name in self.masks.names:
            self.masks.set_mask(name, torch.ones_like(self.masks.masks[name]))
        self._prune(list(self.masks.names))
        if self.ctx.recalibrate_bn is not None and self.params.bn_batches:
            self.ctx.recalibrate_bn(self.params.bn_batches)
            buffers = {k: v for k, v in model.state_dict().items() if "running_" in k}
            model.load_state_dict(
                merge_across_groups(buffers, lambda key: None, groups), strict=False
            )

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "grown": list(self._grown),
            "grow_history": [list(h) for h in self._grow_history],
            "snapshot": self._snapshot,
            "merge": self._merge.state_dict() if self._merge else None,
            "opt_merge": self._opt_merge.state_dict() if self._opt_merge else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._grown = list(state["grown"])
        self._grow_history = [list(h) for h in state["grow_history"]]
        self._snapshot = state["snapshot"]
        self._merge = self._opt_merge = None
        if state["merge"] is not None:
            self._start_merge()
            self._merge.load_state_dict(state["merge"])
            self._opt_merge.load_state_dict(state["opt_merge"])
