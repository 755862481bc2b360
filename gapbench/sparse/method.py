"""The method contract: a method decides which weights are alive and when; the loop enforces it.

A method declares a `Plan` (how many epochs the trainer runs, its LR clock, which steps read dense
gradients or replace the optimizer step) and changes masks at its schedule points through
`MaskSet.set_mask` (directly or via `prune_to`). It never masks gradients or re-applies masks: the
loop's `MaskEnforcer` does that around every optimizer step, for every method alike.

Parameters are a frozen dataclass (`Method.Params`) validated when the method is built, so a bad
`--method-arg` fails before the first run of a sweep starts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.sparse.distribution import (
    DISTRIBUTIONS,
    global_counts_total,
    keep_counts,
    total_keep,
)
from gapbench.sparse.masks import MaskSet, random_masks
from gapbench.sparse.pattern import Pattern


# ---- parameters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """Base of a method's parameters. Subclass as `@dataclass(frozen=True)` with typed defaults;
    `Literal[...]` fields are choices. Override `check()` for rules across fields. Fields counted
    in epochs are listed in EPOCH_FIELDS: a training multiplier stretches them with the run."""

    EPOCH_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Raise UserError for combinations of values that make no sense."""

    @classmethod
    def parse(cls, key: str, raw: str) -> Any:
        """Type a command-line string by the field's annotation."""
        hints = typing.get_type_hints(cls)
        if key not in hints:
            names = ", ".join(f.name for f in fields(cls)) or "none"
            raise UserError(f"has no parameter {key!r}; it takes: {names}")
        return _from_string(key, raw, hints[key])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, multiplier: float) -> dict[str, Any]:
        """The parameters of a run `multiplier` times as long (epoch counts stretched; -1, meaning
        "the rest of the budget", stays)."""
        values = self.as_dict()
        for key in self.EPOCH_FIELDS:
            if values[key] > 0:
                values[key] = max(1, round(values[key] * multiplier))
        return values


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation; ints are accepted where floats are expected."""
    for option in _options(hint):
        if option is type(None) and value is None:
            return None
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    choices = [
        a for o in _options(hint) if typing.get_origin(o) is Literal for a in typing.get_args(o)
    ]
    if choices:
        raise UserError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
    raise UserError(f"{key} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    return " or ".join(getattr(o, "__name__", str(o)) for o in _options(hint)).replace(
        "NoneType", "none"
    )


def _from_string(key: str, raw: str, hint: Any) -> Any:
    for option in _options(hint):
        if option is type(None) and raw.lower() == "none":
            return None
        if typing.get_origin(option) is Literal and raw in typing.get_args(option):
            return raw
        if option is bool and raw.lower() in ("1", "true", "yes", "0", "false", "no"):
            return raw.lower() in ("1", "true", "yes")
        for cast in (int, float):
            if option is cast:
                try:
                    return cast(raw)
                except ValueError:
                    pass
        if option is str:
            return raw
    return _coerce(key, raw, hint)  # raises the one-line error


# ---- plan and context ------------------------------------------------------------------------
def never(step: int) -> bool:
    return False


@dataclass(frozen=True)
class Budget:
    """The run's length: epochs of `steps_per_epoch` optimizer steps of `samples_per_step`
    samples (the global batch: per-rank batch x ranks x accumulation)."""

    epochs: int
    steps_per_epoch: int = 1
    samples_per_step: int = 1
    workers: int = 1  # process groups training at once (multi-process P-GaP)
    # A budget that ends inside its last epoch (FLOPs matching where no whole number of epochs
    # lands within 5%): the run's optimizer steps; `epochs` is then the epochs it touches.
    steps: int | None = None

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.epochs * self.steps_per_epoch

    def fraction_to_step(self, fraction: float) -> int:
        return int(round(fraction * self.total_steps))

    def epoch_to_step(self, epoch: float) -> int:
        return int(round(epoch * self.steps_per_epoch))


# (position, length, peak scale) of the LR schedule at a step.
LrPoint = tuple[int, int, float]


@dataclass(frozen=True)
class Plan:
    """What a method asks of the loop. `epochs` is what the trainer runs (P-GaP on one device runs
    its workers one after another); `lr_clock(step)` gives the LR schedule's position, length and
    peak scale (None: one schedule over the run); `dense_grad(step)` marks steps whose unmasked
    gradients the method reads; `replaces_step(step)` marks steps whose optimizer step the mask
    update replaces (RigL). `points` holds the resolved schedule in steps, for the record;
    `data_epoch(epoch)` the epoch whose data order and dropout an epoch uses (P-GaP groups)."""

    epochs: int
    lr_clock: Callable[[int], LrPoint] | None = None
    dense_grad: Callable[[int], bool] = never
    replaces_step: Callable[[int], bool] = never
    points: dict[str, Any] = field(default_factory=dict)
    data_epoch: Callable[[int], int] | None = None  # epoch index that seeds the data order


@dataclass
class Context:
    """Everything a method may use. It holds the model and optimizer only so that masks can be
    changed together with weights and optimizer state; methods never see data or the loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    masks: MaskSet
    budget: Budget  # the trainer's epochs (plan.epochs), real steps per epoch
    sparsity: float
    distribution: str
    seed: int
    forward_order: list[str] = field(default_factory=list)  # prunable names, forward order
    partitions: dict[int, list[list[str]]] = field(default_factory=dict)  # the task's, by kappa
    dense_weights: list[str] = field(default_factory=list)  # conv/linear weights kept dense
    # Services the loop offers: re-estimate batch-norm statistics on a few training batches.
    recalibrate_bn: Callable[[int], None] | None = None
    # Probes for pruning at initialisation, never the data itself. probe_loss(model=None,
    # part=None, temperature=None, samples_per_class=0): the loss on one fixed training batch
    # (the same samples on every call of a setup, as the references score g and Hg on the same
    # data), train mode, graph kept, batch-norm running statistics left as they were. `model`
    # scores a copy of the model; `part=(i, k)` the i-th of k equal slices of the batch;
    # `temperature` the task's cross-entropy of logits / T (only where `probe_temperature`);
    # `samples_per_class` a class-balanced batch (only where `probe_classes`). probe_ones: the
    # forward output on all-ones inputs (SynFlow), statistics likewise left as they were.
    probe_loss: Callable[..., torch.Tensor] | None = None
    probe_ones: Callable[[], torch.Tensor] | None = None
    probe_temperature: bool = False  # the task can divide its logits by a temperature
    probe_classes: bool = False  # the task can give a batch of n samples per class
    workers: Any = None  # engine.distributed.WorkerGroups when the method runs on worker groups
    pattern: Pattern = field(default_factory=Pattern)  # where masks may keep weights


# ---- the method base class -------------------------------------------------------------------
class Method:
    """Base class. Subclasses are registered with `@register_method("name")` (gapbench.registry),
    set `description` (one line) and `reference` (paper / code followed), and override only the
    hooks they need."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    sparse: ClassVar[bool] = True  # False for the dense reference (no sparsity target applies)
    # True when per-layer counts shrink gradually towards the target (GMP): the conformance check
    # then accepts intermediate counts that only ever decrease.
    gradual: ClassVar[bool] = False
    # True when per-layer counts move between layers at a fixed total (SNFS): the conformance
    # check then holds the total exact instead of every layer.
    redistributes: ClassVar[bool] = False
    # False when per-layer counts move in ways no plan foresees (SNFS moves weights between
    # layers by momentum): per-layer FLOPs differ, so `--match flops` refuses the method.
    flops_predictable: ClassVar[bool] = True
    # True when `--distribution global` splits the budget across layers from *trained* weights
    # (GMP, one-shot, GaP re-rank at every prune): the split, and so the FLOPs, are unknown
    # before training, and `--match flops` refuses the method under global.
    global_split_from_training: ClassVar[bool] = False
    # Adam/AdamW keep one step count per tensor: an entry whose moments were zeroed at step t
    # (a regrown weight) is bias-corrected as if they were t steps old, so its first update is
    # ~3.2x a fresh Adam's. True: MaskSet keeps each zeroed entry's age and corrects its update
    # (masks.AdamAges). False: torch's behaviour (RigL's TF reference has it too).
    per_entry_adam_age: ClassVar[bool] = False
    distributions: ClassVar[tuple[str, ...]] = DISTRIBUTIONS
    patterns: ClassVar[tuple[str, ...]] = ("unstructured", "nm", "block")

    def __init__(self, params: Params | None = None, **values: Any):
        try:
            self.params = params if params is not None else self.Params(**values)
        except TypeError as exc:  # unknown keyword
            names = ", ".join(f.name for f in fields(self.Params)) or "none"
            raise UserError(f"method {self.name!r}: {exc}; it takes: {names}") from exc
        except UserError as exc:
            raise UserError(f"method {self.name!r}: {exc}") from exc
        self.log: dict[str, Any] = {}  # schedule facts and per-update statistics, recorded
        self.target_counts: dict[str, int] = {}

    @classmethod
    def worker_groups(self) -> int:
        """How many process groups the method can train at once (P-GaP: kappa); 1 = none."""
        return 1

    @classmethod
    def check_distribution(cls, distribution: str, pattern: Pattern | None = None) -> None:
        if distribution not in cls.distributions:
            raise UserError(
                f"method {cls.name!r} does not support --distribution {distribution}; "
                f"it takes: {', '.join(cls.distributions)}"
            )
        if pattern is not None and pattern.kind == "nm" and distribution != "uniform":
            raise UserError(
                f"--pattern {pattern} fixes every layer's count: use --distribution uniform"
            )

    @classmethod
    def flops_unpredictable(cls, distribution: str) -> str | None:
        """Why the FLOPs of this method under `distribution` cannot be priced before training
        (what `--match flops` and the conformance check act on); None when they can."""
        if not cls.flops_predictable or cls.redistributes:
            return "its per-layer counts move during training, and layers differ in FLOPs"
        if distribution == "global" and cls.global_split_from_training:
            return "under --distribution global it splits the layers' counts from trained weights"
        return None

    def check_pattern(self, pattern: Pattern) -> None:
        if pattern.kind not in self.patterns:
            raise UserError(
                f"method {self.name!r} does not support --pattern {pattern}; it takes: "
                f"{', '.join(self.patterns)}"
            )

    # ---- the contract ------------------------------------------------------------------------
    def plan(self, budget: Budget) -> Plan:
        """The loop's settings for a comparison budget of `budget.epochs` epochs. Pure: called
        up front to validate a sweep and again before training."""
        return Plan(epochs=budget.epochs)

    def setup(self, ctx: Context) -> None:
        """Initial masks. The base sets `target_counts` for the run's sparsity; sparse methods
        that start sparse call `draw_random_masks()` or prune here."""
        self.ctx, self.masks = ctx, ctx.masks
        self.target_counts = self.counts_at(ctx.sparsity) if self.sparse else ctx.masks.counts()
        if self.sparse and self.per_entry_adam_age:
            ctx.masks.track_adam_ages(ctx.optimizer)

    def on_epoch_start(self, epoch: int) -> None:
        """Mask changes before an epoch's first step (GaP grows a partition)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Mask changes after an epoch's last step (GaP prunes, SET rewires)."""

    def read_gradients(self, step: int) -> None:
        """On `plan.dense_grad` steps: gradients are still dense (unmasked) here."""

    def update(self, step: int) -> None:
        """After the optimizer step (or instead of it, on `plan.replaces_step` steps)."""

    def expected_densities(self, epoch: int) -> dict[str, float]:
        """Each prunable tensor's density during trainer epoch `epoch`, as the plan foresees it
        (after setup, before training): how `--match flops` prices a budget without trial runs."""
        return {n: self.target_counts[n] / self.masks.numel(n) for n in self.masks.names}

    def finish(self) -> None:
        """Settle at the target before evaluation (a run cut short may stop mid-schedule)."""
        for name in self.masks.names:
            if self.masks.count(name) != self.target_counts[name]:
                self.prune_to(name, self.target_counts[name])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically (tensors and plain containers only)."""
        return {"masks": self.masks.state_dict(), "log": self.log, "target": self.target_counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state["masks"])
        self.log = state["log"]
        self.target_counts = dict(state["target"])

    # ---- helpers -----------------------------------------------------------------------------
    def counts_at(self, sparsity: float, names: list[str] | None = None) -> dict[str, int]:
        """Exact per-layer keep counts at `sparsity` over `names` (all prunable tensors by
        default) under the run's distribution; `global` ranks the current weights."""
        names = list(names or self.masks.names)
        pattern = self.ctx.pattern
        if pattern.kind == "nm":
            return {n: pattern.count(self.masks.numel(n)) for n in names}
        shapes = [tuple(self.masks.params[n].shape) for n in names]
        scores = None
        if self.ctx.distribution == "global":
            scores = [self.magnitude(n) for n in names]
        counts = keep_counts(self.ctx.distribution, shapes, sparsity, scores)
        numels = [self.masks.numel(n) for n in names]
        return dict(zip(names, pattern.quantize(counts, numels, sum(counts))))

    def magnitude(self, name: str) -> torch.Tensor:
        """|w| with dead entries at -1, so a prune never revives them over a live weight."""
        w = self.masks.params[name].detach().abs()
        return w.masked_fill(~self.masks.masks[name], -1.0)

    def prune_to(self, name: str, k: int, score: torch.Tensor | None = None) -> int:
        """Keep exactly the top-k entries of `name` by |w| (or by `score`)."""
        w = self.masks.params[name]
        s = w.detach().abs() if score is None else score
        return self.masks.set_mask(name, self.ctx.pattern.select(s, k), self.ctx.optimizer)

    def prune_by_scores(
        self, scores: dict[str, torch.Tensor], sparsity: float | None = None
    ) -> None:
        """Keep the highest scores: one global ranking under `global` (as pruning-at-init papers
        do), the distribution's per-layer counts otherwise. Sets `target_counts`."""
        sparsity = self.ctx.sparsity if sparsity is None else sparsity
        names = self.masks.names
        if self.ctx.distribution == "global":
            numels = [self.masks.numel(n) for n in names]
            total = total_keep(numels, sparsity)
            found = global_counts_total([scores[n] for n in names], total)
            counts = dict(zip(names, self.ctx.pattern.quantize(found, numels, total)))
        else:
            counts = self.counts_at(sparsity)
        for name in names:
            self.prune_to(name, counts[name], score=scores[name])
        self.target_counts = counts

    def draw_random_masks(self, names: list[str] | None = None) -> None:
        """Exact-count random masks from one generator seeded by the run's seed (same on every
        data-parallel rank, reproducible on resume)."""
        names = list(names or self.masks.names)
        gen = torch.Generator().manual_seed(self.ctx.seed)
        if self.ctx.pattern.kind != "unstructured":  # random scores, selected inside the pattern
            for name in names:
                score = torch.rand(self.masks.params[name].shape, generator=gen)
                self.prune_to(name, self.target_counts[name], score=score)
            return
        shapes = [self.masks.params[n].shape for n in names]
        counts = [self.target_counts[n] for n in names]
        for name, mask in zip(names, random_masks(shapes, counts, gen)):
            self.masks.set_mask(name, mask, self.ctx.optimizer)
