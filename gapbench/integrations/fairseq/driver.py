"""The fairseq-free half of the fairseq front-end: drives one gapbench method from fairseq's hooks.

task.py calls, in fairseq's order: `begin_epoch(e)` (1-based, before an epoch's first batch),
`ensure_setup(...)` in the first `train_step` (the optimizer exists only then), `optimizer_step(...)`
for every update, `valid_*` around validation, `checkpoint_dict()` / `load_checkpoint_dict()` with
checkpoints. Epoch ends are detected in the epoch's last update (the iterator is exhausted), so the
end-of-epoch validation and checkpoint see the pruned model, as in gapbench's own loop.

A run whose fairseq stops before the budget (--max-epoch below --gapbench-epochs, or --max-update)
is left mid-schedule without settling: rerunning with a larger --max-epoch continues it exactly.
The record is written when the budget's last epoch ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.integrations.fairseq import POINTER
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

logger = logging.getLogger("gapbench.fairseq")

STATE_KEY = "gapbench"
# Transformer weights pruned by default (the paper): attention projections and the FFN.
DEFAULT_PRUNABLE = "q_proj,k_proj,v_proj,out_proj,fc1,fc2"
_SHORT = re.compile(r"^(enc|dec)(\d+)(?:-(\d+))?$")


def parse_partitions(spec: str | None) -> list[list[str]] | None:
    """'enc0-3|enc4-5,dec0-1|dec2-5' -> module-prefix groups. `|` separates partitions, `,`
    prefixes; encN-M / decN-M stand for encoder.layers.N..M / decoder.layers.N..M."""
    if not spec:
        return None
    groups = []
    for part in spec.split("|"):
        prefixes = []
        for token in (t.strip() for t in part.split(",")):
            if not token:
                continue
            m = _SHORT.match(token)
            if m:
                side = "encoder" if m.group(1) == "enc" else "decoder"
                lo = int(m.group(2))
                hi = int(m.group(3)) if m.group(3) is not None else lo
                if hi < lo:
                    raise UserError(f"--gapbench-partitions: bad range {token!r}")
                prefixes += [f"{side}.layers.{i}" for i in range(lo, hi + 1)]
            else:
                prefixes.append(token)
        if not prefixes:
            raise UserError(f"--gapbench-partitions {spec!r}: empty partition")
        groups.append(prefixes)
    return groups


def _split(spec: str | None) -> list[str]:
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


@dataclass
class Options:
    """The task's --gapbench-* options, plus the fairseq settings the driver needs."""

    method: str = "gap"
    sparsity: float = 0.9
    distribution: str = "uniform"
    method_args: str = "{}"  # JSON object
    partitions: str | None = None
    prunable: str = DEFAULT_PRUNABLE  # Linear module-name suffixes pruned
    exclude: str = ""  # module prefixes kept dense on top
    dense_layers: str = "none"
    pattern: str = "unstructured"
    epochs: int = 0  # the comparison budget; 0 = --max-epoch
    out: str = "results/runs"
    task_name: str | None = None
    plugins: str = ""
    # fairseq's own settings
    max_epoch: int = 0
    max_update: int = 0
    seed: int = 1
    save_dir: str = "checkpoints"
    data: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # hashed into the run's identity


class Driver:
    def __init__(self, opts: Options):
        self.opts = opts
        for plugin in _split(opts.plugins):
            load_plugin(plugin)
        self.cls = get_method_class(opts.method)
        try:
            args = json.loads(opts.method_args or "{}")
        except json.JSONDecodeError as exc:
            raise UserError(f"--gapbench-method-args is not JSON: {exc}") from exc
        if not isinstance(args, dict):
            raise UserError(
                "--gapbench-method-args must be a JSON object, e.g. '{\"partitions\": 3}'"
            )
        self.method = self.cls(**args)
        self.pattern = Pattern.parse(opts.pattern)
        if self.cls.sparse:
            self.cls.check_distribution(opts.distribution, self.pattern)
            self.method.check_pattern(self.pattern)
        if not 0.0 <= opts.sparsity < 1.0:
            raise UserError(f"--gapbench-sparsity {opts.sparsity} is outside [0, 1)")
        self.dense_layers = parse_dense_layers(opts.dense_layers)
        self.partition_prefixes = parse_partitions(opts.partitions)
        self.budget_epochs = opts.epochs or opts.max_epoch
        if self.budget_epochs <= 0:
            raise UserError("set --max-epoch (the gapbench budget is counted in epochs)")
        if opts.max_epoch <= 0 or opts.max_epoch > self.budget_epochs:
            raise UserError(
                f"--max-epoch {opts.max_epoch} must be between 1 and the budget of "
                f"{self.budget_epochs} epochs (--gapbench-epochs)"
            )
        self.ready = False
        self.resumed: dict[str, Any] | None = None
        self.step = 0  # optimizer updates run by the method
        self.started = -1  # last epoch (0-based) whose on_epoch_start ran
        self.ended = -1  # last epoch whose on_epoch_end ran
        self.finished = False
        self.last_update = -1
        self.pending_epoch: int | None = None
        self.valid_sums: dict[str, float] = {}
        self.val_metrics: dict[str, float] = {}
        self.record_path: Path | None = None
        self.started_at = time.time()
        self.enforcer: MaskEnforcer | None = None

    # ---- set-up ---------------------------------------------------------------------------------
    def ensure_setup(
        self,
        model: nn.Module,
        wrapper: Any,
        batches_per_epoch: int,
        update_freq: int,
        update_num: int,
        find_checkpoint_state: Callable[[], dict[str, Any] | None],
        world: tuple[int, int] = (0, 1),
    ) -> None:
        """Build masks and the method at the first train step. `wrapper` is fairseq's optimizer
        wrapper; the torch optimizer inside it is what the MaskEnforcer hooks."""
        if self.ready:
            return
        self.rank, self.world_size = world
        optimizer = wrapper.optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UserError(f"unsupported fairseq optimizer {type(wrapper).__name__}")
        self.wrapper, self.optimizer, self.model = wrapper, optimizer, model
        suffixes = tuple(_split(self.opts.prunable))
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        # Linear layers outside the pruned kinds (output projection = shared embedding, ...) stay
        # dense by the task's policy; recorded as task-excluded tensors.
        exclude = [n for n in linears if n.rsplit(".", 1)[-1] not in suffixes]
        exclude += _split(self.opts.exclude)
        self.exclude = exclude
        self.selection = select_prunable(model, exclude, self.dense_layers, types=(nn.Linear,))
        self.masks = MaskSet(model, self.selection.prunable)
        for name in self.selection.prunable:
            self.pattern.check_shape(name, self.masks.params[name].shape)
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        stray = [n for n, p in self.masks.params.items() if id(p) not in owned]
        if stray:
            raise UserError(f"prunable tensors not trained by fairseq's optimizer: {stray[:3]}")
        self.spe = max(1, math.ceil(batches_per_epoch / max(1, update_freq)))
        self.plan = self.method.plan(Budget(self.budget_epochs, self.spe))
        if self.plan.epochs != self.budget_epochs:
            raise UserError(
                f"{self.cls.name} trains {self.plan.epochs} epochs on a budget of "
                f"{self.budget_epochs}; set --max-epoch {self.plan.epochs} (or use a method that "
                "fills the budget)"
            )
        if self.plan.lr_clock is not None:
            logger.warning(
                "gapbench: %s asks for its own LR clock (e.g. gap lr_restart); fairseq's "
                "--lr-scheduler is used instead",
                self.cls.name,
            )
        if self.opts.max_epoch < self.budget_epochs:
            logger.warning(
                "gapbench: fairseq stops at epoch %d of the %d-epoch budget; no record is written "
                "until a rerun with --max-epoch %d completes it",
                self.opts.max_epoch,
                self.budget_epochs,
                self.budget_epochs,
            )
        if update_num > 0 and self.resumed is None:
            self.resumed = find_checkpoint_state()
            if self.resumed is None:
                raise UserError(
                    "fairseq resumed a checkpoint without gapbench state (not trained with "
                    "--task gapbench_translation); start a fresh --save-dir"
                )
        saved = None
        if self.resumed is not None:  # fairseq restored weights and optimizer already
            if self.resumed.get("budget_epochs") != self.budget_epochs:
                raise UserError(
                    f"the checkpoint was trained on a budget of {self.resumed.get('budget_epochs')}"
                    f" epochs, not {self.budget_epochs}; pass --gapbench-epochs "
                    f"{self.resumed.get('budget_epochs')}"
                )
            saved = (
                {k: v.detach().clone() for k, v in model.state_dict().items()},
                _clone(optimizer.state_dict()),
            )
        groups = {}
        if self.partition_prefixes:
            groups = {
                len(self.partition_prefixes): partitions_by_prefix(
                    self.selection.prunable, self.partition_prefixes
                )
            }
        ctx = Context(
            model, optimizer, self.masks, Budget(self.plan.epochs, self.spe), self.opts.sparsity,
            self.opts.distribution, self.opts.seed, self.selection.prunable, groups,
            self.selection.dense_layers + self.selection.excluded, pattern=self.pattern,
        )  # fmt: skip
        self.method.setup(ctx)
        if saved is not None:
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            self._load(self.resumed)
        if self.cls.sparse:
            self.enforcer = MaskEnforcer(self.masks, optimizer, before_mask=self._read)
        self._wrap_clip(wrapper)
        self.ready = True
        self._check_ranks("initial masks")
        if self.pending_epoch is not None:
            self.begin_epoch(self.pending_epoch + 1)

    def _load(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.step, self.started, self.ended = state["step"], state["started"], state["ended"]
        self.finished, self.last_update = state["finished"], state["last_update"]
        self.val_metrics = dict(state.get("val_metrics", {}))

    def _read(self) -> None:
        if self.plan.dense_grad(self.step):
            self.method.read_gradients(self.step)

    def _wrap_clip(self, wrapper: Any) -> None:
        """Mask gradients before fairseq measures / clips them. Under --amp the inner FP32
        optimizer's clip runs after the loss scale is removed, so that is the one wrapped."""
        target = getattr(wrapper, "fp32_optimizer", wrapper)
        clip = target.clip_grad_norm
        enforcer = self.enforcer

        def clip_after_masking(*args: Any, **kwargs: Any) -> Any:
            if enforcer is not None:
                enforcer.mask_grads()
            return clip(*args, **kwargs)

        target.clip_grad_norm = clip_after_masking

    # ---- life cycle -----------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """fairseq's 1-based epoch is about to start (again, when resuming mid-epoch)."""
        e = epoch - 1
        if not self.ready:
            self.pending_epoch = e
            return
        self.pending_epoch = None
        if self.started >= 0 and self.ended < self.started < e:  # an end not seen (fallback)
            self._end_epoch(self.started)
        if self.started < e and not self.finished:
            self.method.on_epoch_start(e)
            self.started = e

    def optimizer_step(self, wrapper: Any, update_num: int, end_of_epoch: bool) -> None:
        """In place of fairseq's `optimizer.step()`."""
        if wrapper.optimizer is not self.optimizer:
            raise RuntimeError("fairseq rebuilt its optimizer; gapbench's masks lost track of it")
        if self.plan.replaces_step(self.step):
            if self.enforcer is not None:
                self.enforcer.mask_grads()  # the method reads its dense gradients
            scaler = getattr(wrapper, "scaler", None)
            if scaler is not None:  # --amp: close the scaler's iteration without stepping
                scaler.update()
        else:
            wrapper.step()
        if update_num != self.last_update:  # an --amp overflow retry repeats an update number
            self.method.update(self.step)
            self.step += 1
            self.last_update = update_num
        if end_of_epoch and self.ended < self.started:
            self._end_epoch(self.started)
        if 0 < self.opts.max_update <= update_num + 1 and not self.finished:
            logger.warning(
                "gapbench: --max-update %d stops the run inside the budget; no record written",
                self.opts.max_update,
            )

    def _end_epoch(self, e: int) -> None:
        self.method.on_epoch_end(e)
        self.ended = e
        self._check_ranks("masks")
        if e == self.plan.epochs - 1:
            self._finish()

    def _finish(self) -> None:
        self.method.finish()
        if self.cls.sparse:
            numels = [self.masks.numel(n) for n in self.masks.names]
            expected = total_keep(numels, self.opts.sparsity)
            if self.masks.alive() != expected or self.masks.counts() != self.method.target_counts:
                raise RuntimeError(
                    f"{self.cls.name} left {self.masks.alive()} weights alive, expected {expected}"
                )
        self.finished = True
        self.write_record()

    # ---- validation -----------------------------------------------------------------------------
    def valid_begin(self) -> None:
        self.valid_sums = {}

    def valid_log(self, logging_output: dict[str, Any]) -> None:
        for key in ("loss", "nll_loss", "ntokens", "sample_size"):
            if key in logging_output:
                self.valid_sums[key] = self.valid_sums.get(key, 0.0) + float(logging_output[key])

    def _valid_metrics(self) -> None:
        s = self.valid_sums
        if s.get("sample_size"):
            metrics = {"valid_loss": s["loss"] / s["sample_size"] / math.log(2)}
            if s.get("ntokens") and "nll_loss" in s:
                nll = s["nll_loss"] / s["ntokens"] / math.log(2)
                metrics.update(valid_nll_loss=nll, valid_ppl=2**nll)
            self.val_metrics = {k: round(v, 4) for k, v in metrics.items()}

    # ---- checkpoints ----------------------------------------------------------------------------
    def checkpoint_dict(self) -> dict[str, Any]:
        """Saved by fairseq after the epoch's validation: refresh the record's validation numbers."""
        self._valid_metrics()
        if not self.ready:
            return dict(self.resumed) if self.resumed else {}
        if self.finished:
            self.write_record()
        return {
            "method": self.method.state_dict(), "step": self.step, "started": self.started,
            "ended": self.ended, "finished": self.finished, "last_update": self.last_update,
            "budget_epochs": self.budget_epochs, "val_metrics": self.val_metrics,
        }  # fmt: skip

    def load_checkpoint_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.resumed = state

    # ---- helpers --------------------------------------------------------------------------------
    def _check_ranks(self, what: str) -> None:
        if self.world_size > 1 and torch.distributed.is_initialized():
            sums: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(sums, self.masks.checksum())
            if len(set(sums)) != 1:
                raise RuntimeError(f"{what} differ across ranks: {sums}")

    def task_name(self) -> str:
        if self.opts.task_name:
            return self.opts.task_name
        data = (self.opts.data or "data").split(":")[0].rstrip("/")
        return f"fairseq-{Path(data).name}"

    def record(self) -> RunRecord:
        o, masks = self.opts, self.masks
        task = self.task_name()
        config = hashlib.sha256(json.dumps(o.config, sort_keys=True, default=str).encode())
        identity = {
            "task": task, "profile": "fairseq", "method": self.cls.name,
            "params": self.method.params.as_dict(),
            "sparsity": o.sparsity if self.cls.sparse else 0.0,
            "distribution": o.distribution if self.cls.sparse else "dense", "seed": o.seed,
            "epochs": self.budget_epochs, "pattern": str(self.pattern),
            "config": config.hexdigest()[:12], "schema": SCHEMA_VERSION,
        }  # fmt: skip
        # Read from the weights, not the masks: a nonzero pruned weight fails the run.
        weights = count_weights(masks)
        if self.cls.sparse:
            weights.check(self.cls.name)
        alive, total = weights.total_nonzero, masks.total()
        all_weights = sum(self.selection.all_weights.values())
        nan = float("nan")
        ver = versions()
        try:
            import fairseq

            ver["fairseq"] = fairseq.__version__
        except ImportError:  # pragma: no cover
            pass
        return RunRecord(
            schema=SCHEMA_VERSION, run_id=run_id(identity), status="no_metric", identity=identity,
            status_reason="not scored yet: run python -m gapbench.integrations.fairseq.score",
            task=task, profile="fairseq", dataset=Path((o.data or "").split(":")[0].rstrip("/")).name,
            method=self.cls.name, params=self.method.params.as_dict(), sparsity=identity["sparsity"],
            distribution=identity["distribution"], seed=o.seed, epochs=self.budget_epochs,
            budget_mode="epochs", multiplier=1.0, metric="bleu", metrics={},
            val_metrics=self.val_metrics,
            measured_sparsity=(1 - alive / total) if self.cls.sparse else 0.0, prunable_params=total,
            alive_prunable_params=alive,
            conv_linear_density=(all_weights - (total - alive)) / max(1, all_weights),
            params_total=sum(p.numel() for p in self.model.parameters()),
            params_alive=sum(p.numel() for p in self.model.parameters()) - (total - alive),
            policy=self.selection.describe(",".join(self.dense_layers) or "none", self.exclude),
            per_layer={n: {"numel": masks.numel(n), "alive": weights.nonzero[n], "mask_alive": masks.count(n)}
                       for n in masks.names},
            budget={"trainer_epochs": self.plan.epochs, "steps_per_epoch": self.spe,
                    "steps_run": self.step, "front_end": "fairseq"},
            plan=self.plan.points,
            flops={"train": nan, "dense_train_budget": nan, "inference": nan, "dense_inference": nan},
            method_log=self.method.log, history=[], wall_time_s=round(time.time() - self.started_at, 2),
            device=str(next(iter(masks.params.values())).device), versions=ver, git_commit=git_commit(),
            task_extra={"front_end": "fairseq", "world_size": self.world_size,
                        "save_dir": str(Path(o.save_dir).resolve()),
                        "mask_checksum": masks.checksum()},
        )  # fmt: skip

    def write_record(self) -> None:
        if self.rank != 0:
            return
        record = self.record()
        if self.record_path is not None and self.record_path.is_file():
            old = json.loads(self.record_path.read_text())  # keep a BLEU scored meanwhile
            record.metrics = old.get("metrics", record.metrics)
            record.task_extra = {**old.get("task_extra", {}), **record.task_extra}
        self.record_path = write_record(record, Path(self.opts.out)).resolve()
        pointer = Path(self.opts.save_dir) / POINTER
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"record": str(self.record_path), "run_id": record.run_id}))
        logger.info("gapbench: record written to %s", self.record_path)


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj
