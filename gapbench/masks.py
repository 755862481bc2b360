"""MaskSet: one bool mask per prunable tensor, applied to weights, gradients and optimizer state.

Masks are stored as torch.bool (1 byte per weight). A tensor whose mask is all ones is flagged
dense so the hot path skips it (GaP's grown partition, dense layers of ERK).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask with exactly k True entries at the largest scores; ties go to the lower index."""
    flat = score.detach().flatten().float()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        # A stable descending sort makes tie-breaking deterministic (lower index wins).
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask.view_as(score)


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
        self._dense: dict[str, bool] = {n: True for n in self.names}
        self.version = 0  # bumped on every mask change; lets callers cache derived numbers

    # ---- reading -----------------------------------------------------------------------------
    def numel(self, name: str) -> int:
        return self.masks[name].numel()

    def count(self, name: str) -> int:
        return int(self.masks[name].sum())

    def density(self, name: str) -> float:
        return self.count(name) / self.numel(name)

    def densities(self) -> dict[str, float]:
        return {n: self.density(n) for n in self.names}

    def total(self) -> int:
        return sum(self.numel(n) for n in self.names)

    def alive(self) -> int:
        return sum(self.count(n) for n in self.names)

    def overall_sparsity(self) -> float:
        return 1.0 - self.alive() / max(1, self.total())

    def is_dense(self, name: str) -> bool:
        return self._dense[name]

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
        self._dense[name] = bool(mask.all())
        with torch.no_grad():
            self.params[name].masked_fill_(~mask, 0.0)
        if optimizer is not None and n_changed:
            clear_optimizer_state(optimizer, self.params[name], changed)
        self.version += 1
        return n_changed

    def apply(self) -> None:
        """Zero pruned weights (after every optimizer step)."""
        with torch.no_grad():
            for n in self.names:
                if not self._dense[n]:
                    # A uint8 view of the bool storage multiplies several times faster than bool.
                    self.params[n].mul_(self.masks[n].view(torch.uint8))

    def apply_to_grads(self) -> None:
        """Zero gradients of pruned weights (before the optimizer step) so no state accumulates."""
        for n in self.names:
            grad = self.params[n].grad
            if grad is not None and not self._dense[n]:
                grad.mul_(self.masks[n].view(torch.uint8))

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            m = state[n].to(self.params[n].device, dtype=torch.bool)
            self.masks[n] = m
            self._dense[n] = bool(m.all())
        self.version += 1

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
