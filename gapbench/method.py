"""The Method base class (hooks the Trainer calls), the registry, and plug-in discovery.

A method decides which weights are alive and when. It never touches data or the loss.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from gapbench.budget import Budget
from gapbench.distribution import keep_counts
from gapbench.errors import UserError
from gapbench.masks import MaskSet


@dataclass
class MethodContext:
    """What a method may use besides model/optimizer/masks: the sparsity target and helpers."""

    sparsity: float
    distribution: str
    seed: int
    # Prunable names in forward order and the task's preferred partitions {kappa: [[names]]}.
    forward_order: list[str] = field(default_factory=list)
    task_partitions: dict[int, list[list[str]]] = field(default_factory=dict)
    # recalibrate_bn(model): re-estimate batch-norm statistics on a few training batches.
    recalibrate_bn: Callable[[nn.Module], None] | None = None


class Method:
    """Base class. Subclasses set `name` (via @register_method), `description` and `defaults`.

    Parameters arrive as keyword arguments typed by `defaults`; everything in `self.params` is
    recorded with the result.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    sparse: ClassVar[bool] = True  # False for the dense reference (no sparsity target applies)
    # True when per-layer counts shrink gradually towards the target (GMP): the conformance check
    # then accepts intermediate counts that only ever decrease.
    gradual: ClassVar[bool] = False

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise UserError(
                f"method {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.budget: Budget | None = None
        self.masks: MaskSet | None = None
        self.ctx: MethodContext | None = None
        self.target_counts: dict[str, int] = {}
        self.log: dict[str, Any] = {}  # schedule facts and per-update statistics for the record

    # ---- budget ------------------------------------------------------------------------------
    def total_epochs(self, budget_epochs: int) -> int:
        """Epochs this method trains when the comparison's budget is `budget_epochs`."""
        return budget_epochs

    def budget_epochs(self) -> int | None:
        """The comparison budget this method implies on its own (GaP: R*kappa*T+F), if any."""
        return None

    # ---- hooks (DESIGN.md) -------------------------------------------------------------------
    def setup(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        budget: Budget,
        masks: MaskSet,
        ctx: MethodContext,
    ) -> None:
        self.model, self.optimizer, self.budget, self.masks, self.ctx = (
            model,
            optimizer,
            budget,
            masks,
            ctx,
        )
        self.target_counts = self.counts_at(ctx.sparsity)

    def on_epoch_start(self, epoch: int) -> None:
        """Phase changes that happen before an epoch's first step."""

    def before_step(self, step: int) -> None:
        """After backward, before optimizer.step: mask gradients (and read them, e.g. RigL)."""
        self.masks.apply_to_grads()

    def after_step(self, step: int) -> None:
        """After optimizer.step: re-apply masks; mask updates when the schedule says so."""
        self.masks.apply()

    def on_epoch_end(self, epoch: int) -> None:
        """Phase changes after an epoch's last step (GaP grow/prune)."""

    def on_train_end(self) -> None:
        """Last chance to settle masks before evaluation (must leave the target sparsity)."""

    def lr_progress(self, step: int, total_steps: int) -> tuple[int, int]:
        """(position, length) of the LR schedule at `step`; one schedule over the run by default."""
        return step, total_steps

    def dense_grad_step(self, step: int) -> bool:
        """True if this step computes dense weight gradients (RigL updates): counted in FLOPs."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically (tensors and plain containers only)."""
        return {"masks": self.masks.state_dict(), "log": self.log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state["masks"])
        self.log = state["log"]

    # ---- helpers -----------------------------------------------------------------------------
    def counts_at(self, sparsity: float) -> dict[str, int]:
        """Exact per-layer keep counts at `sparsity` under the run's distribution."""
        names = self.masks.names
        shapes = [tuple(self.masks.params[n].shape) for n in names]
        weights = [self.masks.params[n] for n in names]
        counts = keep_counts(self.ctx.distribution, shapes, sparsity, weights)
        return dict(zip(names, counts))

    def prune_to(self, name: str, k: int, score: torch.Tensor | None = None) -> int:
        """Keep the top-k entries of `name` by |w| (or by `score`), exactly k."""
        from gapbench.masks import topk_mask

        w = self.masks.params[name]
        s = w.detach().abs() if score is None else score
        return self.masks.set_mask(name, topk_mask(s, k), self.optimizer)


METHODS: dict[str, type[Method]] = {}
_discovered = False


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available under `name` (CLI, leaderboard, conformance)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def discover_methods() -> None:
    """Import gapbench.gap, every module in baselines/ and every `gapbench.methods` entry point."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    importlib.import_module("gapbench.gap")
    import baselines

    for info in pkgutil.iter_modules(baselines.__path__):
        importlib.import_module(f"baselines.{info.name}")
    for ep in entry_points(group="gapbench.methods"):
        ep.load()


def load_plugin(spec: str) -> None:
    """Import a user's method from a .py file path or an importable module name."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise UserError(f"plugin file {spec} does not exist; pass a .py file or a module name")
        mod_name = f"gapbench_plugin_{path.stem}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as exc:  # a user's file: report, don't crash with a traceback
            raise UserError(f"plugin {spec} failed to import: {exc}") from exc
    else:
        try:
            importlib.import_module(spec)
        except ImportError as exc:
            raise UserError(f"plugin module {spec!r} cannot be imported: {exc}") from exc


def get_method_class(name: str) -> type[Method]:
    discover_methods()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_value(raw: str, default: Any) -> Any:
    """Type a command-line string like the method's declared default."""
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true/false, got {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if default is None:
        for cast in (int, float):
            try:
                return cast(raw)
            except ValueError:
                pass
        return None if raw.lower() == "none" else raw
    return raw
