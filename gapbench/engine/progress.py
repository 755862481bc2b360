"""What a training run says while it trains: one line per epoch and one per method event.

Why here and not in the methods: the methods already keep what they did in `method.log`
(GaP's grow schedule and partition densities, the `updates` of RigL, SET, SNFS and GMP), so the
trainer reads what is new in that log after each epoch and says it; no method knows about logging.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from gapbench.logs import format_duration


def epoch_line(
    label: str,
    epoch: int,
    total: int,
    entry: dict[str, Any],
    lr: float,
    step_s: float | None,
    elapsed_s: float,
    eta_s: float,
) -> str:
    """'<label> epoch 3/10: loss 0.4213, lr 0.05, density 0.1, step 12.3 ms, elapsed 0:41,
    eta 1:35'."""
    loss = entry.get("train_loss")
    parts = [
        f"loss {loss:.4f}" if loss is not None else "loss n/a",
        f"lr {lr:.4g}",
        f"density {1.0 - entry.get('sparsity', 0.0):.4f}",
        f"step {1000 * step_s:.1f} ms" if step_s is not None else "step n/a",
        f"elapsed {format_duration(elapsed_s)}",
        f"eta {format_duration(eta_s)}",
    ]
    return f"{label} epoch {epoch + 1}/{total}: " + ", ".join(parts)


class MethodEvents:
    """Turns what a method appended to its log since the last call into lines."""

    def __init__(self, name: str, log: dict[str, Any]):
        self.name = name
        self.seen_updates = len(log.get("updates", []) or [])
        self.seen_schedule = len(log.get("schedule", []) or [])

    def new_lines(self, log: dict[str, Any], epoch: int) -> list[str]:
        lines: list[str] = []
        schedule = log.get("schedule") or []
        for entry in schedule[self.seen_schedule :]:
            lines.append(f"{self.name}: grow {self._what(log, entry)} for epochs {_span(entry)}")
        self.seen_schedule = len(schedule)
        if schedule and isinstance(schedule[-1], dict):
            last = schedule[-1]
            if list(last.get("epochs", []))[-1:] == [epoch]:
                densities = (log.get("partition_density") or [[]])[-1]
                lines.append(
                    f"{self.name}: prune {self._what(log, last)} after epoch {epoch + 1}; "
                    f"partition densities {densities}"
                )
        updates = log.get("updates") or []
        for entry in updates[self.seen_updates :]:
            if isinstance(entry, dict):
                facts = ", ".join(f"{k} {_short(v)}" for k, v in entry.items() if k != "step")
                lines.append(f"{self.name}: update at step {entry.get('step')}: {facts}")
        self.seen_updates = len(updates)
        return lines

    @staticmethod
    def _what(log: dict[str, Any], entry: dict[str, Any]) -> str:
        """'partition 2/4' when the grown tensors are one partition, else their count."""
        grown = list(entry.get("grown", []))
        partitions = [list(p) for p in log.get("partitions", [])]
        if grown in partitions:
            return f"partition {partitions.index(grown) + 1}/{len(partitions)}"
        return f"{len(grown)} tensors (step {entry.get('step')})"


def _span(entry: dict[str, Any]) -> str:
    epochs = list(entry.get("epochs", []))
    return "-".join(str(e + 1) for e in epochs) if epochs else "?"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rng_state() -> dict[str, Any]:
    """Every global random state a training step or a data loader draws from."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {  # plain types and tensors: checkpoints load with weights_only=True
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
