"""Run records: one JSON file per run, written atomically, keyed by a hash of its config."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gapbench.errors import UserError

if TYPE_CHECKING:
    from gapbench.train import Trainer

SCHEMA_VERSION = 1


def run_id(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _git_commit() -> str | None:
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
    import torchvision

    from gapbench import __version__

    return {
        "gapbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def make_record(
    trainer: Trainer,
    metrics: dict[str, dict[str, float]],
    history: list[dict],
    steps: int,
    wall_time: float,
    stopped: bool,
) -> dict[str, Any]:
    cfg, s, masks, method = trainer.config, trainer.setup, trainer.masks, trainer.method
    per_layer = {n: {"numel": masks.numel(n), "alive": masks.count(n)} for n in masks.names}
    n_params = sum(p.numel() for p in trainer.model.parameters())
    pruned = masks.total() - masks.alive() if method.sparse else 0
    return {
        "schema": SCHEMA_VERSION,
        "run_id": trainer.run_id,
        "status": "stopped_early" if stopped else "complete",
        "task": cfg.task,
        "profile": cfg.profile,
        "dataset": s.dataset,
        "method": cfg.method,
        "method_params": method.params,
        "sparsity": cfg.sparsity if method.sparse else 0.0,
        "target_sparsity": cfg.sparsity,
        "distribution": cfg.distribution if method.sparse else "dense",
        "seed": cfg.seed,
        "config": cfg.identity(),
        "metric": s.metric,
        "metrics": metrics["test"],  # test split, final epoch (never best-on-test)
        "val_metrics": metrics["val"],
        "budget": {
            **trainer.budget.as_dict(),
            "comparison_epochs": trainer.budget_epochs,
            "trainer_epochs": trainer.trainer_epochs,
            "steps_run": steps,
            "batch_size": cfg.batch_size,
            "world_size": trainer.dist.world_size,
        },
        "sparsity_policy": {**s.policy, "prunable_tensors": len(masks.names)},
        "measured_sparsity": (1.0 - masks.alive() / masks.total()) if method.sparse else 0.0,
        "prunable_params": masks.total(),
        "alive_prunable_params": masks.alive() if method.sparse else masks.total(),
        "per_layer": per_layer,
        "params_total": n_params,
        "params_alive": n_params - pruned,
        "train_flops": trainer.ledger.train_flops,
        "dense_train_flops": trainer.ledger.dense_train_flops,
        "inference_flops": trainer.ledger.inference_flops(),
        "dense_inference_flops": trainer.ledger.dense_inference_flops(),
        "flops_convention": "2 FLOPs per multiply-add; conv/linear layers only; per sample",
        "method_log": method.log,
        "history": history,
        "wall_time_s": round(wall_time, 2),
        "device": str(trainer.device),
        "versions": versions(),
        "git_commit": _git_commit(),
        "task_extra": s.extra,
    }


def record_path(record: dict[str, Any], out: Path) -> Path:
    name = (
        f"{record['task']}-{record['method']}-s{record['target_sparsity']}-"
        f"{record['distribution']}-seed{record['seed']}-{record['run_id']}.json"
    )
    return out / "runs" / name


def write_record(record: dict[str, Any], out: Path) -> Path:
    path = record_path(record, out)
    atomic_write_text(json.dumps(record, indent=1, sort_keys=True, default=float) + "\n", path)
    return path


def find_record(out: Path, rid: str) -> dict[str, Any] | None:
    for path in (out / "runs").glob(f"*-{rid}.json"):
        return json.loads(path.read_text())
    return None


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every record under out/runs; a corrupt file is a clear error, not a silent skip."""
    records = []
    for path in sorted((out / "runs").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise UserError(f"record {path} is not valid JSON ({exc}); delete or fix it") from exc
    return records
