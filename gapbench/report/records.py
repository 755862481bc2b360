"""Run records: one JSON file per run, written atomically, named by the hash of the resolved run.

A record is built from values (the resolved RunSpec identity and the Trainer's RunResult); the
leaderboard and plots read records only. Records are strict JSON (no NaN tokens). `load_records`
validates every file against the schema below as it reads it and skips an invalid one with one
warning naming the file and the field, so one bad file never takes a board down; a run id found
in two files is counted once, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gapbench.report.atomic import atomic_write_text, remove_stale_temps

SCHEMA_VERSION = 2
RECORDS_DIR = "records"
# complete: trained to the end and scored; stopped_early: a --max-steps smoke run (never on a
# board); diverged: the training loss went non-finite, the run was stopped (counted on the board,
# never averaged); no_metric: trained, but the evaluator gave no metric (status_reason says why).
STATUSES = ("complete", "stopped_early", "diverged", "no_metric")


class RecordError(ValueError):
    """A record that does not match the schema; the message names the field."""


def run_id(identity: dict[str, Any]) -> str:
    """Hash of the resolved run: spelling out a default is the same run, a changed one is not."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import torch
    import torchvision

    from gapbench import __version__

    return {
        "gapbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


@dataclass
class RunRecord:
    """Everything a reader needs to trust one number. Field order is the JSON's."""

    schema: int
    run_id: str
    status: str  # complete | stopped_early
    identity: dict[str, Any]  # the resolved run the id hashes
    task: str
    profile: str
    dataset: str
    method: str
    params: dict[str, Any]
    sparsity: float  # target over the prunable set (0 for dense)
    distribution: str
    seed: int
    epochs: int  # the comparison budget
    budget_mode: str  # epochs | flops
    multiplier: float
    metric: str  # primary metric; higher is better
    metrics: dict[str, float]  # test split, final epoch (never best-on-test)
    val_metrics: dict[str, float]
    measured_sparsity: float  # over the prunable set, exact integer counts
    prunable_params: int
    alive_prunable_params: int
    conv_linear_density: float  # alive / all conv+linear weights, dense end layers included
    params_total: int
    params_alive: int
    policy: dict[str, Any]
    per_layer: dict[str, dict[str, int]]
    budget: dict[str, Any]
    plan: dict[str, Any]
    flops: dict[str, float]
    method_log: dict[str, Any]
    history: list[dict[str, Any]]
    wall_time_s: float
    device: str
    versions: dict[str, str]
    git_commit: str | None
    task_extra: dict[str, Any]
    status_reason: str = ""  # why a run is diverged / no_metric (empty when complete)
    # The run's true cost in seconds (total_s from process start through evaluation, train_s =
    # wall_time_s, data_s, eval_s, attempts); `wall_time_s` keeps its old meaning: training only.
    timing: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Strict JSON: a non-finite float is written as null, never as a bare NaN token."""
        data = _finite_or_null(asdict(self))
        return json.dumps(data, indent=1, sort_keys=False, default=float, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Validate `data` against the schema (RecordError names the field) and build the record."""
        validate_record(data)
        names = [f.name for f in fields(cls)]
        return cls(**{n: data[n] for n in names if n in data})

    @property
    def file_name(self) -> str:
        return (
            f"{self.task}-{self.method}-s{self.sparsity}-{self.distribution}-"
            f"seed{self.seed}-{self.run_id}.json"
        )


_NUMBER = (int, float)
# Field -> accepted JSON types. Order is the dataclass's; `status_reason` may be absent (older
# schema-2 records were written before it existed).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "run_id": (str,),
    "status": (str,),
    "identity": (dict,),
    "task": (str,),
    "profile": (str,),
    "dataset": (str,),
    "method": (str,),
    "params": (dict,),
    "sparsity": _NUMBER,
    "distribution": (str,),
    "seed": (int,),
    "epochs": (int,),
    "budget_mode": (str,),
    "multiplier": _NUMBER,
    "metric": (str,),
    "metrics": (dict,),
    "val_metrics": (dict,),
    "measured_sparsity": _NUMBER,
    "prunable_params": (int,),
    "alive_prunable_params": (int,),
    "conv_linear_density": _NUMBER,
    "params_total": (int,),
    "params_alive": (int,),
    "policy": (dict,),
    "per_layer": (dict,),
    "budget": (dict,),
    "plan": (dict,),
    "flops": (dict,),
    "method_log": (dict,),
    "history": (list,),
    "wall_time_s": _NUMBER,
    "device": (str,),
    "versions": (dict,),
    "git_commit": (str, type(None)),
    "task_extra": (dict,),
    "status_reason": (str,),
    "timing": (dict,),
}
OPTIONAL_FIELDS = ("status_reason", "timing")
# FLOPs the leaderboard divides by: a scored record carries them, as finite numbers or null.
REQUIRED_FLOPS = ("train", "dense_train_budget", "inference", "dense_inference")
# Identity fields the record repeats at top level: both copies must agree.
IDENTITY_ECHO = ("task", "profile", "method", "sparsity", "distribution", "seed", "epochs")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_type(name: str, value: Any, types: tuple[type, ...]) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise RecordError(f"field {name!r} is {type(value).__name__}, expected {wanted}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"field {name!r} is not finite ({value})")


def _check_finite_numbers(name: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if not _is_number(value) or not math.isfinite(value):
            raise RecordError(f"field '{name}.{key}' is {value!r}, expected a finite number")


def validate_record(data: Any) -> None:
    """Raise RecordError naming the first field of `data` that breaks the record schema."""
    if not isinstance(data, dict):
        raise RecordError(f"a record is a JSON object, got {type(data).__name__}")
    for name, types in FIELD_TYPES.items():
        if name not in data:
            if name in OPTIONAL_FIELDS:
                continue
            raise RecordError(f"field {name!r} is missing")
        _check_type(name, data[name], types)
    if data["schema"] != SCHEMA_VERSION:
        raise RecordError(
            f"field 'schema' is {data['schema']} (this gapbench reads {SCHEMA_VERSION})"
        )
    if data["status"] not in STATUSES:
        raise RecordError(f"field 'status' is {data['status']!r}, expected one of {STATUSES}")
    if data["run_id"] != run_id(data["identity"]):
        raise RecordError("field 'run_id' is not the hash of field 'identity' (edited record?)")
    for name in IDENTITY_ECHO:
        if name in data["identity"] and data["identity"][name] != data[name]:
            raise RecordError(f"field {name!r} disagrees with 'identity.{name}'")
    if not 0.0 <= data["sparsity"] < 1.0:
        raise RecordError(f"field 'sparsity' is {data['sparsity']}, expected a value in [0, 1)")
    if data["status"] == "complete" and data["metric"] not in data["metrics"]:
        raise RecordError(f"field 'metrics.{data['metric']}' (the primary metric) is missing")
    _check_finite_numbers("metrics", data["metrics"])
    _check_finite_numbers("val_metrics", data["val_metrics"])
    flops = data["flops"]
    missing = [k for k in REQUIRED_FLOPS if k not in flops]
    if missing:
        raise RecordError(f"field 'flops.{missing[0]}' is missing")
    # null: a front end that keeps no FLOPs ledger (fairseq); the board shows those cells empty.
    _check_finite_numbers("flops", {k: flops[k] for k in REQUIRED_FLOPS if flops[k] is not None})


def _reject_constant(token: str) -> None:
    raise RecordError(f"not strict JSON: bare {token} token")


def parse_record(text: str) -> RunRecord:
    """A record from its JSON text; RecordError (or JSONDecodeError) says what is wrong."""
    return RunRecord.from_dict(json.loads(text, parse_constant=_reject_constant))


def records_dir(out: Path) -> Path:
    return Path(out) / RECORDS_DIR


def write_record(record: RunRecord, out: Path) -> Path:
    path = records_dir(out) / record.file_name
    atomic_write_text(record.to_json(), path)
    return path


def _read(path: Path) -> RunRecord:
    try:
        return parse_record(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordError(f"not UTF-8 text ({exc.reason})") from None


def find_record(out: Path, rid: str) -> RunRecord | None:
    """The valid record of run `rid` under `out`, if any (an invalid file counts as none)."""
    for path in sorted(records_dir(out).glob(f"*-{rid}.json")):
        try:
            record = _read(path)
        except (ValueError, OSError):
            continue
        if record.run_id == rid:
            return record
    return None


def _differences(a: RunRecord, b: RunRecord) -> list[str]:
    da, db = asdict(a), asdict(b)
    return sorted(k for k in da if da[k] != db.get(k))


def load_records(out: Path) -> list[RunRecord]:
    """Every valid record under out/records, each run id once.

    An invalid file is skipped with one warning naming it and the field; a run id found in
    several files (merged result folders) is kept from the first file in name order, with one
    warning saying whether the copies differ."""
    records: dict[str, tuple[Path, RunRecord]] = {}
    remove_stale_temps(records_dir(out))  # left by writers that were killed mid-write
    for path in sorted(records_dir(out).glob("*.json")):
        try:
            record = _read(path)
        except (ValueError, OSError) as exc:
            print(f"gapbench: warning: skipping record {path}: {exc}", file=sys.stderr)
            continue
        if record.run_id in records:
            first, kept = records[record.run_id]
            differ = _differences(kept, record)
            how = f"the copies differ in {', '.join(differ)}" if differ else "identical copies"
            print(
                f"gapbench: warning: run {record.run_id} is duplicated in {path} ({how}); "
                f"counted once, from {first}",
                file=sys.stderr,
            )
            continue
        records[record.run_id] = (path, record)
    return [record for _, record in records.values()]


def flatten_identity(identity: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested identity -> dotted keys (params.start), so differences can be named one by one."""
    flat: dict[str, Any] = {}
    for key, value in identity.items():
        if isinstance(value, dict):
            flat.update(flatten_identity(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
