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

What a record states is read from the weights, not the masks: at the end every pruned weight must be
exactly zero (else the run fails), and `measured_sparsity` counts nonzero weights. Its metrics are
the last validation's, after the final epoch; COCO-style mAP/AR in [0, 1] are stored in percent like
gapbench's own detection task. A run whose validation yields no metric (never ran, or mmdet's
CocoMetric with no boxes at all) is recorded with status `no_metric` and the reason, never as
`complete`. The run id hashes the config without how the run was started (resume, load_from,
work_dir, launcher, logging, checkpointing), so a resumed run is the same run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from gapbench.engine.flops import FlopsLedger, measure_forward_flops
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
from gapbench.sparse.enforce import MaskEnforcer, count_weights
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context
from gapbench.sparse.partition import partitions_by_prefix
from gapbench.sparse.pattern import Pattern
from gapbench.sparse.selection import parse_dense_layers, select_prunable

STATE_KEY = "gapbench"
NO_METRIC = "no_metric"  # record status: training completed, but there is no metric to rank by

# Config keys that say how a run was started or logged, not what it trains: left out of the run id.
HOW_STARTED = frozenset(
    {
        "resume", "load_from", "work_dir", "launcher", "experiment_name", "env_cfg", "log_level",
        "log_processor", "visualizer", "vis_backends", "dist_params", "filename", "out",
        "num_workers", "persistent_workers", "pin_memory", "data_root", "backend_args",
    }
)  # fmt: skip
HOW_HOOKED = frozenset({"logger", "checkpoint", "timer", "visualization", "sampler_seed"})


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
        self.undefined: list[str] = []
        self.metric_epoch: int | None = None
        self.validated = False
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
        if self.cls.sparse:
            self._refuse_untrained(model, optimizer, selection.prunable)
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
        probe_loss, probe_ones = self._probes(runner, model)
        per_batch, _ = measure_forward_flops(
            model, lambda: model(**self._probe_data(model), mode="tensor")
        )
        batch = max(1, len(self._probe_data(model)["inputs"]))
        self.ledger = FlopsLedger({k: v / batch for k, v in per_batch.items()}, self.masks)
        self.train_samples = epoch_samples(runner.train_dataloader, get_world_size())
        ctx = Context(
            model, optimizer, self.masks, Budget(self.plan.epochs, spe), self.sparsity, self.distribution,
            self.seed, selection.prunable, groups, selection.dense_layers + selection.excluded, pattern=self.pattern,
            probe_loss=probe_loss, probe_ones=probe_ones,
        )  # fmt: skip
        self.method.setup(ctx)
        if saved is not None:
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            self.method.load_state_dict(self.resumed["method"])
            self.step = self.resumed["step"]
            if "flops" in self.resumed:
                self.ledger.load_state_dict(self.resumed["flops"])
        self.enforcer = (
            MaskEnforcer(self.masks, optimizer, before_mask=self._read) if self.cls.sparse else None
        )
        self._wrap_optim_wrapper(runner.optim_wrapper)
        self._check_ranks("initial masks")

    @staticmethod
    def _refuse_untrained(model: nn.Module, optimizer: Any, names: list[str]) -> None:
        """A pruned weight that does not train cannot regrow (GaP restarts grown weights at 0):
        frozen layers (requires_grad False, mmdet's `frozen_stages`) or layers outside the
        optimizer must be excluded from pruning, not pruned to a fixed random mask."""
        params = dict(model.named_parameters())
        trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
        zero_lr = {
            id(p)
            for g in optimizer.param_groups
            if max(g.get("initial_lr", 0.0), g.get("lr", 0.0)) == 0
            for p in g["params"]
        }
        frozen = [n for n in names if not params[n].requires_grad]
        outside = [n for n in names if params[n].requires_grad and id(params[n]) not in trained]
        still = [n for n in names if id(params[n]) in zero_lr]
        if frozen or outside or still:
            what = "; ".join(
                f"{why}: {', '.join(sorted(bad)[:6])}{' ...' if len(bad) > 6 else ''}"
                for why, bad in (
                    ("requires_grad=False (frozen, e.g. frozen_stages)", frozen),
                    ("not in the optimizer", outside),
                    ("learning rate 0", still),
                )
                if bad
            )
            raise UserError(
                f"GapbenchSparsityHook would prune {len(frozen) + len(outside) + len(still)} "
                f"weights that do not train ({what}). Pruned weights that do not train cannot "
                "regrow; train them (e.g. model.backbone.frozen_stages=-1) or leave them out with "
                "prunable=dict(exclude=[...])."
            )

    def _probes(self, runner, model: nn.Module) -> tuple[Any, Any]:
        """Pruning-at-init probes (SNIP, GraSP, SynFlow) on one fixed training batch, fetched
        lazily. Random states and batch-norm statistics are left as they were, so a method that
        does not probe trains exactly as before."""
        cache: dict[str, Any] = {}

        def data(m: nn.Module) -> dict[str, Any]:
            if "batch" not in cache:
                states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
                cache["batch"] = first_batch(runner.train_dataloader)
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.set_rng_state(states[2])
            return m.data_preprocessor(cache["batch"], True)

        self._probe_data = data

        @contextlib.contextmanager
        def statistics_kept(m: nn.Module):
            norms = [x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]
            saved = [{k: v.clone() for k, v in x.named_buffers(recurse=False)} for x in norms]
            try:
                yield
            finally:  # new tensors, not copy_: the probe's graph still holds the old ones
                for x, buffers in zip(norms, saved):
                    for k, v in buffers.items():
                        setattr(x, k, v)

        def probe_loss() -> torch.Tensor:
            with statistics_kept(model):
                batch = data(model)
                loss, _ = model.parse_losses(model(**batch, mode="loss"))
            return loss

        def probe_ones() -> torch.Tensor:
            with statistics_kept(model):
                batch = data(model)
                batch["inputs"] = torch.ones_like(batch["inputs"])
                out = model(**batch, mode="tensor")
            tensors = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
            return torch.cat([t.flatten() for t in tensors])

        return probe_loss, probe_ones

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

        @functools.wraps(step)  # keeps mmengine's `_with_counter` mark (the LR schedulers' check)
        def step_or_replace(**kwargs: Any) -> None:
            if hook.plan.replaces_step(hook.step):
                if enforcer is not None:
                    enforcer.skip_step()  # the method reads its dense gradients; no step follows
                if hasattr(wrapper, "_global_step"):  # what mmengine's step counter would count
                    wrapper._global_step += 1
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
        # Every iteration's forward and backward is charged, at the masks it ran with (before the
        # update); with gradient accumulation several iterations feed one optimizer step.
        samples = len((data_batch or {}).get("inputs", ())) * get_world_size()
        self.ledger.charge_step(samples, self.plan.dense_grad(self.step))
        if getattr(self, "_stepped", False):
            self.method.update(self.step)
            self.step += 1

    def after_train_epoch(self, runner) -> None:
        self.method.on_epoch_end(runner.epoch)
        self._check_ranks("masks")

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self.last_metrics, self.undefined = percent_metrics(metrics or {})
        self.metric_epoch = runner.epoch
        self.validated = True

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
            weights = count_weights(self.masks)
            weights.check(self.cls.name)  # the weights, not only the masks, are at the target
            if weights.total_nonzero > expected:  # pragma: no cover - check() catches it first
                raise RuntimeError(
                    f"{self.cls.name} left {weights.total_nonzero} nonzero weights, expected "
                    f"at most {expected}"
                )

    def after_run(self, runner) -> None:
        if get_rank() == 0 and hasattr(self, "masks"):
            write_record(self._record(runner), self.out)

    # ---- checkpoints ---------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if hasattr(self, "masks"):
            checkpoint[STATE_KEY] = {
                "method": self.method.state_dict(),
                "step": self.step,
                "flops": self.ledger.state_dict(),
            }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if STATE_KEY in checkpoint:
            self.resumed = checkpoint[STATE_KEY]

    # ---- helpers -------------------------------------------------------------------------------
    def _check_ranks(self, what: str) -> None:
        if get_world_size() > 1:
            sums = all_gather_object(self.masks.checksum())
            if len(set(sums)) != 1:
                raise RuntimeError(f"{what} differ across ranks: {sums}")

    def _flops(self, runner) -> dict[str, float]:
        """gapbench's convention (conv/linear multiply-adds, training = forward + 2 backward at the
        step's densities), per sample at the first training batch's padded input size."""
        dense = self.ledger.dense_inference_flops()
        return {
            "train": self.ledger.train_flops,
            "dense_train_same_steps": self.ledger.dense_train_flops,
            "dense_train_budget": 3 * dense * self.train_samples * runner.train_loop.max_epochs,
            "inference": self.ledger.inference_flops(),
            "dense_inference": dense,
        }

    def _status(self, runner) -> tuple[str, str | None, str]:
        """(status, reason when there is no metric, primary metric)."""
        metric = self.metric or next(iter(self.last_metrics), "metric")
        max_epochs = runner.train_loop.max_epochs
        if not self.validated:
            reason = "validation never ran (no val_dataloader/val_cfg/val_evaluator in the config)"
        elif not self.last_metrics:
            reason = (
                "validation returned no metric (mmdet's CocoMetric returns none when the model "
                "outputs no boxes at all, e.g. a short run still in warm-up)"
            )
        elif metric not in self.last_metrics:
            reason = f"validation returned no {metric!r} (it returned {sorted(self.last_metrics)})"
        elif not math.isfinite(self.last_metrics[metric]):
            reason = f"{metric} is not finite ({self.last_metrics[metric]})"
        elif self.metric_epoch != max_epochs:
            reason = f"the last validation ran after epoch {self.metric_epoch} of {max_epochs}"
        else:
            return "complete", None, metric
        return NO_METRIC, reason, metric

    def identity_params(self) -> dict[str, Any]:
        """The method's resolved parameters, and the partitions by module prefix where the
        method uses them (GaP): method settings, kept apart from the config's hash."""
        params = self.method.params.as_dict()
        if self.partition_prefixes and "partitions" in params:
            params["partition_prefixes"] = self.partition_prefixes
        return params

    def _record(self, runner) -> RunRecord:
        task = (
            self.task or Path(getattr(runner.cfg, "filename", None) or runner.experiment_name).stem
        )
        status, reason, metric = self._status(runner)
        identity = {
            "task": task, "profile": "mmengine", "method": self.cls.name, "params": self.identity_params(),
            "sparsity": self.sparsity if self.cls.sparse else 0.0, "distribution": self.distribution if self.cls.sparse else "dense",
            "seed": self.seed, "epochs": runner.train_loop.max_epochs, "pattern": str(self.pattern),
            "config": config_hash(runner.cfg, self.seed), "schema": SCHEMA_VERSION,
        }  # fmt: skip
        total = self.masks.total()
        weights = count_weights(self.masks)
        alive = weights.total_nonzero  # read from the weights: what the record claims is there
        all_weights = sum(self.selection.all_weights.values())
        extra: dict[str, Any] = {
            "front_end": "mmengine", "world_size": get_world_size(), "resumed": self.resumed is not None,
            "metric_units": "percent (mmengine's COCO mAP/AR in [0, 1] times 100)",
            "metric_split": "val", "metric_epoch": self.metric_epoch,
            "mask_alive": self.masks.alive(), "alive_zero_weights": sum(weights.alive_zero.values()),
            "mask_checksum": self.masks.checksum(),
        }  # fmt: skip
        if self.undefined:
            extra["undefined_metrics"] = self.undefined
        if reason:
            extra["no_metric_reason"] = reason
        metrics = self.last_metrics if status == "complete" else {}
        # The lead's strict records carry the reason in `status_reason`; task_extra keeps it too.
        reason_field = (
            {"status_reason": reason or ""}
            if "status_reason" in RunRecord.__dataclass_fields__
            else {}
        )
        return RunRecord(
            schema=SCHEMA_VERSION, run_id=run_id(identity), status=status, identity=identity,
            task=task, profile="mmengine", dataset=dataset_name(runner.cfg),
            method=self.cls.name, params=self.method.params.as_dict(), sparsity=identity["sparsity"],
            distribution=identity["distribution"], seed=self.seed, epochs=identity["epochs"], budget_mode="epochs",
            multiplier=1.0, metric=metric, metrics=metrics, val_metrics=metrics,
            measured_sparsity=(1 - alive / total) if self.cls.sparse else 0.0, prunable_params=total,
            alive_prunable_params=alive, conv_linear_density=(all_weights - (total - alive)) / max(1, all_weights),
            params_total=sum(p.numel() for p in self.masks.params.values()), params_alive=alive,
            policy=self.selection.describe(",".join(self.dense_layers) or "none", self.exclude),
            per_layer={n: {"numel": self.masks.numel(n), "alive": weights.nonzero[n], "mask_alive": self.masks.count(n)}
                       for n in self.masks.names},
            budget={"trainer_epochs": self.plan.epochs, "steps_run": self.step, "front_end": "mmengine"},
            plan=self.plan.points, flops=self._flops(runner),
            method_log=self.method.log, history=[], wall_time_s=round(time.time() - self.started, 2),
            device=str(next(iter(self.masks.params.values())).device), versions=_versions(), git_commit=git_commit(),
            task_extra=extra, **reason_field,
        )  # fmt: skip


# ---- record helpers ---------------------------------------------------------------------------
def percent_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Numeric metrics, COCO-style mAP/AR (in [0, 1] in mmdet) in percent as gapbench's detection
    task reports them; COCO's -1 ("no ground truth of this size") is left out and named."""
    out: dict[str, float] = {}
    undefined: list[str] = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # e.g. coco/bbox_mAP_copypaste, a string
        leaf = key.rsplit("/", 1)[-1]
        if "mAP" in leaf or leaf.startswith("AR"):
            if value < 0:
                undefined.append(key)
                continue
            value = 100.0 * value
        out[key] = float(value)
    return out, undefined


def _clean(value: Any, hooks: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: _clean(v, hooks=k == "default_hooks")
            for k, v in value.items()
            if k not in HOW_STARTED and not (hooks and k in HOW_HOOKED)
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))  # objects: their repr, no address


# The hook's settings that are identity fields of their own (method, its parameters, sparsity,
# distribution, pattern, seed): left out of the config hash, so that runs of different methods
# on one configuration share it and the leaderboard can pair them.
HOOK_IDENTITY = (
    "seed", "method", "method_args", "sparsity", "distribution", "pattern", "partitions"
)  # fmt: skip


def config_hash(cfg: Any, seed: int | None = None) -> str:
    """Hash of what the config trains, without how the run was started or logged (HOW_STARTED).
    The seed is the identity's own field: this hook's `seed` is left out, and mmengine's
    `randomness.seed` too when it is the same, so seeds of one configuration pool in one
    leaderboard row (a differing randomness seed stays in: another run, another row). The
    hook's method settings are identity fields too (HOOK_IDENTITY)."""
    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    randomness = data.get("randomness")
    if isinstance(randomness, dict) and seed is not None and randomness.get("seed") == seed:
        data = {**data, "randomness": {k: v for k, v in randomness.items() if k != "seed"}}
    hooks = data.get("custom_hooks")
    if isinstance(hooks, list):
        data = {
            **data,
            "custom_hooks": [
                {k: v for k, v in h.items() if k not in HOOK_IDENTITY}
                if isinstance(h, dict)
                and h.get("type") in ("GapbenchSparsityHook", GapbenchSparsityHook)
                else h
                for h in hooks
            ],
        }
    blob = json.dumps(_clean(data), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def epoch_samples(loader: Any, world_size: int) -> int:
    """Samples one training epoch feeds, all ranks together: mmengine's DefaultSampler states its
    `total_size` (padded to a multiple of the ranks unless round_up=False), another sampler its
    length per rank; else the dataset's length."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(getattr(sampler, "total_size", None), int):
        return sampler.total_size
    try:
        return len(sampler) * world_size
    except TypeError:  # no sampler, or one without a length
        return len(loader.dataset)


def first_batch(loader: Any) -> Any:
    """The dataset's first batch-size samples, collated as `loader` collates them: the probes'
    fixed batch. Read from the dataset, never by iterating the loader: an abandoned iteration
    leaves state behind (mmdet's AspectRatioBatchSampler keeps the batch it yielded in its buckets
    and yields it again in the next epoch, one extra step that also differs on resume) and would
    start worker processes."""
    dataset = loader.dataset
    size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 1
    return loader.collate_fn([dataset[i] for i in range(min(size, len(dataset)))])


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _leaf_dataset(cfg: Any) -> dict[str, Any]:
    while isinstance(cfg, dict) and isinstance(cfg.get("dataset"), dict):
        cfg = cfg["dataset"]  # RepeatDataset, ClassBalancedDataset, dataloader -> dataset
    if isinstance(cfg, dict) and isinstance(cfg.get("datasets"), list) and cfg["datasets"]:
        return _leaf_dataset(cfg["datasets"][0])
    return cfg if isinstance(cfg, dict) else {}


def dataset_name(cfg: Any) -> str:
    """The data set a run trained and validated on, from the config's data root and ann files:
    gapbench's generated shapes name themselves (their COMPLETE file), anything else by folder."""
    train = _leaf_dataset(cfg.get("train_dataloader") or {})
    val = _leaf_dataset(cfg.get("val_dataloader") or {})
    root = str(train.get("data_root") or cfg.get("data_root") or "")
    name = Path(root.rstrip("/")).name or str(train.get("type", "mmengine data"))
    marker = Path(root) / "COMPLETE"
    if root and marker.is_file():
        try:
            info = json.loads(marker.read_text())
            name = f"generated COCO-format shapes v{info['version']} ({info['size']} px)"
        except (ValueError, KeyError, OSError):
            pass
    files = [
        f"{what} {d['ann_file']}"
        for what, d in (("train", train), ("val", val))
        if d.get("ann_file")
    ]
    if train.get("indices") is not None:
        files.append(f"first {train['indices']} train images")
    return f"{name} ({', '.join(files)})" if files else name


def _versions() -> dict[str, str]:
    ver = versions()
    for package in ("mmengine", "mmcv", "mmdet"):
        try:
            ver[package] = __import__(package).__version__
        except ImportError:
            pass
    return ver
