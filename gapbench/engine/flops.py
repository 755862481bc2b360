"""FLOPs ledger: dense forward FLOPs per layer measured once with hooks, then every training step
is charged from that step's real densities.

Convention: 1 multiply-add = 2 FLOPs; only conv and linear layers are counted (they dominate; norms,
activations and attention score products are left out and the record says so). A training step
costs forward + 2x backward (input and weight gradients), each scaled by the layer's density;
a step that needs dense weight gradients (RigL updates) pays the weight-gradient pass densely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gapbench.sparse.masks import MaskSet

COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _module_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        rows = output.numel() // output.shape[-1]
        return 2 * rows * module.in_features * module.out_features
    # Convolution: each output element costs (in_channels / groups) * kernel volume MACs.
    kernel = int(torch.tensor(module.kernel_size).prod())
    return 2 * output.numel() * (module.in_channels // module.groups) * kernel


def measure_forward_flops(
    model: nn.Module, run_forward: Callable[[], Any]
) -> tuple[dict[str, int], list[str]]:
    """Dense forward FLOPs of every conv/linear weight (keyed by parameter name) for one call of
    `run_forward`, and the order in which those weights were first used (forward order)."""
    flops: dict[str, int] = {}
    order: list[str] = []
    handles = []
    for mod_name, module in model.named_modules():
        if isinstance(module, COUNTED):
            pname = f"{mod_name}.weight" if mod_name else "weight"

            def hook(mod, inputs, output, pname=pname):
                if not isinstance(output, torch.Tensor):
                    return
                flops[pname] = flops.get(pname, 0) + _module_flops(mod, inputs, output)
                if pname not in order:
                    order.append(pname)

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return flops, order


class FlopsLedger:
    """Accumulates training FLOPs step by step; caches the per-sample cost until masks change."""

    def __init__(self, per_sample: dict[str, float], masks: MaskSet):
        self.per_sample = per_sample  # dense forward FLOPs per sample, per weight name
        self.masks = masks
        self.train_flops = 0.0
        self.dense_train_flops = 0.0  # what the same steps would cost fully dense
        self._cached_version = -1
        self._sparse_fwd = 0.0
        self._dense_fwd = sum(per_sample.values())

    def _forward_cost(self) -> float:
        if self._cached_version != self.masks.version:
            total = 0.0
            for name, f in self.per_sample.items():
                density = self.masks.density(name) if name in self.masks.masks else 1.0
                total += f * density
            self._sparse_fwd = total
            self._cached_version = self.masks.version
        return self._sparse_fwd

    def charge_step(self, samples: float, dense_weight_grad: bool = False) -> None:
        fwd = self._forward_cost()
        weight_grad = self._dense_fwd if dense_weight_grad else fwd
        self.train_flops += samples * (2 * fwd + weight_grad)
        self.dense_train_flops += samples * 3 * self._dense_fwd

    def inference_flops(self) -> float:
        """Forward FLOPs per sample of the model as it is now."""
        return self._forward_cost()

    def dense_inference_flops(self) -> float:
        return self._dense_fwd

    def state_dict(self) -> dict[str, float]:
        return {"train_flops": self.train_flops, "dense_train_flops": self.dense_train_flops}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.train_flops = state["train_flops"]
        self.dense_train_flops = state["dense_train_flops"]
