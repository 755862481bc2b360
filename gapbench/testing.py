"""Conformance check: run any method — built-in or a user's — through the same StepLoop the Trainer
runs (LR clock, dense-gradient reads, gradient masking, clipping, replaced steps) on a small model,
and verify the promises every method must keep.

    from gapbench.testing import check_method
    report = check_method("mymethod", params={"k": 1})   # raises ConformanceError on a violation

Checked: (1) weights outside the mask and their optimizer state are exactly zero after every step;
(2) every tensor is at exactly its target count or fully dense after every step (gradual methods:
counts only shrink, never below the final total), and the final counts are exact: per layer as the
method's target, in total round((1 - s) * N); (3) the same seed gives identical weights and masks;
(4) a state_dict round trip through torch.save/torch.load(weights_only=True) in the middle of
training resumes identically; (5) the training FLOPs that `expected_densities`, asked before
training, foresees (per layer, each weighted by its FLOPs: engine/estimate.py `plan_flops`, what
`--match flops` prices) equal what the FLOPs ledger charges, to 1% over the run and to 1% of a
dense epoch in every epoch (a dense-gradient step's weight gradient priced at its epoch's average
density: a per-epoch plan cannot place it inside the epoch); a method that trains fixed masks is priced at `counts_at` without
its setup, so its target must be that (except under global). A method whose per-layer FLOPs no
plan foresees (`Method.flops_unpredictable`: SNFS; GMP, one-shot, GaP under global) must be
refused by `--match flops`, and still foresee the total density of every epoch to 0.01.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gapbench.engine.estimate import plan_flops, trains_fixed_masks
from gapbench.engine.flops import FlopsLedger, measure_forward_flops
from gapbench.engine.loop import StepLoop
from gapbench.engine.trainer import seed_everything, slice_batch
from gapbench.errors import UserError
from gapbench.registry import get_method_class
from gapbench.sparse.distribution import total_keep
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context, Method, Plan
from gapbench.sparse.pattern import Pattern


class ConformanceError(AssertionError):
    """A method broke one of the promises in this module's docstring."""


@dataclass
class ConformanceReport:
    method: str
    steps: int
    final_counts: dict[str, int]
    target_counts: dict[str, int]
    checks: list[str] = field(default_factory=list)
    flops_ratio: float | None = None  # priced / charged training FLOPs (None: not priceable)


class SmallNet(nn.Module):
    """Conv + batch norm + linear layers: every kind of tensor a task can hand a method."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)  # rows of 36 weights: fit 2:4 and 4x4 blocks
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
BATCH = 8


class _RecordingLedger(FlopsLedger):
    """The FLOPs ledger, also recording every step: its charge, forward cost per sample, samples,
    dense weight gradient or not, and the alive weights."""

    def __init__(self, per_sample: dict[str, float], masks: MaskSet):
        super().__init__(per_sample, masks)
        self.charges: list[float] = []
        self.steps: list[tuple[float, float, bool]] = []
        self.alive: list[int] = []

    def charge_step(self, samples: float, dense_weight_grad: bool = False) -> None:
        before = self.train_flops
        super().charge_step(samples, dense_weight_grad)
        self.charges.append(self.train_flops - before)
        self.steps.append((self._forward_cost(), samples, dense_weight_grad))
        self.alive.append(self.masks.alive())

    def epoch_charge(self, first: int, stop: int) -> float:
        """The charge of steps [first, stop) with each dense weight gradient priced at the
        epoch's average forward, as a per-epoch plan prices it (engine/estimate.py plan_flops):
        where inside an epoch a dense-gradient step falls, expected_densities cannot say."""
        steps = self.steps[first:stop]
        average = sum(f for f, _, _ in steps) / max(1, len(steps))
        return sum(
            n * (3 * f + (self._dense_fwd - average if dense else 0.0)) for f, n, dense in steps
        )


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


class Harness:
    """One model + optimizer + method, driven by gapbench's StepLoop as the Trainer drives it."""

    def __init__(
        self,
        method_cls: type[Method],
        params: dict[str, Any],
        sparsity: float,
        distribution: str,
        seed: int,
        epochs: int,
        steps_per_epoch: int,
        optimizer: str,
        pattern: str = "unstructured",
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
        example = torch.zeros(1, 4, 8, 8)
        flops, _ = measure_forward_flops(self.model, lambda: self.model(example))
        self.per_sample = {k: float(v) for k, v in flops.items()}
        self.method: Method = method_cls(**params)
        self.seed, self.steps_per_epoch = seed, steps_per_epoch
        self.flops_ratio: float | None = None  # set by check (5)
        comparison = Budget(epochs, steps_per_epoch, BATCH)
        self.plan = self.method.plan(comparison)
        self.epochs = self.plan.epochs
        budget = Budget(self.epochs, steps_per_epoch, BATCH)
        ctx = Context(
            model=self.model,
            optimizer=self.opt,
            masks=self.masks,
            budget=budget,
            sparsity=sparsity,
            distribution=distribution,
            seed=seed,
            forward_order=PRUNABLE,
            recalibrate_bn=self._recalibrate,
            probe_loss=self._probe_loss,
            pattern=Pattern.parse(pattern),
            probe_ones=lambda: self.model(
                torch.ones(1, 4, 8, 8, dtype=next(self.model.parameters()).dtype)
            ),
            **{k: True for k in ("probe_temperature",) if k in Context.__dataclass_fields__},
        )
        self.method.setup(ctx)
        self.expected = (
            [self.method.expected_densities(e) for e in range(self.epochs)]
            if self.method.sparse
            else []
        )
        self.recorder = _RecordingLedger(self.per_sample, self.masks)
        self.loop = StepLoop(
            self.model,
            self.opt,
            self.masks,
            self.method,
            self.plan,
            _loss,
            total_steps=budget.total_steps,
            lr_kind="cosine",
            warmup=2,
            grad_clip=5.0,
            ledger=self.recorder,
        )

    def _probe_loss(
        self,
        model: nn.Module | None = None,
        part: tuple[int, int] | None = None,
        temperature: float | None = None,
        samples_per_class: int = 0,
    ) -> torch.Tensor:
        """The Trainer's probe on one fixed batch: a slice `part=(i, k)`, logits / temperature."""
        if samples_per_class:
            raise UserError("the conformance harness gives no class-balanced probe batch")
        model = self.model if model is None else model
        x, y = self._batch(20_000)
        if part is not None:
            x, y = slice_batch((x, y), *part)  # the Trainer's own slicing
        model.train()
        return nn.functional.cross_entropy(model(x) / (temperature or 1.0), y)

    def _batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + index)
        return torch.randn(BATCH, 4, 8, 8, generator=gen), torch.randint(
            0, 4, (BATCH,), generator=gen
        )

    def _recalibrate(self, batches: int) -> None:
        with torch.no_grad():
            for i in range(min(batches, 3)):
                self.model(self._batch(10_000 + i)[0])

    def train_epochs(self, start: int, stop: int, on_step=None) -> None:
        for epoch in range(start, stop):
            seed_everything(self.seed * 100_003 + epoch)  # as the Trainer does at every epoch
            first = epoch * self.steps_per_epoch
            batches = (self._batch(first + i) for i in range(self.steps_per_epoch))
            self.loop.run_epoch(
                epoch, batches, on_step=(lambda: on_step(self)) if on_step else None
            )

    def finish(self) -> None:
        self.method.finish()

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "method": self.method.state_dict(),
            "step": self.loop.step,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.loop.step = state["step"]


def _check_step(run: Harness, previous: dict[str, int], final_total: int) -> None:
    m = run.method
    if not m.sparse:
        return
    for name in run.masks.names:
        mask = run.masks.masks[name]
        param = run.masks.params[name]
        if torch.any(param.detach()[~mask] != 0):
            raise ConformanceError(
                f"{m.name}: step {run.loop.step}: pruned weights of {name} are not zero"
            )
        for key, value in run.opt.state.get(param, {}).items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and torch.any(value[~mask] != 0)
            ):
                raise ConformanceError(
                    f"{m.name}: step {run.loop.step}: optimizer state {key!r} of pruned entries of {name} is not zero"
                )
        count, target, numel = int(mask.sum()), m.target_counts[name], mask.numel()
        if count != run.masks.count(name):
            raise ConformanceError(
                f"{m.name}: {name}'s cached count is stale (masks changed behind MaskSet)"
            )
        if m.redistributes:
            pass  # layer counts move at a fixed total: checked below
        elif m.gradual:
            if count > previous.get(name, numel):
                raise ConformanceError(
                    f"{m.name}: step {run.loop.step}: {name} grew to {count} weights; a gradual "
                    "method must only shrink"
                )
        elif count not in (target, numel):
            raise ConformanceError(
                f"{m.name}: step {run.loop.step}: {name} keeps {count} weights, target is {target} "
                f"(or {numel} while dense)"
            )
        previous[name] = count
    if m.gradual and run.masks.alive() < final_total:
        raise ConformanceError(
            f"{m.name}: step {run.loop.step}: fewer weights alive than the target"
        )
    if m.redistributes and run.masks.alive() != final_total:
        raise ConformanceError(
            f"{m.name}: step {run.loop.step}: {run.masks.alive()} weights alive, the target is {final_total}"
        )
    pattern = m.ctx.pattern
    for name in run.masks.names:
        mask = run.masks.masks[name]
        if run.masks.is_dense(name):
            continue
        if pattern.kind == "nm" and m.gradual:  # on the way to N:M every group holds as many
            groups = mask.reshape(-1, pattern.m).sum(1)
            inside = bool((groups == groups[0]).all())
        else:
            inside = pattern.holds(mask)
        if not inside:
            raise ConformanceError(
                f"{m.name}: step {run.loop.step}: {name} is outside --pattern {pattern}"
            )


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
    pattern: str = "unstructured",
) -> ConformanceReport:
    """Run all conformance checks on `method`; raise ConformanceError on the first violation."""
    cls = get_method_class(method) if isinstance(method, str) else method
    params = dict(params or {})
    shape = Pattern.parse(pattern)
    if shape.fixed_sparsity is not None:
        sparsity = shape.fixed_sparsity
    if cls.sparse:
        cls.check_distribution(distribution, shape)
        cls(**params).check_pattern(shape)

    def make() -> Harness:
        return Harness(
            cls,
            copy.deepcopy(params),
            sparsity,
            distribution,
            seed,
            epochs,
            steps_per_epoch,
            optimizer,
            pattern,
        )

    run = make()
    final_total = total_keep([run.masks.numel(n) for n in PRUNABLE], sparsity)
    if shape.kind == "block":
        final_total = round(final_total / shape.unit) * shape.unit
    previous: dict[str, int] = {}
    run.train_epochs(0, run.epochs, on_step=lambda r: _check_step(r, previous, final_total))
    run.finish()
    final = {n: run.masks.count(n) for n in run.masks.names}
    if cls.sparse:
        if final != run.method.target_counts:
            raise ConformanceError(
                f"{cls.name}: final keep counts {final} differ from the target {run.method.target_counts}"
            )
        if sum(final.values()) != final_total:
            raise ConformanceError(
                f"{cls.name}: {sum(final.values())} weights alive, sparsity {sparsity} needs exactly {final_total}"
            )
        _check_step(run, {}, final_total)
    report = ConformanceReport(cls.name, run.loop.step, final, dict(run.method.target_counts))
    report.checks += [
        "masked weights and optimizer state zero after every step",
        "exact final counts",
    ]
    if cls.sparse:
        report.checks.append(_check_flops_pricing(run, cls, distribution))
        report.flops_ratio = run.flops_ratio

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


def _check_flops_pricing(run: Harness, cls: type[Method], distribution: str) -> str:
    """Check (5); returns what was checked."""
    name, spe, names = cls.name, run.steps_per_epoch, run.masks.names
    total = sum(run.masks.numel(n) for n in names)
    for epoch, densities in enumerate(run.expected):  # the total, which every method foresees
        foreseen = sum(densities[n] * run.masks.numel(n) for n in names) / total
        steps = run.recorder.alive[epoch * spe : (epoch + 1) * spe]
        measured = sum(steps) / max(1, len(steps)) / total
        if abs(foreseen - measured) > 0.01:
            raise ConformanceError(
                f"{name}: expected_densities foresees density {foreseen:.3f} in epoch {epoch}, the run had {measured:.3f} (--match flops would misprice it)"
            )
    if reason := cls.flops_unpredictable(distribution):
        from gapbench.matching import require_priceable

        try:
            require_priceable(cls, distribution)
        except UserError:
            run.flops_ratio = None
            return f"per-layer FLOPs not foreseeable ({reason}): --match flops refuses it"
        raise ConformanceError(f"{name}: --match flops does not refuse it, yet {reason}")
    if trains_fixed_masks(cls) and distribution != "global":
        priced = run.method.counts_at(run.method.ctx.sparsity)
        if priced != run.method.target_counts:
            raise ConformanceError(
                f"{name}: trains fixed masks, so --match flops prices it at counts_at(sparsity) "
                f"{priced}, but its target is {run.method.target_counts}"
            )
    predicted = [
        plan_flops(run.per_sample, [densities], _shifted(run.plan, epoch * spe), spe, BATCH)
        for epoch, densities in enumerate(run.expected)
    ]
    charged = [run.recorder.epoch_charge(e * spe, (e + 1) * spe) for e in range(run.epochs)]
    dense_epoch = 3 * sum(run.per_sample.values()) * BATCH * spe
    for epoch, (p, c) in enumerate(zip(predicted, charged)):
        if abs(p - c) > 0.01 * dense_epoch:
            raise ConformanceError(
                f"{name}: expected_densities prices epoch {epoch} at {p / dense_epoch:.3f} of a "
                f"dense epoch's FLOPs, the ledger charged {c / dense_epoch:.3f} (per layer, "
                "weighted by FLOPs: --match flops would misprice it)"
            )
    ratio = sum(predicted) / sum(charged)
    if abs(ratio - 1) > 0.01:
        raise ConformanceError(
            f"{name}: expected_densities prices the run at {ratio:.4f}x the FLOPs the ledger "
            "charged (per layer, weighted by FLOPs: --match flops would misprice it)"
        )
    run.flops_ratio = sum(predicted) / sum(run.recorder.charges)  # against the raw charge
    return f"expected_densities prices the FLOPs the ledger charges ({run.flops_ratio:.4f}x)"


def _shifted(plan: Plan, offset: int) -> Plan:
    """`plan` seen from step `offset` (one epoch priced on its own)."""
    return Plan(plan.epochs, dense_grad=lambda step: plan.dense_grad(step + offset))


def _assert_same(a: Harness, b: Harness, name: str, what: str) -> None:
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        if not torch.equal(x, y):
            raise ConformanceError(f"{name}: {what} differ in {key}")
    if a.masks.checksum() != b.masks.checksum():
        raise ConformanceError(f"{name}: {what} end with different masks")
