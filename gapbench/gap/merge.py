"""P-GaP's merge as pure functions over state dicts, shared by the one-process emulation and the
multi-process worker groups.

After a round, partition k's tensors come from worker k, together with the biases and norms of
its layers; everything that belongs to no partition (stem norms, final norms, heads and end layers
kept dense) is averaged over the workers. The official code copied whole layers by name and left
the pre-norm final LayerNorms at their initial values every round (fairseq/ddp_trainer.py,
`combine_sparse_block`); averaging them is gapbench's documented choice (GAP_SPEC.md).

To bound memory, workers are folded in one at a time (`MergeAccumulator`): it keeps each
worker's owned tensors and a running sum of the averaged ones, never kappa full copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def _path(key: str) -> list[str]:
    return key.rsplit(".", 1)[0].split(".") if "." in key else []


def owners(
    keys: Sequence[str], partitions: Sequence[Sequence[str]], dense_weights: Sequence[str] = ()
) -> dict[str, int]:
    """Worker index owning each state key; keys left out are averaged over workers.

    A partition tensor is owned by its partition. Any other key (a bias, a norm's weight or
    running statistics) is owned by the partition of the conv/linear weights whose module path
    shares the longest prefix with it, when that prefix points at one partition only. Dense
    conv/linear weights (`dense_weights`) take part in that vote as "no owner", so the bias and
    norm of a dense first layer are averaged rather than handed to the worker next to it.
    """
    part_of: dict[str, int | None] = {n: k for k, group in enumerate(partitions) for n in group}
    for name in dense_weights:
        part_of.setdefault(name, None)
    paths = {n: _path(n) for n in part_of}
    out: dict[str, int] = {}
    for key in keys:
        if key in part_of:
            if part_of[key] is not None:
                out[key] = part_of[key]
            continue
        path = _path(key)
        best, found = 0, set()
        for name, other in paths.items():
            common = 0
            for a, b in zip(path, other):
                if a != b:
                    break
                common += 1
            if common > best:
                best, found = common, {part_of[name]}
            elif common == best and common > 0:
                found.add(part_of[name])
        if best > 0 and len(found) == 1 and None not in found:
            out[key] = found.pop()
    return out


class MergeAccumulator:
    """Folds in worker states one at a time; `result()` is the merged state.

    Owned entries are copied from their owner; floating-point entries owned by no one are
    averaged; integer entries owned by no one (BN's num_batches_tracked) come from the last
    worker folded in.
    """

    def __init__(self, owner_of: Callable[[str], int | None]):
        self.owner_of = owner_of
        self.seen = 0
        self.kept: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, worker: int, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            owner = self.owner_of(key)
            if owner is not None:
                if owner == worker:
                    self.kept[key] = value.detach().clone()
            elif value.is_floating_point():
                value = value.detach()
                if key in self.sums:
                    self.sums[key] += value.double()
                else:
                    self.sums[key] = value.double().clone()
                self.counts[key] = self.counts.get(key, 0) + 1
            else:
                self.kept[key] = value.detach().clone()
        self.seen += 1

    def result(self, template: dict[str, Any]) -> dict[str, Any]:
        """Merged state shaped like `template` (keys the workers never produced stay as in it)."""
        merged = dict(template)
        for key, value in self.kept.items():
            merged[key] = value
        for key, total in self.sums.items():
            like = template.get(key, total)
            merged[key] = (total / self.counts[key]).to(like.dtype)
        return merged

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.kept = state["seen"], dict(state["kept"])
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


def flatten_optimizer_state(
    optimizer_state: dict[str, Any], param_names: Sequence[str | None]
) -> dict[str, torch.Tensor]:
    """Optimizer per-parameter state as {"<param name>/<slot>": tensor}, mergeable like a model
    state dict. `param_names[i]` is the name of optimizer index i."""
    flat = {}
    for index, slots in optimizer_state["state"].items():
        name = param_names[index] if index < len(param_names) else None
        if name is None:
            continue
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                flat[f"{name}/{slot}"] = value
    return flat


def unflatten_optimizer_state(
    flat: dict[str, torch.Tensor], template: dict[str, Any], param_names: Sequence[str | None]
) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state` onto an optimizer state_dict `template`."""
    index_of = {name: i for i, name in enumerate(param_names) if name is not None}
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        name, slot = key.rsplit("/", 1)
        state.setdefault(index_of[name], {})[slot] = value
    return {"state": state, "param_groups": template["param_groups"]}


def slot_owner(owner: dict[str, int]) -> Callable[[str], int | None]:
    """An optimizer slot ("<param name>/<slot>") is owned by whoever owns its parameter."""
    return lambda key: owner.get(key.rsplit("/", 1)[0])


def merge_across_groups(
    state: dict[str, Any], owner_of: Callable[[str], int | None], groups: Any
) -> dict[str, torch.Tensor]:
    """The multi-process merge (torch.distributed, every rank calls it with its own state).

    Owned entries are broadcast from their group's first rank; floating-point entries owned by no
    one are averaged over all ranks (every rank of a group holds the same state, so this is the
    mean over groups); integer ones come from the last group — the same rule as the one-process
    `MergeAccumulator`, so both give the same merged model to floating-point tolerance.
    """
    import torch.distributed as dist

    keys = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor))
    everyone: list[list[str] | None] = [None] * (groups.count * groups.size)
    dist.all_gather_object(everyone, keys)
    if any(other != keys for other in everyone):
        raise RuntimeError("P-GaP merge: worker groups hold different state entries")
    merged = {}
    for key in keys:
        value = state[key].detach().clone()
        owner = owner_of(key)
        if owner is not None:
            dist.broadcast(value, src=groups.leader(owner))
        elif value.is_floating_point():
            dist.all_reduce(value)
            value /= groups.count * groups.size
        else:
            dist.broadcast(value, src=groups.leader(groups.count - 1))
        merged[key] = value
    return merged
