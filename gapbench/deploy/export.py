"""`python -m gapbench export RUN_ID --format pt|safetensors --to FILE`.

Writes the run's final masked state dict (`weights`), its masks (parameter name -> bool; uint8 in
safetensors, which has no bool-free guarantee across readers) and metadata (run id, task, method,
sparsity, pattern; for N:M the group size and the axis the groups run along). Runs keep their final
weights when trained with `--save-weights` (off by default: sweeps need no weight files).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from gapbench.errors import UserError
from gapbench.report.atomic import atomic_torch_save, atomic_write_bytes
from gapbench.report.records import RunRecord, find_record
from gapbench.sparse.pattern import Pattern


def weights_path(out: Path, run_id: str) -> Path:
    return Path(out) / "weights" / f"{run_id}.pt"


RUN_ID = re.compile(r"[0-9a-f]{12}")  # records.run_id: 12 hex digits, the end of a record's name


def load_run(out: Path, run_id: str) -> tuple[RunRecord, dict[str, Any]]:
    """A run's record and kept weights; one-line errors when either is missing."""
    # Not a run id (a glob such as '*', a path): it must not match some other run's record.
    record = find_record(out, run_id) if RUN_ID.fullmatch(run_id) else None
    if record is None:
        raise UserError(
            f"no record {run_id} under {Path(out) / 'records'}; check --out and the run id"
        )
    path = weights_path(out, run_id)
    if not path.is_file():
        raise UserError(
            f"run {run_id} kept no weights ({path}); rerun it with --save-weights --force"
        )
    return record, torch.load(path, map_location="cpu")


def metadata(record: RunRecord) -> dict[str, Any]:
    pattern = Pattern.parse(record.identity.get("pattern", "unstructured"))
    meta: dict[str, Any] = {
        "run_id": record.run_id,
        "task": record.task,
        "profile": record.profile,
        "method": record.method,
        "sparsity": record.sparsity,
        "distribution": record.distribution,
        "pattern": str(pattern),
        "metric": {record.metric: record.metrics.get(record.metric)},
    }
    if pattern.kind == "nm":
        meta["nm"] = {
            "n": pattern.n,
            "m": pattern.m,
            "groups": "M consecutive weights along each row of weight.view(out, -1)",
        }
    if pattern.kind == "block":
        meta["block"] = {"height": pattern.bh, "width": pattern.bw, "view": "weight.view(out, -1)"}
    return meta


def check_target(to: Path) -> None:
    """--to names a file to write: not a folder, not under a file."""
    if to.is_dir():
        raise UserError(f"--to {to} is a folder; pass a file name, e.g. --to {to / 'model.pt'}")
    for parent in to.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--to {to}: {parent} is a file, not a folder")
            break


def export_run(out: Path, run_id: str, fmt: str, to: Path) -> Path:
    """Write the run's weights, masks and metadata to `to` (atomically); returns `to`."""
    if fmt not in ("pt", "safetensors"):
        raise UserError(f"--format {fmt!r}: choose pt or safetensors")
    to = Path(to)
    check_target(to)
    record, state = load_run(out, run_id)
    try:
        _write(state, metadata(record), fmt, to)
    except OSError as exc:
        raise UserError(
            f"cannot write {to} ({exc.strerror or exc}); choose a writable --to"
        ) from None
    return to


def _write(state: dict[str, Any], meta: dict[str, Any], fmt: str, to: Path) -> None:
    if fmt == "pt":
        atomic_torch_save({**state, "metadata": meta}, to)
        return
    try:
        from safetensors.torch import save
    except ImportError as exc:
        raise UserError("--format safetensors needs: pip install safetensors") from exc
    tensors = {f"weights/{k}": v.contiguous() for k, v in state["weights"].items()}
    tensors.update(
        {f"masks/{k}": v.to(torch.uint8).contiguous() for k, v in state["masks"].items()}
    )
    atomic_write_bytes(save(tensors, metadata={"gapbench": json.dumps(meta)}), to)
