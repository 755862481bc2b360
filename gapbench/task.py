"""The task contract: a Profile table (data) + a Workload (model, loaders, loss, metric).

A task never touches masks. Its sparsity policy is data in the profile (module prefixes it keeps
dense, the default end layers kept dense, GaP partitions by module prefix); the core turns it into
prunable tensors (gapbench/sparse/selection.py) and partitions (gapbench/sparse/partition.py).
Adding a task means writing a model, a data loader and a profile table.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gapbench.errors import UserError


@dataclass(frozen=True)
class OptimizerRecipe:
    """The optimiser of a profile. With `reference_batch` set, the LR scales linearly with the
    global batch (lr * batch / reference_batch, e.g. ImageNet's 0.1 per 256)."""

    name: Literal["sgd", "adam", "adamw"]
    lr: float
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    reference_batch: int | None = None

    def peak_lr(self, global_batch: int) -> float:
        if self.reference_batch:
            return self.lr * global_batch / self.reference_batch
        return self.lr

    def build(self, params: Iterable[Any], global_batch: int) -> torch.optim.Optimizer:
        lr = self.peak_lr(global_batch)
        if self.name == "sgd":
            return torch.optim.SGD(
                params,
                lr=lr,
                momentum=self.momentum,
                nesterov=self.nesterov,
                weight_decay=self.weight_decay,
            )
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class LrSchedule:
    """Warm-up then cosine decay, inverse square root (Transformer) or constant."""

    kind: Literal["cosine", "inverse_sqrt", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # the larger of the two warm-ups wins

    def warmup(self, steps_per_epoch: int) -> int:
        return max(self.warmup_steps, int(round(self.warmup_epochs * steps_per_epoch)))


@dataclass(frozen=True)
class Profile:
    """Everything a profile decides, as data.

    `batch_size` is the global batch per optimizer step (samples, or tokens for translation). When
    `device_batch` is set, each device takes that many and gradients accumulate over
    batch_size / (device_batch x ranks) micro-batches, so the recipe holds on any device count.
    `method_defaults` maps a method name (or "name[key=value]", applied when that parameter has
    that value, e.g. "gap[mode=parallel]") to parameter defaults for this profile.
    `dense_layers` ("first", "first,last", "none") may depend on the distribution: give a dict.
    """

    name: str
    epochs: int
    batch_size: int
    optimizer: OptimizerRecipe
    lr_schedule: LrSchedule
    dataset: str
    device_batch: int | None = None
    grad_clip: float | None = None
    dense_layers: str | dict[str, str] = "first"
    exclude: tuple[str, ...] = ()
    partitions: dict[int, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    method_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    needs_data_root: bool = False
    batch_unit: str = "samples"
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (widths, points, ...)

    def dense_layers_for(self, distribution: str) -> str:
        if isinstance(self.dense_layers, dict):
            return self.dense_layers.get(distribution, self.dense_layers.get("default", "first"))
        return self.dense_layers

    def defaults_for(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """This profile's defaults for `method`, given the parameters chosen so far."""
        out = dict(self.method_defaults.get(method, {}))
        for key, values in self.method_defaults.items():
            if key.startswith(f"{method}[") and key.endswith("]"):
                cond_key, _, cond_value = key[len(method) + 1 : -1].partition("=")
                current = {**out, **params}.get(cond_key)
                if str(current) == cond_value:
                    out.update(values)
        return out


@dataclass(frozen=True)
class BuildRequest:
    """What the engine asks of a task: data location, seed, and this rank's share of the batch."""

    data_root: Path | None
    cache_dir: Path
    seed: int
    device: torch.device
    batch_size: int  # per device and micro-batch
    rank: int = 0
    world: int = 1
    workers: int = 0


@dataclass
class Workload:
    """A built task: model, loaders, loss, evaluation and one example batch for FLOPs."""

    model: nn.Module
    train_loader: Iterable[Any]  # yields this rank's batches of one epoch
    val_loader: Iterable[Any]
    test_loader: Iterable[Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]  # loss(model, batch on device)
    evaluate: Callable[[nn.Module, Iterable[Any]], dict[str, float]]  # model in eval mode
    forward: Callable[[nn.Module, Any], Any]  # forward only (FLOPs probe, BN recalibration)
    example_batch: Any  # a small batch for the FLOPs probe
    example_samples: int = 1  # samples in example_batch (FLOPs are reported per sample)
    dataset: str = ""  # overrides the profile's data set description (e.g. with the path)
    samples: Callable[[Any], int] | None = None  # samples in a batch; default: leading dim
    to_device: Callable[[Any, torch.device], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded as-is
    # Optional, for pruning-at-init references that score with their own loss: the cross-entropy
    # of the logits divided by a temperature, without label smoothing (GraSP's reference scores
    # with logits / 200). None: the task has no logits, probes use `loss`.
    tempered_loss: Callable[[nn.Module, Any, float], torch.Tensor] | None = None
    # Optional: a batch of `n` training samples of every class, ordered by class (GraSP's
    # reference `samples_per_class` probe data). None: the task has no classes.
    class_batch: Callable[[int], Any] | None = None


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (inside lists, tuples and dicts) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class DeviceLoader:
    """A loader whose batches arrive on `device`; other attributes (dataset, references) pass
    through, so `evaluate` functions can read them."""

    def __init__(
        self, loader: Iterable[Any], device: torch.device, move: Callable[[Any, torch.device], Any]
    ):
        self.loader, self.device, self.move = loader, device, move

    def __iter__(self):
        for batch in self.loader:
            yield self.move(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class Task:
    """Base class of every task: `profiles` as data, `build` makes the Workload."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # every key evaluate() returns, primary first
    profiles: ClassVar[dict[str, Profile]] = {}

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise UserError(
                f"task {self.name!r} has no profile {name!r}; choose one of {', '.join(self.profiles)}"
            )
        return self.profiles[name]

    def build(self, profile: Profile, request: BuildRequest) -> Workload:
        """Build model and data. data_root None means the embedded default data set, generated
        deterministically into request.cache_dir on first use. Raise UserError on bad data."""
        raise NotImplementedError


def make_loader(
    dataset: Dataset,
    request: BuildRequest,
    shuffle: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    batch_size: int | None = None,
    shard: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader for this rank: under data parallelism a DistributedSampler gives each rank its
    own share (and the Trainer calls set_epoch), so no rank reads another rank's samples."""
    sampler = None
    if shard and request.world > 1:
        sampler = DistributedSampler(
            dataset, request.world, request.rank, shuffle=shuffle, seed=request.seed
        )
        shuffle = False
    workers = request.workers
    return DataLoader(
        dataset,
        batch_size=batch_size or request.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=request.device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
    )


def generate_once(root: Path, done: Callable[[], bool], write: Callable[[], None]) -> Path:
    """Run `write` unless `done()`, one process at a time (a lock file beside `root`): sweep jobs
    that start together generate an embedded data set once and never read it half-written."""
    if done():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not done():
            write()
    return root
