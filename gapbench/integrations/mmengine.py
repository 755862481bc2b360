"""gapbench methods inside mmengine's Runner (mmdet, mmpretrain, mmdet3d): `GapbenchSparsityHook`.

    custom_hooks = [dict(type="GapbenchSparsityHook", method="gap", sparsity=0.9,
                         method_args=dict(partitions=3),
                         prunable=dict(types=["Conv2d"], exclude=["backbone.conv1", "bbox_head"]))]
    custom_imports = dict(imports=["gapbench.integrations.mmengine"], allow_failed_imports=False)

The hook drives any registered method (built-in or plug-in) from the runner's life cycle:
`on_epoch_start`/`on_epoch_end` around train epochs, `update` after every optimizer update. Masks
are enforced by gapbench's MaskEnforcer on the optimizer inside the OptimWrapper (the same
optimizer step hooks gapbench's own loop uses), so the OptimWrapper needs no change; the hook
only wraps `OptimWrapper._clip_grad` so that gradients are masked before clipping, as in
gapbench's loop, and skips the weight update on steps whose mask update replaces it (RigL).
Method state and masks travel in mmengine checkpoints (`resume=True` continues exactly), masks
are checksummed across data-parallel ranks, and a gapbench record is written at the end so that
`python -m gapbench leaderboard` lists mmengine runs beside native ones.
Needs an epoch-based train loop. The LR schedule is mmengine's (a method's LR clock is ignored).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from gapbench.errors import UserError
from gapbench.registry import get_method_class, load_plugin
from gapbench.report.records import (
    SCHEMA_VERSION,
    RunRecord,
    git_commit,
    run_id,
    versions,
    write_record,
)
from gapbench.sparse.distribution import total_keep
from gapbench.sparse.enforce import MaskEnforcer
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context
from gapbench.sparse.partition import partitions_by_prefix
from gapbench.sparse.pattern import Pattern
from gapbench.sparse.selection import parse_dense_layers, select_prunable

STATE_KEY = "gapbench"


@HOOKS.register_module()
class GapbenchSparsityHook(Hook):
    priority = "ABOVE_NORMAL"

    def __init__(
        self,
        method: str = "gap",
        sparsity: float = 0.9,
        distribution: str = "uniform",
        method_args: dict[str, Any] | None = None,
        prunable: dict[str, Any] | None = None,
        dense_layers: str = "none",
        partitions: list[list[str]] | None = None,
        pattern: str = "unstructured",
        seed: int = 0,
        task: str | None = None,
        metric: str | None = None,
        out: str = "results/runs",
        plugins: tuple[str, ...] = (),
    ):
        for plugin in plugins:
            load_plugin(plugin)
        self.cls = get_method_class(method)
        self.method = self.cls(**(method_args or {}))
        self.pattern = Pattern.parse(pattern)
        if self.cls.sparse:
            self.cls.check_distribution(distribution, self.pattern)
            self.method.check_pattern(self.pattern)
        if not 0.0 <= sparsity < 1.0:
            raise UserError(f"sparsity {sparsity} is outside [0, 1)")
        prunable = dict(prunable or {})
        self.types = tuple(
            getattr(nn, t) for t in prunable.get("types", ["Conv1d", "Conv2d", "Conv3d", "Linear"])
        )
        self.exclude = tuple(prunable.get("exclude", ()))
        self.dense_layers = parse_dense_layers(dense_layers)
        self.partition_prefixes = [list(p) for p in partitions] if partitions else None
        self.sparsity, self.distribution, self.seed = sparsity, distribution, seed
        self.task, self.metric, self.out = task, metric, Path(out)
        self.step = 0
        self.resumed: dict[str, Any] | None = None
        self.last_metrics: dict[str, float] = {}
        self.started = time.time()

    # ---- life cycle ------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if not hasattr(loop, "max_epochs"):
            raise UserError(
                "GapbenchSparsityHook needs an epoch-based train loop (train_cfg type='EpochBasedTrainLoop')"
            )
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optimizer = runner.optim_wrapper.optimizer
        selection = select_prunable(model, self.exclude, self.dense_layers, types=self.types)
        self.selection = selection
        self.masks = MaskSet(model, selection.prunable)
        for name in selection.prunable:
            self.pattern.check_shape(name, self.masks.params[name].shape)
        spe = max(
            1,
            len(runner.train_dataloader)
            // getattr(runner.optim_wrapper, "_accumulative_counts", 1),
        )
        budget = Budget(loop.max_epochs, spe)
        self.plan = self.method.plan(budget)
        if self.plan.epochs != loop.max_epochs:
            raise UserError(
                f"{self.cls.name} trains {self.plan.epochs} epochs on a budget of {loop.max_epochs}; "
                f"set train_cfg max_epochs={self.plan.epochs} (or use a method that fills the budget)"
            )
        # Resuming: mmengine loaded weights and optimizer state already; setup() must not touch them.
        saved = (
            (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
            if self.resumed
            else None
        )
        groups = {}
        if self.partition_prefixes:  # GaP partitions by module prefix, e.g. backbone | neck | head
            groups = {
                len(self.partition_prefixes): partitions_by_prefix(
                    selection.prunable, self.partition_prefixes
                )
            }
        ctx = Context(
            model, optimizer, self.masks, Budget(self.plan.epochs, spe), self.sparsity, self.distribution,
            self.seed, selection.prunable, groups, selection.dense_layers + selection.excluded, pattern=self.pattern,
        )  # fmt: skip
        self.method.setup(ctx)
        if saved is not None:
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            self.method.load_state_dict(self.resumed["method"])
            self.step = self.resumed["step"]
        self.enforcer = (
            MaskEnforcer(self.masks, optimizer, before_mask=self._read) if self.cls.sparse else None
        )
        self._wrap_optim_wrapper(runner.optim_wrapper)
        self._check_ranks("initial masks")

    def _read(self) -> None:
        if self.plan.dense_grad(self.step):
            self.method.read_gradients(self.step)

    def _wrap_optim_wrapper(self, wrapper) -> None:
        """Mask before clipping, and let a replacing mask update take the weight step's place."""
        enforcer, hook = self.enforcer, self
        clip = wrapper._clip_grad
        step = wrapper.step

        def clip_after_masking() -> None:
            if enforcer is not None:
                enforcer.mask_grads()
            clip()

        def step_or_replace(**kwargs: Any) -> None:
            if hook.plan.replaces_step(hook.step):
                if enforcer is not None:
                    enforcer.mask_grads()  # the method reads its dense gradients
                hook._stepped = True
                return
            step(**kwargs)
            hook._stepped = True

        wrapper._clip_grad = clip_after_masking
        wrapper.step = step_or_replace

    def before_train_epoch(self, runner) -> None:
        self.method.on_epoch_start(runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._stepped = False

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if getattr(self, "_stepped", False):
            self.method.update(self.step)
            self.step += 1

    def after_train_epoch(self, runner) -> None:
        self.method.on_epoch_end(runner.epoch)
        self._check_ranks("masks")

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self.last_metrics = {
            k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)
        }

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self.after_val_epoch(runner, metrics)

    def after_train(self, runner) -> None:
        self.method.finish()
        if self.cls.sparse:
            numels = [self.masks.numel(n) for n in self.masks.names]
            expected = total_keep(numels, self.sparsity)
            if self.masks.alive() != expected or self.masks.counts() != self.method.target_counts:
                raise RuntimeError(
                    f"{self.cls.name} left {self.masks.alive()} weights alive, expected {expected}"
                )

    def after_run(self, runner) -> None:
        if get_rank() == 0 and hasattr(self, "masks"):
            write_record(self._record(runner), self.out)

    # ---- checkpoints ---------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if hasattr(self, "masks"):
            checkpoint[STATE_KEY] = {"method": self.method.state_dict(), "step": self.step}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if STATE_KEY in checkpoint:
            self.resumed = checkpoint[STATE_KEY]

    # ---- helpers -------------------------------------------------------------------------------
    def _check_ranks(self, what: str) -> None:
        if get_world_size() > 1:
            sums = all_gather_object(self.masks.checksum())
            if len(set(sums)) != 1:
                raise RuntimeError(f"{what} differ across ranks: {sums}")

    def _record(self, runner) -> RunRecord:
        task = (
            self.task or Path(getattr(runner.cfg, "filename", None) or runner.experiment_name).stem
        )
        metric = self.metric or next(iter(self.last_metrics), "metric")
        identity = {
            "task": task, "profile": "mmengine", "method": self.cls.name, "params": self.method.params.as_dict(),
            "sparsity": self.sparsity if self.cls.sparse else 0.0, "distribution": self.distribution if self.cls.sparse else "dense",
            "seed": self.seed, "epochs": runner.train_loop.max_epochs, "pattern": str(self.pattern),
            "config": hashlib.sha256(json.dumps(str(runner.cfg), sort_keys=True).encode()).hexdigest()[:12],
            "schema": SCHEMA_VERSION,
        }  # fmt: skip
        alive, total = self.masks.alive(), self.masks.total()
        all_weights = sum(self.selection.all_weights.values())
        nan = float("nan")
        return RunRecord(
            schema=SCHEMA_VERSION, run_id=run_id(identity), status="complete", identity=identity,
            task=task, profile="mmengine", dataset=str(runner.cfg.get("dataset_type", "mmengine data")),
            method=self.cls.name, params=self.method.params.as_dict(), sparsity=identity["sparsity"],
            distribution=identity["distribution"], seed=self.seed, epochs=identity["epochs"], budget_mode="epochs",
            multiplier=1.0, metric=metric, metrics=self.last_metrics, val_metrics=self.last_metrics,
            measured_sparsity=(1 - alive / total) if self.cls.sparse else 0.0, prunable_params=total,
            alive_prunable_params=alive, conv_linear_density=(all_weights - (total - alive)) / max(1, all_weights),
            params_total=sum(p.numel() for p in self.masks.params.values()), params_alive=alive,
            policy=self.selection.describe(",".join(self.dense_layers) or "none", self.exclude),
            per_layer={n: {"numel": self.masks.numel(n), "alive": self.masks.count(n)} for n in self.masks.names},
            budget={"trainer_epochs": self.plan.epochs, "steps_run": self.step, "front_end": "mmengine"},
            plan=self.plan.points, flops={"train": nan, "dense_train_budget": nan, "inference": nan, "dense_inference": nan},
            method_log=self.method.log, history=[], wall_time_s=round(time.time() - self.started, 2),
            device=str(next(iter(self.masks.params.values())).device), versions=versions(), git_commit=git_commit(),
            task_extra={"front_end": "mmengine", "world_size": get_world_size()},
        )  # fmt: skip
