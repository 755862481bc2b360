"""`python -m gapbench export RUN_ID --format pt|safetensors --to FILE`.

Writes the run's final masked state dict (`weights`), its masks (parameter name -> bool; uint8 in
safetensors, which has no bool-free guarantee across readers) and metadata (run id, task, method,
sparsity, pattern; for N:M the group size and the axis the groups run along). Runs keep their final
weights when trained with `--save-weights` (off by default: sweeps need no weight files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gapbench.errors import UserError
from gapbench.report.atomic import atomic_torch_save, atomic_write_bytes
from gapbench.report.records import RunRecord, find_record
from gapbench.sparse.pattern import Pattern


def weights_path(out: Path, run_id: str) -> Path:
    return Path(out) / "weights" / f"{run_id}.pt"


def load_run(out: Path, run_id: str) -> tuple[RunRecord, dict[str, Any]]:
    record = find_record(out, run_id)
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


def export_run(out: Path, run_id: str, fmt: str, to: Path) -> Path:
    record, state = load_run(out, run_id)
    meta = metadata(record)
    if fmt == "pt":
        atomic_torch_save({**state, "metadata": meta}, Path(to))
        return Path(to)
    if fmt != "safetensors":
        raise UserError(f"--format {fmt!r}: choose pt or safetensors")
    try:
        from safetensors.torch import save
    except ImportError as exc:
        raise UserError("--format safetensors needs: pip install safetensors") from exc
    tensors = {f"weights/{k}": v.contiguous() for k, v in state["weights"].items()}
    tensors.update(
        {f"masks/{k}": v.to(torch.uint8).contiguous() for k, v in state["masks"].items()}
    )
    atomic_write_bytes(save(tensors, metadata={"gapbench": json.dumps(meta)}), Path(to))
    return Path(to)
