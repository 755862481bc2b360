"""`python -m gapbench speed RUN_ID`: measured inference speed of a trained sparse model against the
same model run dense — never a FLOPs estimate.

Sparse kernels that maintained libraries offer:
- CPU: PyTorch's sparse CSR matmul (BSR for block patterns) for linear layers and 1x1 convs; other
  convolutions stay dense (no maintained sparse convolution kernel);
- GPU with a 2:4 pattern: `torch.sparse.to_sparse_semi_structured` for linear layers (fp16).
Latency is the median time of one forward at batch 1; throughput is samples per second at a
larger batch. On small layers sparse kernels often lose to dense; the report says so.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapbench.deploy.export import load_run
from gapbench.errors import UserError
from gapbench.registry import get_task_class
from gapbench.sparse.pattern import Pattern
from gapbench.task import BuildRequest


class SparseLinear(nn.Module):
    """y = x W^T + b with W stored sparse (CSR, BSR or 2:4 semi-structured)."""

    def __init__(self, linear: nn.Linear, weight: torch.Tensor):
        super().__init__()
        self.weight, self.bias = weight, linear.bias
        self.semi = weight.layout not in (torch.sparse_csr, torch.sparse_bsr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.semi:
            y = nn.functional.linear(flat, self.weight)
        else:
            y = torch.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


class SparseConv1x1(nn.Module):
    """A 1x1 convolution (any stride) as a sparse matmul over channels."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor):
        super().__init__()
        self.weight, self.bias, self.stride = weight, conv.bias, conv.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        b, c, h, w = x.shape
        y = torch.mm(self.weight, x.permute(1, 0, 2, 3).reshape(c, -1))
        y = y.reshape(-1, b, h, w).permute(1, 0, 2, 3)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def _sparse_weight(weight: torch.Tensor, pattern: Pattern, device: torch.device) -> torch.Tensor:
    matrix = weight.detach().reshape(weight.shape[0], -1)
    if device.type == "cuda" and pattern.kind == "nm" and (pattern.n, pattern.m) == (2, 4):
        from torch.sparse import to_sparse_semi_structured

        return to_sparse_semi_structured(matrix.half().to(device))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        if pattern.kind == "block":
            return matrix.to_sparse_bsr((pattern.bh, pattern.bw))
        return matrix.to_sparse_csr()


def sparsify(
    model: nn.Module, masks: dict[str, torch.Tensor], pattern: Pattern, device: torch.device
) -> tuple[nn.Module, list[str]]:
    """A copy of `model` whose masked linear layers and 1x1 convolutions run sparse kernels."""
    model = copy.deepcopy(model)
    replaced = []
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key not in masks:
            continue
        conv1x1 = (
            isinstance(module, nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.groups == 1
            and module.padding == (0, 0)
        )
        if not (isinstance(module, nn.Linear) or conv1x1):
            continue
        weight = _sparse_weight(module.weight, pattern, device)
        sparse = (
            SparseLinear(module, weight)
            if isinstance(module, nn.Linear)
            else SparseConv1x1(module, weight)
        )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, sparse)
        replaced.append(key)
    return model, replaced


def repeat_batch(batch: Any, size: int) -> Any:
    """The example batch grown (or cut) to `size` samples along its leading dimension."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            return batch
        return batch[torch.arange(size) % batch.shape[0]]
    if isinstance(batch, dict):
        return {k: repeat_batch(v, size) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(repeat_batch(v, size) for v in batch)
    return batch


def _time_pair(dense, sparse, repeats: int) -> tuple[float, float]:
    """Median seconds of each, called alternately so load on the machine hits both alike."""
    for _ in range(3):
        dense(), sparse()
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for _ in range(repeats):
        for key, fn in (("dense", dense), ("sparse", sparse)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["dense"]), statistics.median(times["sparse"])


def data_root_for(record_data: Any, run_id: str, given: Path | None) -> Path | None:
    """Where the run's data is. Records hold what identifies the data, not its path (they are
    shared), so a run on real data needs `--data-root`; records of older versions held a path."""
    if given is not None:
        if not given.exists():
            raise UserError(f"--data-root {given} does not exist; point it at the run's data")
        return given
    if record_data is None:
        return None  # embedded data: regenerated from the cache
    if isinstance(record_data, str) and Path(record_data).exists():
        return Path(record_data)
    name = record_data.get("name") if isinstance(record_data, dict) else record_data
    raise UserError(f"run {run_id} trained on data {name!r}; pass --data-root pointing at it")


def measure(
    out: Path,
    run_id: str,
    device: torch.device,
    batch: int = 64,
    repeats: int = 20,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Dense against sparse-kernel latency (batch 1) and throughput (`batch`) of a kept run."""
    for name, value in (("batch", batch), ("repeats", repeats)):
        if value < 1:
            raise UserError(f"speed: {name} must be at least 1, got {value}")
    record, state = load_run(out, run_id)
    task = get_task_class(record.task)()
    profile = task.profile(record.profile)
    root = data_root_for(record.identity.get("data"), run_id, data_root)
    from gapbench.runner import default_cache_dir

    request = BuildRequest(
        root,
        default_cache_dir(record.task),
        record.seed,
        device,
        batch_size=8,
    )
    workload = task.build(profile, request)
    model = workload.model
    try:
        model.load_state_dict(state["weights"])
    except RuntimeError as exc:  # the profile's model changed since the run was made
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"run {run_id}'s weights do not fit the model that profile {record.profile!r} of "
            f"{record.task} builds now (the profile changed after the run, commit "
            f"{(record.git_commit or 'unknown')[:8]}): {first}; rerun it with this gapbench"
        ) from None
    model.to(device).eval()
    pattern = Pattern.parse(record.identity.get("pattern", "unstructured"))
    sparse, replaced = sparsify(model, state["masks"], pattern, device)
    if not replaced:
        raise UserError(f"run {run_id} has no masked linear layer or 1x1 convolution to run sparse")
    from gapbench.task import move_to_device

    rows = {}
    for size in (1, batch):
        inputs = move_to_device(repeat_batch(workload.example_batch, size), device)
        with torch.inference_mode():
            rows[size] = _time_pair(
                lambda m=model, x=inputs: workload.forward(m, x),
                lambda m=sparse, x=inputs: workload.forward(m, x),
                repeats,
            )
    dense1, sparse1 = rows[1]
    denseb, sparseb = rows[batch]
    return {
        "run_id": run_id,
        "task": record.task,
        "method": record.method,
        "sparsity": record.sparsity,
        "pattern": str(pattern),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "sparse_layers": len(replaced),
        "kernel": "semi-structured 2:4"
        if device.type == "cuda" and pattern.kind == "nm"
        else ("BSR" if pattern.kind == "block" else "CSR"),
        "latency_ms": {
            "dense": 1000 * dense1,
            "sparse": 1000 * sparse1,
            "speedup": dense1 / sparse1,
        },
        "throughput": {
            "batch": batch,
            "dense": batch / denseb,
            "sparse": batch / sparseb,
            "speedup": denseb / sparseb,
        },
    }
