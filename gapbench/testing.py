"""Conformance check: run any method — built-in or a user's — through the Trainer's hook sequence
on a small model and verify the promises every method must keep.

    from gapbench.testing import check_method
    report = check_method("mymethod", params={"k": 1})   # raises ConformanceError on a violation

Checked: (1) weights outside the mask and their optimizer state are exactly zero after every step;
(2) every tensor is at exactly its target count or fully dense after every step (gradual methods:
counts only shrink), and at exactly the target after training; (3) the same seed gives identical
weights and masks; (4) a state_dict round trip through torch.save/torch.load (weights_only) in the
middle of training resumes identically.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gapbench.budget import Budget
from gapbench.masks import MaskSet
from gapbench.method import Method, MethodContext, get_method_class
from gapbench.train import seed_everything


class ConformanceError(AssertionError):
    """A method broke one of the promises in this module's docstring."""


@dataclass
class ConformanceReport:
    method: str
    steps: int
    final_counts: dict[str, int]
    target_counts: dict[str, int]
    checks: list[str] = field(default_factory=list)


class SmallNet(nn.Module):
    """Conv + batch norm + linear layers: every kind of tensor a task can hand a method."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


PRUNABLE = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]


class _Run:
    """One model + optimizer + method, driven exactly like gapbench.train.Trainer drives them."""

    def __init__(
        self, method_cls, params, sparsity, distribution, seed, epochs, steps_per_epoch, optimizer
    ):
        torch.manual_seed(seed)
        self.model = SmallNet()
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2, weight_decay=1e-4)
        else:
            self.opt = torch.optim.SGD(
                self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4
            )
        self.masks = MaskSet(self.model, PRUNABLE)
        self.method: Method = method_cls(**params)
        self.epochs = self.method.total_epochs(epochs)
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        ctx = MethodContext(
            sparsity=sparsity,
            distribution=distribution,
            seed=seed,
            forward_order=PRUNABLE,
            recalibrate_bn=self._recalibrate,
        )
        self.method.setup(
            self.model, self.opt, Budget(self.epochs, steps_per_epoch), self.masks, ctx
        )
        self.step = 0

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + step)
        return torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)

    def _recalibrate(self, model: nn.Module) -> None:
        with torch.no_grad():
            for i in range(3):
                model(self._batch(10_000 + i)[0])

    def train_epochs(self, start: int, stop: int, on_step=None) -> None:
        for epoch in range(start, stop):
            seed_everything(self.seed * 100_003 + epoch)  # as the Trainer does at every epoch
            self.model.train()
            self.method.on_epoch_start(epoch)
            for _ in range(self.steps_per_epoch):
                x, y = self._batch(self.step)
                self.opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(self.model(x), y).backward()
                self.method.before_step(self.step)
                self.opt.step()
                self.method.after_step(self.step)
                self.step += 1
                if on_step:
                    on_step(self)
            self.method.on_epoch_end(epoch)

    def finish(self) -> None:
        self.method.on_train_end()
        if self.method.sparse:
            self.masks.apply()

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "method": self.method.state_dict(),
            "step": self.step,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.step = state["step"]


def _check_step(run: _Run, previous: dict[str, int]) -> None:
    m = run.method
    for name in run.masks.names:
        mask = run.masks.masks[name]
        param = run.masks.params[name]
        if not m.sparse:
            continue
        if torch.any(param.detach()[~mask] != 0):
            raise ConformanceError(
                f"{m.name}: step {run.step}: pruned weights of {name} are not zero"
            )
        for key, value in run.opt.state.get(param, {}).items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and torch.any(value[~mask] != 0)
            ):
                raise ConformanceError(
                    f"{m.name}: step {run.step}: optimizer state {key!r} of pruned entries of {name} is not zero"
                )
        count, target, numel = int(mask.sum()), m.target_counts[name], mask.numel()
        if m.gradual:
            if count > previous.get(name, numel) or count < target:
                raise ConformanceError(
                    f"{m.name}: step {run.step}: {name} has {count} weights; a gradual method must "
                    f"shrink monotonically towards {target}"
                )
        elif count not in (target, numel):
            raise ConformanceError(
                f"{m.name}: step {run.step}: {name} keeps {count} weights, target is {target} "
                f"(or {numel} while dense)"
            )
        previous[name] = count


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Serialise like a checkpoint: torch.save, then torch.load under weights_only=True."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise ConformanceError(
            f"state_dict does not load with torch.load(weights_only=True): {exc}; "
            "keep to tensors and plain containers"
        ) from exc


def check_method(
    method: str | type[Method],
    params: dict[str, Any] | None = None,
    sparsity: float = 0.8,
    distribution: str = "uniform",
    epochs: int = 6,
    steps_per_epoch: int = 5,
    seed: int = 0,
    optimizer: str = "sgd",
) -> ConformanceReport:
    """Run all conformance checks on `method`; raise ConformanceError on the first violation."""
    cls = get_method_class(method) if isinstance(method, str) else method
    params = dict(params or {})

    def make() -> _Run:
        return _Run(
            cls,
            copy.deepcopy(params),
            sparsity,
            distribution,
            seed,
            epochs,
            steps_per_epoch,
            optimizer,
        )

    run = make()
    previous: dict[str, int] = {}
    run.train_epochs(0, run.epochs, on_step=lambda r: _check_step(r, previous))
    run.finish()
    final = {n: run.masks.count(n) for n in run.masks.names}
    if cls.sparse and final != run.method.target_counts:
        raise ConformanceError(
            f"{cls.name}: final keep counts {final} differ from the target {run.method.target_counts}"
        )
    if cls.sparse:
        expected_total = round((1 - sparsity) * run.masks.total())
        if sum(final.values()) != expected_total:
            raise ConformanceError(
                f"{cls.name}: {sum(final.values())} weights alive, sparsity {sparsity} needs exactly {expected_total}"
            )
    report = ConformanceReport(cls.name, run.step, final, dict(run.method.target_counts))
    report.checks += [
        "masked weights and optimizer state zero after every step",
        "exact final counts",
    ]

    again = make()
    again.train_epochs(0, again.epochs)
    again.finish()
    _assert_same(run, again, cls.name, "two runs with the same seed")
    report.checks.append("deterministic given the seed")

    half = max(1, run.epochs // 2)
    first = make()
    first.train_epochs(0, half)
    saved = _roundtrip(first.state())
    resumed = make()
    resumed.load(saved)
    resumed.train_epochs(half, resumed.epochs)
    resumed.finish()
    _assert_same(run, resumed, cls.name, f"a run resumed from a state_dict after epoch {half}")
    report.checks.append("state_dict round trip resumes identically")
    return report


def _assert_same(a: _Run, b: _Run, name: str, what: str) -> None:
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        if not torch.equal(x, y):
            raise ConformanceError(f"{name}: {what} differ in {key}")
    if a.masks.checksum() != b.masks.checksum():
        raise ConformanceError(f"{name}: {what} end with different masks")
