"""Training budget: epochs and steps, and conversion of schedule points (fractions of the run,
epoch counts) into optimizer steps from the real steps per epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Budget:
    epochs: int
    steps_per_epoch: int
    max_steps: int | None = None  # smoke runs stop early; the schedule still spans `epochs`

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def fraction_to_step(self, fraction: float) -> int:
        return int(round(fraction * self.total_steps))

    def epoch_to_step(self, epoch: float) -> int:
        return int(round(epoch * self.steps_per_epoch))

    def as_dict(self) -> dict:
        return {**asdict(self), "total_steps": self.total_steps}
