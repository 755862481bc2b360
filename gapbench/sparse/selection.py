"""Which tensors are prunable: a task's sparsity policy, applied by one core helper.

Candidates are the weights of conv and linear modules. A task excludes module prefixes that stay
dense by its own design (e.g. SSD's box/class predictors, a shared embedding), and the run chooses
which end layers stay dense: `first` (the first conv/linear in forward order), `last`, both, or
none. RigL prunes the last layer and keeps the first dense under its uniform distribution
(google-research/rigl: `first_layer_sparsity=0`, `last_layer_sparsity=-1`); its released ERK runs
pass `--first_layer_sparsity=-1`, making the first layer sparse too. The choice is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from gapbench.errors import UserError

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
END_LAYERS = ("first", "last")


def parse_dense_layers(spec: str) -> tuple[str, ...]:
    """`first`, `last`, `first,last` or `none` -> the tuple of end layers kept dense."""
    parts = tuple(p.strip() for p in spec.split(",") if p.strip())
    if parts == ("none",):
        return ()
    bad = [p for p in parts if p not in END_LAYERS]
    if bad or not parts:
        raise UserError(
            f"--dense-layers {spec!r}: use first, last, first,last or none (got {', '.join(bad) or 'nothing'})"
        )
    return tuple(p for p in END_LAYERS if p in parts)


def format_dense_layers(layers: Sequence[str]) -> str:
    return ",".join(layers) if layers else "none"


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


@dataclass(frozen=True)
class Selection:
    """The outcome of a policy on one model: prunable tensors (forward order) and what stays dense."""

    prunable: list[str]
    dense_layers: list[str]  # candidate weights kept dense as first/last layers
    excluded: list[str]  # candidate weights the task keeps dense (its `exclude` prefixes)
    all_weights: dict[str, int] = field(default_factory=dict)  # every conv/linear weight: numel

    def describe(self, dense_spec: str, exclude: Sequence[str]) -> dict[str, object]:
        return {
            "dense_layers": dense_spec,
            "dense_layer_tensors": self.dense_layers,
            "task_excluded_prefixes": list(exclude),
            "task_excluded_tensors": self.excluded,
            "prunable_tensors": len(self.prunable),
        }


def select_prunable(
    model: nn.Module,
    exclude: Sequence[str] = (),
    dense_layers: Sequence[str] = ("first",),
    forward_order: Sequence[str] = (),
    types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES,
) -> Selection:
    """Conv/linear weights minus `exclude` prefixes and the chosen end layers.

    `forward_order` (weight names in the order the forward pass first used them, from the FLOPs
    probe) decides what `first` and `last` mean; registration order is the fallback.
    """
    weights = {
        f"{name}.weight": module.weight.numel()
        for name, module in model.named_modules()
        if isinstance(module, types) and getattr(module, "weight", None) is not None
    }
    ordered = [n for n in forward_order if n in weights]
    ordered += [n for n in weights if n not in ordered]
    excluded = [n for n in ordered if _matches(n.removesuffix(".weight"), exclude)]
    candidates = [n for n in ordered if n not in excluded]
    ends: list[str] = []
    if candidates and "first" in dense_layers:
        ends.append(candidates[0])
    if candidates and "last" in dense_layers and candidates[-1] not in ends:
        ends.append(candidates[-1])
    prunable = [n for n in candidates if n not in ends]
    if not prunable:
        raise UserError("the sparsity policy leaves no prunable tensor; use --dense-layers none")
    return Selection(prunable, ends, excluded, weights)
