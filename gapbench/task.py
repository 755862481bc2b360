"""The task contract: a task brings a model, data, a loss and a metric; it never touches masks.

A task module registers a subclass of `Task` with `@register_task("name")`. The Trainer calls
`Task.setup(...)` once per run and drives everything through the returned `TaskSetup`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from gapbench.errors import UserError


@dataclass
class TaskSetup:
    """Everything the Trainer needs for one run of one task profile.

    Loaders are re-iterable (one pass = one epoch). They must not own a torch.Generator: the Trainer
    seeds the global torch/numpy/random generators at the start of every epoch, which makes
    shuffling and augmentation deterministic and resumable. Use num_workers=0 on the tiny profile.
    """

    model: nn.Module
    train_loader: Iterable[Any]
    val_loader: Iterable[Any]
    test_loader: Iterable[Any]
    # loss(model, batch) -> scalar tensor; the batch is already on the device.
    loss: Callable[[nn.Module, Any], torch.Tensor]
    # evaluate(model, loader) -> {"metric": value, ...}; the model is put in eval mode by the caller.
    evaluate: Callable[[nn.Module, Iterable[Any]], dict[str, float]]
    # make_optimizer(param_groups) -> optimizer; param_groups as accepted by torch.optim.
    make_optimizer: Callable[[Any], torch.optim.Optimizer]
    epochs: int  # default budget in epochs for this profile
    metric: str  # primary metric key in evaluate()'s dict; higher is better
    dataset: str  # human-readable data set name, recorded (e.g. "sklearn digits")
    prunable: list[str]  # parameter names (model.named_parameters()) that may be masked
    # Sparsity policy in words/flags, recorded with each result, e.g. {"first_conv": "dense"}.
    policy: dict[str, Any] = field(default_factory=dict)
    # Task-preferred GaP partitions: {kappa: [[param names], ...]}; every prunable name exactly once.
    partitions: dict[int, list[list[str]]] = field(default_factory=dict)
    # Default GaP schedule for this profile: {"partitions", "rounds", "epochs_per_step", "finetune"}
    # with rounds * partitions * epochs_per_step + finetune == epochs.
    gap_defaults: dict[str, Any] = field(default_factory=dict)
    # Other methods' profile defaults, e.g. {"rigl": {"delta_t": 20}} for a small data set.
    method_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    lr_schedule: str = "cosine"  # "cosine" (with linear warm-up) | "inverse_sqrt" | "constant"
    warmup_epochs: float = 0.0  # or use warmup_steps; the larger of the two wins
    warmup_steps: int = 0
    to_device: Callable[[Any, torch.device], Any] = lambda batch, device: _move(batch, device)
    # One small batch (already on the device by the Trainer via to_device) whose forward is used to
    # measure dense FLOPs per layer and to recalibrate batch-norm statistics.
    flops_batch: Any = None
    # forward(model, batch) used for FLOPs measurement and BN recalibration (no loss needed).
    forward: Callable[[nn.Module, Any], Any] | None = None
    # Number of samples in flops_batch, to report FLOPs per sample.
    flops_batch_size: int = 1
    grad_clip: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded as-is (e.g. vocab size)


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_move(v, device) for v in batch)
    return batch


class Task(ABC):
    """Base class of every task. Subclasses set `name`, `profiles`, `metrics` and implement setup."""

    name: ClassVar[str] = ""
    profiles: ClassVar[tuple[str, ...]] = ("tiny", "paper")
    description: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # all metric keys evaluate() returns, primary first

    @abstractmethod
    def setup(
        self,
        profile: str,
        data_root: Path | None,
        seed: int,
        device: torch.device,
        batch_size: int | None = None,
        cache_dir: Path | None = None,
    ) -> TaskSetup:
        """Build model and data. data_root None means the embedded default (tiny) data set,
        generated deterministically into cache_dir on first use. Raise UserError on bad data."""


TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls

    return deco


def get_task(name: str) -> Task:
    import tasks  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[name]()
