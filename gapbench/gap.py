"""Scheduled Grow-and-Prune (GaP), Ma et al., ICLR 2022 — the method as GAP_SPEC.md defines it.

C-GaP (mode="sequential"): partitions grow to dense one at a time for T epochs each, then are
pruned back by magnitude; after R rounds all masks freeze for F fine-tune epochs.
P-GaP (mode="parallel"): kappa workers start each round from the same state, worker k grows
partition k; their results are merged (partition tensors from their owner, everything else
averaged), pruned, and batch-norm statistics are recalibrated. On one machine the workers run one
after another over the trainer's epochs: same math, kappa times the wall time.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch

from gapbench.errors import UserError
from gapbench.masks import random_masks
from gapbench.method import Method, register_method
from gapbench.partition import check_partitions, consecutive_partitions


@register_method("gap")
class GaP(Method):
    description = "Scheduled Grow-and-Prune: cyclically grow one partition dense, prune it back"
    defaults = {
        "partitions": 4,  # kappa
        "schedule": "cyclic",  # cyclic | random
        "mode": "sequential",  # sequential (C-GaP) | parallel (P-GaP)
        "epochs_per_step": 1,  # T
        "rounds": 1,  # R
        "finetune": -1,  # F; -1 = the rest of the comparison's budget
        "balance": "params",  # params | layers (default partitioning, when the task gives none)
        "lr_restart": False,  # restart the LR schedule every step, as the official code did
        "bn_batches": 20,  # batches for BN recalibration after a P-GaP merge
    }

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.params
        if p["schedule"] not in ("cyclic", "random"):
            raise UserError("gap.schedule must be cyclic or random")
        if p["mode"] not in ("sequential", "parallel"):
            raise UserError("gap.mode must be sequential or parallel")
        if p["mode"] == "parallel" and p["schedule"] != "cyclic":
            raise UserError(
                "gap.mode=parallel needs gap.schedule=cyclic (each worker owns a partition)"
            )
        for key in ("partitions", "epochs_per_step", "rounds"):
            if int(p[key]) < 1:
                raise UserError(f"gap.{key} must be at least 1")
        self.kappa = int(p["partitions"])
        self.T = int(p["epochs_per_step"])
        self.R = int(p["rounds"])
        self.parallel = p["mode"] == "parallel"
        self.groups: list[list[str]] = []
        self._snapshot: dict[str, Any] | None = None
        self._workers: list[dict[str, Any]] = []

    # ---- budget ------------------------------------------------------------------------------
    @property
    def grow_epochs(self) -> int:
        """Epochs of grow/prune steps per worker (what a parallel worker trains before fine-tune)."""
        return self.R * self.T if self.parallel else self.R * self.kappa * self.T

    def budget_epochs(self) -> int | None:
        f = int(self.params["finetune"])
        return None if f < 0 else self.grow_epochs + f

    def total_epochs(self, budget_epochs: int) -> int:
        finetune = budget_epochs - self.grow_epochs
        if finetune < 0:
            raise UserError(
                f"budget of {budget_epochs} epochs is shorter than GaP's grow phase "
                f"({self.grow_epochs} epochs = rounds*partitions*epochs_per_step); "
                "raise --epochs or lower gap.rounds / gap.epochs_per_step"
            )
        f = int(self.params["finetune"])
        if f >= 0 and f != finetune:
            raise UserError(
                f"gap.finetune={f} does not fill the budget of {budget_epochs} epochs "
                f"(needs {finetune}); drop gap.finetune or set --epochs {self.grow_epochs + f}"
            )
        self.finetune = finetune
        self.sequential_grow_epochs = self.R * self.kappa * self.T
        return self.sequential_grow_epochs + finetune

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        if not hasattr(self, "finetune"):
            self.total_epochs(budget.epochs)
        order = ctx.forward_order or masks.names
        if self.kappa in ctx.task_partitions:
            self.groups = [list(g) for g in ctx.task_partitions[self.kappa]]
        else:
            sizes = [masks.numel(n) for n in order]
            self.groups = consecutive_partitions(order, sizes, self.kappa, self.params["balance"])
        check_partitions(self.groups, masks.names)
        gen = torch.Generator().manual_seed(ctx.seed)
        shapes = [masks.params[n].shape for n in masks.names]
        counts = [self.target_counts[n] for n in masks.names]
        for name, mask in zip(masks.names, random_masks(shapes, counts, gen)):
            masks.set_mask(name, mask, optimizer)
        self.log = {
            "partitions": self.groups,
            "partition_sizes": [sum(masks.numel(n) for n in g) for g in self.groups],
            "schedule": [],  # one entry per grow step: epochs and grown tensors
            "partition_density": [],  # per trainer epoch, density of each partition during it
            "finetune_epochs": self.finetune,
            "grow_epochs_per_worker": self.grow_epochs,
        }
        self._grown: list[str] = []
        self._grow_history: list[list[int]] = []

    # ---- schedule ----------------------------------------------------------------------------
    def _step_of(self, epoch: int) -> int | None:
        """Index of the grow step that trainer epoch `epoch` belongs to (None in fine-tune)."""
        return epoch // self.T if epoch < self.sequential_grow_epochs else None

    def _grown_groups(self, step: int) -> list[int]:
        """Partition indices (cyclic) or tensor indices (random) grown at `step`."""
        if self.params["schedule"] == "cyclic":
            return [step % self.kappa]
        while len(self._grow_history) <= step:
            names = self.masks.names
            n_grow = max(1, round(len(names) / self.kappa))
            prev = set(self._grow_history[-1]) if self._grow_history else set()
            candidates = [i for i in range(len(names)) if i not in prev]
            rng = random.Random(self.ctx.seed * 100003 + len(self._grow_history))
            self._grow_history.append(sorted(rng.sample(candidates, min(n_grow, len(candidates)))))
        return self._grow_history[step]

    def _names_grown(self, step: int) -> list[str]:
        if self.params["schedule"] == "cyclic":
            return list(self.groups[step % self.kappa])
        return [self.masks.names[i] for i in self._grown_groups(step)]

    # ---- hooks -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        step = self._step_of(epoch)
        if step is None or epoch % self.T:
            return
        if self.parallel:
            worker = step % self.kappa
            if worker == 0:
                self._snapshot = self._capture()
                self._workers = []
            else:
                self._restore(self._snapshot)
        self._grown = self._names_grown(step)
        for name in self._grown:
            self.masks.set_mask(name, torch.ones_like(self.masks.masks[name]), self.optimizer)
        first, last = epoch, epoch + self.T - 1
        self.log["schedule"].append({"step": step, "epochs": [first, last], "grown": self._grown})

    def on_epoch_end(self, epoch: int) -> None:
        self.log["partition_density"].append(
            [
                sum(self.masks.count(n) for n in g) / sum(self.masks.numel(n) for n in g)
                for g in self.groups
            ]
        )
        step = self._step_of(epoch)
        if step is None or (epoch + 1) % self.T:
            return
        if not self.parallel:
            self._prune(self._grown)
        else:
            self._workers.append(self._capture())
            if step % self.kappa == self.kappa - 1:
                self._merge()
        self._grown = []

    def on_train_end(self) -> None:
        # A run cut short (--max-steps) may stop inside a grow step: settle to the target anyway.
        self._prune([n for n in self.masks.names if self.masks.count(n) != self.target_counts[n]])

    def lr_progress(self, step: int, total_steps: int) -> tuple[int, int]:
        spe = self.budget.steps_per_epoch
        epoch, within = divmod(step, spe)
        if self.params["lr_restart"]:
            s = self._step_of(epoch)
            if s is not None:
                return (epoch % self.T) * spe + within, self.T * spe
            return (epoch - self.sequential_grow_epochs) * spe + within, max(1, self.finetune * spe)
        if not self.parallel:
            return step, total_steps
        # Parallel workers all see the schedule of one worker: R*T grow epochs, then fine-tune.
        virtual_total = (self.grow_epochs + self.finetune) * spe
        if epoch < self.sequential_grow_epochs:
            rnd = epoch // (self.kappa * self.T)
            virtual = rnd * self.T + epoch % self.T
        else:
            virtual = self.grow_epochs + epoch - self.sequential_grow_epochs
        return virtual * spe + within, virtual_total

    # ---- grow / prune / merge ----------------------------------------------------------------
    def _prune(self, names: list[str]) -> None:
        for name in names:
            self.prune_to(name, self.target_counts[name])

    def _capture(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "masks": self.masks.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.masks.load_state_dict(state["masks"])

    def _owner_of(self) -> dict[str, int]:
        """Which worker owns each model entry: partition tensors, plus the biases/norms whose module
        path shares the longest prefix only with tensors of one partition. Others are averaged."""
        owner: dict[str, int] = {}
        weight_part = {n: k for k, g in enumerate(self.groups) for n in g}
        prefixes = {n: n.rsplit(".", 1)[0].split(".") for n in weight_part}
        for key in self.model.state_dict():
            if key in weight_part:
                owner[key] = weight_part[key]
                continue
            path = key.rsplit(".", 1)[0].split(".")
            best, parts = 0, set()
            for n, pre in prefixes.items():
                common = 0
                for a, b in zip(path, pre):
                    if a != b:
                        break
                    common += 1
                if common > best:
                    best, parts = common, {weight_part[n]}
                elif common == best and common > 0:
                    parts.add(weight_part[n])
            if best > 0 and len(parts) == 1:
                owner[key] = parts.pop()
        return owner

    def _merge(self) -> None:
        owner = self._owner_of()
        merged = copy.deepcopy(self._snapshot["model"])
        for key, value in merged.items():
            if key in owner:
                merged[key] = self._workers[owner[key]]["model"][key].clone()
            elif value.is_floating_point():
                merged[key] = torch.stack([w["model"][key] for w in self._workers]).mean(0)
            else:
                merged[key] = self._workers[-1]["model"][key].clone()
        self.model.load_state_dict(merged)
        self.optimizer.load_state_dict(self._merge_optimizer(owner))
        # Masks: every partition was dense in its own worker; prune all back to the target.
        for name in self.masks.names:
            self.masks.set_mask(name, torch.ones_like(self.masks.masks[name]))
        self._prune(self.masks.names)
        if self.ctx.recalibrate_bn is not None:
            self.ctx.recalibrate_bn(self.model)
        self._snapshot, self._workers = None, []

    def _merge_optimizer(self, owner: dict[str, int]) -> dict[str, Any]:
        """Per-parameter optimizer state taken from the owning worker, averaged otherwise."""
        name_of = {id(p): n for n, p in self.model.named_parameters()}
        names = [name_of.get(id(p)) for g in self.optimizer.param_groups for p in g["params"]]
        merged = copy.deepcopy(self._workers[-1]["optimizer"])
        for idx, state in merged["state"].items():
            name = names[idx] if idx < len(names) else None
            sources = [w["optimizer"]["state"].get(idx) for w in self._workers]
            if name in owner and sources[owner[name]] is not None:
                merged["state"][idx] = copy.deepcopy(sources[owner[name]])
                continue
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.is_floating_point()
                    and value.dim() > 0
                ):
                    present = [s[key] for s in sources if s is not None and key in s]
                    state[key] = torch.stack(present).mean(0)
        return merged

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "grown": list(self._grown),
            "grow_history": [list(h) for h in self._grow_history],
            "snapshot": self._snapshot,
            "workers": self._workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._grown = list(state["grown"])
        self._grow_history = [list(h) for h in state["grow_history"]]
        self._snapshot = state["snapshot"]
        self._workers = list(state["workers"])
