"""The one enforcement point: pruned weights and their optimizer state stay exactly zero.

It is installed as optimizer step hooks, so every front-end that calls `optimizer.step()` —
gapbench's loop, mmengine's OptimWrapper, a fairseq optimizer — gets the same guarantee unchanged.

Before the step, gradients of pruned entries are zeroed, so no momentum or Adam moment builds up on
them (the official GaP code skipped this and restarted the optimizer instead). After the step,
pruned weights are zeroed again, unless the optimizer is one of torch's whose update of an entry
with zero gradient, zero state and zero weight is exactly zero: for those that second pass would
only cost time (tests/test_enforce.py checks each of them). A loop that clips gradients calls
`mask_grads()` itself first, so the clip norm sees only the gradients that will be applied.

"Already masked" is tracked per backward, not per step: every backward that writes a masked
parameter's gradient clears the flag (a post-accumulate-grad hook). A front-end that calls
`mask_grads()` and then skips the weight update (RigL's replaced steps) therefore cannot leave the
flag set for the next step, whose pre-hook would otherwise let unmasked gradients through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gapbench.sparse.masks import MaskSet

# Optimizers whose step leaves w == 0 at 0 when its gradient and per-entry state are 0.
ZERO_PRESERVING: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
)


class MaskEnforcer:
    """Masks gradients before and (where needed) weights after every `optimizer.step()`."""

    def __init__(
        self,
        masks: MaskSet,
        optimizer: torch.optim.Optimizer,
        reapply_weights: bool | None = None,
        before_mask: Callable[[], None] | None = None,
    ):
        self.masks = masks
        self.optimizer = optimizer
        # Called with the gradients still dense, right before they are masked (RigL reads them).
        self.before_mask = before_mask
        if reapply_weights is None:
            reapply_weights = type(optimizer) not in ZERO_PRESERVING
        self.reapply_weights = reapply_weights
        self._grads_masked = False
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]
        # A new backward brings new dense gradients: they must be read and masked again.
        self._handles += [
            p.register_post_accumulate_grad_hook(self._new_gradients)
            for p in masks.params.values()
            if p.requires_grad
        ]

    def _new_gradients(self, param: torch.Tensor) -> None:
        self._grads_masked = False

    def mask_grads(self) -> None:
        """Zero the gradients of pruned entries now (before clipping). Once per backward: a second
        call (the step's pre-hook, a replaced step after clipping) must not let the method read
        gradients that are already masked."""
        if self._grads_masked:
            return
        if self.before_mask is not None:
            self.before_mask()
        self.masks.mask_grads()
        self._grads_masked = True

    def skip_step(self) -> None:
        """This backward's weight update is replaced (RigL): let the method read the dense
        gradients and mask them, and expect no step to follow (gradients set without a backward
        are then masked again too)."""
        self.mask_grads()
        self._grads_masked = False

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.mask_grads()

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._grads_masked = False
        if self.reapply_weights:
            self.masks.apply()

    def remove(self) -> None:
        """Detach from the optimizer (e.g. when a run ends inside a longer-lived process)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass(frozen=True)
class WeightCount:
    """What the weights themselves hold, per masked tensor: a mask says what should be alive, only
    the weights say what a record may claim."""

    nonzero: dict[str, int]  # nonzero entries
    leaked: dict[str, int]  # nonzero entries that the mask prunes (must be 0)
    alive_zero: dict[str, int]  # entries the mask keeps that are exactly zero

    @property
    def total_nonzero(self) -> int:
        return sum(self.nonzero.values())

    def check(self, who: str) -> None:
        """Raise if any pruned weight is nonzero."""
        bad = {n: k for n, k in self.leaked.items() if k}
        if bad:
            raise RuntimeError(
                f"{who}: {sum(bad.values())} pruned weights are nonzero (masks hold, weights do "
                f"not): {bad}"
            )


@torch.no_grad()
def count_weights(masks: MaskSet) -> WeightCount:
    """Count nonzero weights against the masks (exact integers, read from the weights)."""
    nonzero, leaked, alive_zero = {}, {}, {}
    for name in masks.names:
        w, keep = masks.params[name], masks.masks[name]
        nz = w != 0
        nonzero[name] = int(nz.sum())
        leaked[name] = int((nz & ~keep).sum())
        alive_zero[name] = int((~nz & keep).sum())
    return WeightCount(nonzero, leaked, alive_zero)
