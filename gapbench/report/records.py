"""Run records: one JSON file per run, written atomically, named by the hash of the resolved run.

A record is built from values (the resolved RunSpec identity and the Trainer's RunResult); the
leaderboard and plots read records only. `load_records` skips a broken or incomplete file with a
warning that names it, so one bad file never takes a board down.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gapbench.report.atomic import atomic_write_text

SCHEMA_VERSION = 2
RECORDS_DIR = "records"


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False, default=float) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"missing fields {', '.join(missing[:5])}")
        if data["schema"] != SCHEMA_VERSION:
            raise ValueError(f"schema {data['schema']} (this gapbench reads {SCHEMA_VERSION})")
        return cls(**{n: data[n] for n in names})

    @property
    def file_name(self) -> str:
        return (
            f"{self.task}-{self.method}-s{self.sparsity}-{self.distribution}-"
            f"seed{self.seed}-{self.run_id}.json"
        )


def records_dir(out: Path) -> Path:
    return Path(out) / RECORDS_DIR


def write_record(record: RunRecord, out: Path) -> Path:
    path = records_dir(out) / record.file_name
    atomic_write_text(record.to_json(), path)
    return path


def find_record(out: Path, rid: str) -> RunRecord | None:
    for path in records_dir(out).glob(f"*-{rid}.json"):
        try:
            return RunRecord.from_dict(json.loads(path.read_text()))
        except (ValueError, json.JSONDecodeError, TypeError):
            return None
    return None


def load_records(out: Path) -> list[RunRecord]:
    """Every readable record under out/records; broken ones are skipped with a named warning."""
    records = []
    for path in sorted(records_dir(out).glob("*.json")):
        try:
            records.append(RunRecord.from_dict(json.loads(path.read_text())))
        except (ValueError, json.JSONDecodeError, TypeError, KeyError) as exc:
            print(f"gapbench: warning: skipping record {path}: {exc}", file=sys.stderr)
    return records
