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
        self.adam_ages: AdamAges | None = None  # per-entry Adam ages, when the method asks
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
            if self.adam_ages is not None and self.adam_ages.optimizer is optimizer:
                self.adam_ages.reset(self.params[name])
        self._refresh()
        return n_changed

    def track_adam_ages(self, optimizer: torch.optim.Optimizer) -> None:
        """Bias-correct Adam/AdamW per entry from now on (see AdamAges); other optimizers keep
        no per-tensor step count, so nothing is needed for them."""
        if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW) and (
            self.adam_ages is None or self.adam_ages.optimizer is not optimizer
        ):
            self.adam_ages = AdamAges(optimizer)

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


AGE_KEY = "gapbench_age"


class AdamAges:
    """Per-entry Adam step counts, so an entry whose moments were zeroed mid-run (a regrown
    weight) is bias-corrected as a fresh Adam would, not with the tensor's global step count.

    torch's Adam keeps one `step` per tensor. An entry regrown at step t >= 10k with zeroed
    moments takes the update lr * (1 - b1) g / sqrt((1 - b2) g^2) = 3.16 lr on its first step,
    where a fresh Adam takes lr. The age of each entry (steps since its moments started from
    zero) is kept in the optimizer's state under AGE_KEY (so checkpoints carry it; zero wherever
    the moments are zero, as for pruned entries), and after every step the update of each young
    entry is replaced by the one its own age gives. Entries older than HORIZON steps are exact
    to 1e-7 without correction; a tensor with no young entry drops its ages.
    """

    HORIZON = 20_000  # b^HORIZON < 1e-7 for b <= 0.999: bias correction is 1 to 1e-7

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._handle = optimizer.register_step_post_hook(self._after_step)

    def reset(self, param: torch.Tensor) -> None:
        """After `param`'s entries were zeroed: their age restarts (zero moments, age zero);
        every other entry with moments is as old as the tensor's step count."""
        state = self.optimizer.state.get(param)
        if not state or "step" not in state:
            return  # no step taken yet: every entry is fresh anyway
        started = (state["exp_avg"] != 0) | (state["exp_avg_sq"] != 0)
        age = state.get(AGE_KEY)
        if age is None:
            step = min(float(state["step"]), self.HORIZON)
            state[AGE_KEY] = started.to(state["exp_avg"].dtype) * step
        else:
            age.masked_fill_(~started, 0.0)

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in optimizer.param_groups:
            beta1, beta2 = (float(b) for b in group["betas"])
            lr, eps = float(group["lr"]), float(group["eps"])
            second = "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"
            for param in group["params"]:
                state = optimizer.state.get(param)
                if not state or AGE_KEY not in state:
                    continue
                age, m = state[AGE_KEY], state["exp_avg"]
                started = (age > 0) | (m != 0) | (state["exp_avg_sq"] != 0)
                age.add_(started.to(age.dtype)).clamp_(max=self.HORIZON)
                step = float(state["step"])
                young = started & (age < min(step, self.HORIZON))
                if not bool(young.any()):
                    if not bool(((age > 0) & (age < self.HORIZON)).any()):
                        del state[AGE_KEY]  # nothing young left; a later reset restarts it
                    continue
                a, mean, var = age[young], m[young], state[second][young]
                # torch's update, with the tensor's step count, and the entry's own.
                applied = mean / ((1 - beta1**step) * (var.sqrt() / (1 - beta2**step) ** 0.5 + eps))
                own = mean / ((1 - beta1**a) * (var.sqrt() / (1 - beta2**a).sqrt() + eps))
                param[young] += lr * (applied - own).to(param.dtype)


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
