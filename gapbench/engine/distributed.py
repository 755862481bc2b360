"""Devices and data-parallel training under torchrun: one process per device.

Launch:  torchrun --nproc_per_node N -m gapbench run --task ... --device cuda
Every rank builds the same model and masks from the same seeds; a DistributedSampler gives each
rank its own share of every epoch (no rank reads another's samples) and DDP averages gradients.
The recipe is defined on the global batch: the per-rank batch is global / (ranks x accumulation).
Mask checksums are compared across ranks after setup and after every epoch (the official GaP code
drew masks per rank). Only rank 0 evaluates and writes checkpoints and records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gapbench.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str) -> torch.device:
    """`auto` (cuda when available), `cpu`, `cuda`, `cuda:N`, `mps`; one clear error otherwise."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UserError(
            f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here; pick cuda:0.."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {spec}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def init_from_env(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes in the environment (no-op when not launched)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return DistInfo(dist.get_rank(), dist.get_world_size()), device


@dataclass(frozen=True)
class WorkerGroups:
    """kappa groups of m consecutive ranks (N = kappa * m): P-GaP's workers, each data-parallel
    inside itself. `process_group` is this rank's group; collectives across groups use the world."""

    count: int
    size: int
    index: int
    local_rank: int
    process_group: object | None = None

    def leader(self, group: int) -> int:
        """Global rank of a group's first rank (the source of its broadcasts)."""
        return group * self.size


def make_groups(info: DistInfo, count: int) -> WorkerGroups | None:
    """Split the ranks into `count` groups; None when there is one process or one group."""
    if count <= 1 or not info.enabled:
        return None
    from gapbench.errors import UserError

    if info.world_size % count:
        raise UserError(
            f"P-GaP with {count} partitions needs a multiple of {count} processes, "
            f"got {info.world_size}; use --nproc_per_node {count} (or a multiple)"
        )
    size = info.world_size // count
    groups = [dist.new_group(list(range(g * size, (g + 1) * size))) for g in range(count)]
    index = info.rank // size
    return WorkerGroups(count, size, index, info.rank % size, groups[index])


def wrap(model: nn.Module, info: DistInfo, groups: WorkerGroups | None = None) -> nn.Module:
    if not info.enabled:
        return model
    if groups is not None:
        if groups.size == 1:
            return model  # a group of one rank: no gradient averaging needed
        return nn.parallel.DistributedDataParallel(model, process_group=groups.process_group)
    return nn.parallel.DistributedDataParallel(model)


def check_same_on_all_ranks(
    value: str, info: DistInfo, what: str, groups: WorkerGroups | None = None
) -> None:
    """Raise if ranks disagree (e.g. on the mask checksum); within one worker group if given."""
    if not info.enabled:
        return
    size = groups.size if groups is not None else info.world_size
    if size == 1:
        return
    values: list[str | None] = [None] * size
    group = groups.process_group if groups is not None else None
    dist.all_gather_object(values, value, group=group)
    if len(set(values)) != 1:
        raise RuntimeError(f"{what} differs across ranks: {values}")


def all_reduce_sum(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
