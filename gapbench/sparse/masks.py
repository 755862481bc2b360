"""MaskSet: one bool mask per prunable tensor, and the only code that changes a mask.

Masks are stored as torch.bool (1 byte per weight) and multiplied through a uint8 view of the same
storage, which is as fast as a float mask and a quarter of its memory. A tensor whose mask is all
ones is flagged dense, so the hot path skips it (GaP's grown partition, dense layers of ERK).
Changing a mask zeroes the weights it removes and the optimizer state of every entry whose mask
changed, so a regrown weight starts at zero with fresh state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn


def topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask with exactly k True entries at the largest scores; ties go to the lower index.

    Linear time (a k-th value selection, then the tied entries by position) instead of a full
    sort: pruning a ResNet-50 partition costs less than one training step."""
    flat = score.detach().flatten()
    if flat.dtype != torch.float32:
        flat = flat.float()
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(score, dtype=torch.bool)
    pool = flat
    lowest = flat.min()
    above_lowest = flat > lowest
    if int(above_lowest.sum()) >= k:  # search only above the floor (dead entries sit at -1/-inf)
        pool = flat[above_lowest]
    m = pool.numel()
    if pool.device.type == "cpu":  # numpy's introselect is ~3x faster than kthvalue on CPU
        threshold = torch.tensor(np.partition(pool.numpy(), m - k)[m - k])
    else:
        threshold = torch.kthvalue(pool, m - k + 1).values  # the k-th largest score
    above = flat > threshold
    tied = flat == threshold
    need = k - int(above.sum())
    if int(tied.sum()) > need:  # keep the first `need` tied entries by position
        tied &= torch.cumsum(tied, 0) <= need
    return (above | tied).view_as(score)


class MaskSet:
    """Masks for the named parameters of one model."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        params = dict(model.named_parameters())
        missing = [n for n in names if n not in params]
        if missing:
            raise KeyError(f"not parameters of the model: {missing}")
        self.names: list[str] = list(names)
        self.params: dict[str, nn.Parameter] = {n: params[n] for n in self.names}
        self.masks: dict[str, torch.Tensor] = {
            n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()
        }
        self._counts: dict[str, int] = {n: p.numel() for n, p in self.params.items()}
        self.version = 0  # bumped on every mask change; lets callers cache derived numbers
        self._refresh()

    # ---- reading -----------------------------------------------------------------------------
    def numel(self, name: str) -> int:
        return self.masks[name].numel()

    def count(self, name: str) -> int:
        return self._counts[name]

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def density(self, name: str) -> float:
        return self._counts[name] / self.numel(name)

    def total(self) -> int:
        return sum(self.numel(n) for n in self.names)

    def alive(self) -> int:
        return sum(self._counts.values())

    def overall_sparsity(self) -> float:
        return 1.0 - self.alive() / max(1, self.total())

    def is_dense(self, name: str) -> bool:
        return self._counts[name] == self.numel(name)

    # ---- writing -----------------------------------------------------------------------------
    def set_mask(
        self, name: str, mask: torch.Tensor, optimizer: torch.optim.Optimizer | None = None
    ) -> int:
        """Replace one mask; zero the weights it removes and the optimizer state of every entry
        whose mask changed (pruned or grown). Returns how many entries changed."""
        mask = mask.to(dtype=torch.bool, device=self.params[name].device).view_as(self.masks[name])
        changed = mask ^ self.masks[name]
        n_changed = int(changed.sum())
        self.masks[name] = mask
        self._counts[name] = int(mask.sum())
        with torch.no_grad():
            self.params[name].masked_fill_(~mask, 0.0)
        if optimizer is not None and n_changed:
            clear_optimizer_state(optimizer, self.params[name], changed)
        self._refresh()
        return n_changed

    def _refresh(self) -> None:
        self._active = [n for n in self.names if not self.is_dense(n)]
        self._u8 = [self.masks[n].view(torch.uint8) for n in self._active]
        self._weights = [self.params[n] for n in self._active]
        self.version += 1

    def apply(self) -> None:
        """Zero pruned weights."""
        if self._active:
            with torch.no_grad():
                torch._foreach_mul_(self._weights, self._u8)

    def mask_grads(self) -> None:
        """Zero gradients of pruned weights, so no optimizer state accumulates on them."""
        grads = [p.grad for p in self._weights]
        if any(g is None for g in grads):
            pairs = [(g, m) for g, m in zip(grads, self._u8) if g is not None]
            grads, masks = [g for g, _ in pairs], [m for _, m in pairs]
        else:
            masks = self._u8
        if grads:
            torch._foreach_mul_(grads, masks)

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            m = state[n].to(self.params[n].device, dtype=torch.bool)
            self.masks[n] = m
            self._counts[n] = int(m.sum())
        self._refresh()

    def checksum(self) -> str:
        """Hash of all masks, to check that data-parallel ranks agree."""
        h = hashlib.sha256()
        for n in self.names:
            h.update(n.encode())
            h.update(self.masks[n].cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def clear_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, where: torch.Tensor
) -> None:
    """Zero every per-element optimizer buffer (momentum, Adam moments) of `param` at `where`."""
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(where, 0)


def random_masks(
    shapes: Iterable[torch.Size], counts: Iterable[int], generator: torch.Generator
) -> list[torch.Tensor]:
    """Uniformly random masks with exact keep counts, drawn from one seeded generator so every
    data-parallel rank draws the same masks."""
    out = []
    for shape, k in zip(shapes, counts):
        n = int(torch.Size(shape).numel())
        perm = torch.randperm(n, generator=generator)
        m = torch.zeros(n, dtype=torch.bool)
        m[perm[:k]] = True
        out.append(m.view(shape))
    return out
