"""From command-line choices to resolved runs, validated before the first one trains.

A RunSpec is one run with every default filled in: the profile's epochs and batch, the method's
parameters after the profile's and the user's overrides. Its identity (and so its run id) is made
of these resolved values, so `--epochs 20` on a profile whose default is 20 is the same run, and a
changed default is a new one. `resolve_grid` builds and checks the whole grid (parameters,
budgets, distributions, data root, device) up front: a mistake fails in seconds, not hours into
a sweep.

The data a run read is part of its identity through `data_identity`: the data root's folder name,
its file count and total size, and a fingerprint over every file's relative name and size. Records
and boards are shared, so they never hold the user's absolute path; and the same data set copied
to another machine or folder gives the same run ids.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gapbench.errors import UserError
from gapbench.registry import get_method_class, get_task_class
from gapbench.report.records import SCHEMA_VERSION, run_id
from gapbench.sparse.distribution import DISTRIBUTIONS
from gapbench.sparse.method import Budget, Method
from gapbench.sparse.pattern import Pattern
from gapbench.sparse.selection import format_dense_layers, parse_dense_layers
from gapbench.task import Profile, Task


def _data_files(root: Path) -> list[tuple[str, int]]:
    """(relative name, size) of every non-hidden file under root, links followed, sorted."""
    if root.is_file():
        return [(root.name, root.stat().st_size)]
    files = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:  # a dangling link: not data the run can read
                continue
            files.append((path.relative_to(root).as_posix(), size))
    return sorted(files)


@lru_cache(maxsize=16)
def _fingerprint(resolved: str) -> dict[str, object]:
    files = _data_files(Path(resolved))
    digest = hashlib.sha256()
    for name, size in files:
        digest.update(f"{name}\0{size}\n".encode())
    return {
        "name": Path(resolved).name,
        "files": len(files),
        "bytes": sum(size for _, size in files),
        "fingerprint": digest.hexdigest()[:16],
    }


def data_identity(data_root: str | Path) -> dict[str, object]:
    """What identifies the data under `data_root` without naming where it lives: its folder
    name, file count, total bytes and a hash over relative file names and sizes.

    Only names and sizes are read (one stat per file; seconds even for ImageNet's 1.3M files,
    once per process), never contents: a file edited in place at the same size is not noticed."""
    return dict(_fingerprint(str(Path(data_root).resolve())))


@dataclass(frozen=True)
class RunSpec:
    """One resolved run. Everything but `data_root` (a location) is part of its identity; the
    data there enters the identity as `data_identity(data_root)`."""

    task: str
    profile: str
    dataset: str
    method: str
    params: dict[str, Any]
    sparsity: float
    distribution: str
    dense_layers: str
    seed: int
    epochs: int
    batch_size: int
    precision: str = "fp32"
    max_steps: int | None = None
    pattern: str = "unstructured"
    budget_mode: str = "epochs"  # epochs | flops
    multiplier: float = 1.0
    match_ref: str = ""  # flops mode: the reference method and its epochs
    match_epochs: int = 0
    # FLOPs matching where no whole number of epochs lands within 5%: the run's optimizer steps
    # (it ends inside epoch `epochs`). Left out of the identity when unset, so whole-epoch runs
    # keep their ids.
    train_steps: int | None = None
    data_root: str | None = field(default=None, compare=False)
    match_target_flops: float = field(default=0.0, compare=False)  # recorded, not identity

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("data_root")
        d.pop("match_target_flops")
        d["data"] = data_identity(self.data_root) if self.data_root else None
        d["schema"] = SCHEMA_VERSION
        if d["train_steps"] is None:
            d.pop("train_steps")
        return d

    @property
    def run_id(self) -> str:
        return run_id(self.identity())

    def label(self) -> str:
        return (
            f"{self.task} {self.method} sparsity={self.sparsity} {self.distribution} "
            f"seed={self.seed} epochs={self.epochs}"
            + (f" ({self.train_steps} steps)" if self.train_steps is not None else "")
        )

    def build_method(self) -> Method:
        return get_method_class(self.method)(**self.params)


@dataclass
class GridRequest:
    """What the user asked for; lists span the grid."""

    task: str
    methods: list[str]
    sparsities: list[float] = field(default_factory=lambda: [0.9])
    distributions: list[str] = field(default_factory=lambda: ["uniform"])
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str = "tiny"
    epochs: int | None = None
    batch_size: int | None = None
    dense_layers: str | None = None
    method_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: str | None = None
    max_steps: int | None = None
    precision: str = "fp32"
    multipliers: list[float] = field(default_factory=lambda: [1.0])
    pattern: str = "unstructured"
    sparsities_given: bool = False  # the user chose --sparsity (else the default 0.9)


def resolve_params(
    cls: type[Method], profile: Profile, user: dict[str, Any]
) -> tuple[Method, dict[str, Any]]:
    """The method's parameters: class defaults < profile defaults < the user's."""
    merged = {**profile.defaults_for(cls.name, user), **user}
    method = cls(**merged)
    return method, method.params.as_dict()


def resolve_epochs(method: Method, profile: Profile, user_epochs: int | None) -> int:
    """--epochs, else the budget the method's own schedule implies (a GaP profile that fixes its
    fine-tune length), else the profile's default."""
    if user_epochs is not None:
        return user_epochs
    implied = getattr(method, "implied_epochs", lambda: None)()
    return implied if implied is not None else profile.epochs


def _check_numbers(request: GridRequest) -> None:
    for s in request.sparsities:
        if not 0.0 <= s < 1.0:
            raise UserError(f"sparsity {s} is outside [0, 1); pass e.g. --sparsity 0.9")
    for d in request.distributions:
        if d not in DISTRIBUTIONS:
            raise UserError(f"unknown distribution {d!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    for name, value in (
        ("--epochs", request.epochs),
        ("--batch-size", request.batch_size),
        ("--max-steps", request.max_steps),
    ):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if request.precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"--precision {request.precision!r}: choose fp32, bf16 or fp16")
    for m in request.multipliers:
        if not m > 0:
            raise UserError(f"--multiplier must be positive, got {m}")


def _check_data(task: Task, profile: Profile, data_root: str | None) -> None:
    if data_root is not None and not Path(data_root).exists():
        raise UserError(f"--data-root {data_root} does not exist; point it at the data set folder")
    if data_root is None and profile.needs_data_root:
        raise UserError(
            f"profile {profile.name!r} of task {task.name!r} needs --data-root ({profile.dataset})"
        )


def resolve_grid(request: GridRequest) -> list[RunSpec]:
    """Every run of the grid, resolved and validated; duplicates removed, order kept."""
    pattern = Pattern.parse(request.pattern)
    if pattern.fixed_sparsity is not None:  # N:M fixes the sparsity
        fixed = round(pattern.fixed_sparsity, 6)
        if request.sparsities_given and request.sparsities != [fixed]:
            raise UserError(
                f"--pattern {pattern} means sparsity {fixed}; drop --sparsity or pass {fixed}"
            )
        request.sparsities = [fixed]
    _check_numbers(request)
    task = get_task_class(request.task)()
    profile = task.profile(request.profile)
    _check_data(task, profile, request.data_root)
    if request.dense_layers is not None:
        parse_dense_layers(request.dense_layers)
    unknown = sorted(set(request.method_args) - set(request.methods))
    if unknown:
        raise UserError(f"--method-arg for {', '.join(unknown)}, which is not in --methods")
    specs: list[RunSpec] = []
    for multiplier in request.multipliers:
        for method_name in request.methods:
            cls = get_method_class(method_name)
            method, params = resolve_params(cls, profile, request.method_args.get(method_name, {}))
            epochs = resolve_epochs(method, profile, request.epochs)
            if multiplier != 1.0:  # RigL-style training multipliers: every schedule stretches
                epochs = max(1, round(epochs * multiplier))
                method = cls(**method.params.scaled(multiplier))
                params = method.params.as_dict()
            method.plan(Budget(epochs))  # raises if the budget cannot hold the schedule
            for seed in request.seeds:
                for sparsity in request.sparsities if cls.sparse else [0.0]:
                    for dist in request.distributions if cls.sparse else ["dense"]:
                        if cls.sparse:
                            cls.check_distribution(dist, pattern)
                            method.check_pattern(pattern)
                        spec_dense = request.dense_layers or profile.dense_layers_for(dist)
                        spec = RunSpec(
                            task=request.task,
                            profile=request.profile,
                            dataset=profile.dataset,
                            method=method_name,
                            params=params,
                            sparsity=sparsity,
                            distribution=dist,
                            dense_layers=format_dense_layers(parse_dense_layers(spec_dense)),
                            seed=seed,
                            epochs=epochs,
                            batch_size=request.batch_size or profile.batch_size,
                            precision=request.precision,
                            max_steps=request.max_steps,
                            multiplier=multiplier,
                            pattern=str(pattern) if cls.sparse else "unstructured",
                            data_root=request.data_root,
                        )
                        if spec not in specs:
                            specs.append(spec)
    return specs
