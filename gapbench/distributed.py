"""Data-parallel training under torchrun: one process per device, batches sharded by index.

Launch:  torchrun --nproc_per_node N -m gapbench run --task ... --device cuda
Every rank builds the same model, masks and data order from the same seeds; rank r trains on
batches r, r+N, r+2N, ... of each epoch and DDP averages the gradients. Mask checksums are compared
across ranks after setup and after every epoch (the official GaP code drew masks per rank).
Only rank 0 evaluates and writes checkpoints and records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model)


def check_same_on_all_ranks(value: str, info: DistInfo, what: str) -> None:
    """Raise if ranks disagree (e.g. on the mask checksum)."""
    if not info.enabled:
        return
    values: list[str | None] = [None] * info.world_size
    dist.all_gather_object(values, value)
    if len(set(values)) != 1:
        raise RuntimeError(f"{what} differs across ranks: {values}")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
