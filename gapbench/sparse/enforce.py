"""The one enforcement point: pruned weights and their optimizer state stay exactly zero.

It is installed as optimizer step hooks, so every front-end that calls `optimizer.step()` —
gapbench's loop, mmengine's OptimWrapper, a fairseq optimizer — gets the same guarantee unchanged.

Before the step, gradients of pruned entries are zeroed, so no momentum or Adam moment builds up on
them (the official GaP code skipped this and restarted the optimizer instead). After the step,
pruned weights are zeroed again, unless the optimizer is one of torch's whose update of an entry
with zero gradient, zero state and zero weight is exactly zero: for those that second pass would
only cost time (tests/test_enforce.py checks each of them). A loop that clips gradients calls
`mask_grads()` itself first, so the clip norm sees only the gradients that will be applied.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def mask_grads(self) -> None:
        """Zero the gradients of pruned entries now (before clipping); the step will not redo it."""
        if self.before_mask is not None:
            self.before_mask()
        self.masks.mask_grads()
        self._grads_masked = True

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._grads_masked:
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
