"""Optional experiment-tracker logging (`--log tensorboard,wandb,mlflow`), through each library's own
writer: TensorBoard's SummaryWriter, wandb (offline unless WANDB_MODE says otherwise) and MLflow
(a local file store under the run folder unless MLFLOW_TRACKING_URI is set).

Per epoch: train loss, sparsity, the density of each GaP partition and the mask turnover of the
epoch's RigL/SET/SNFS updates; at the end: the final test and validation metrics. Records remain
the source of truth: trackers are a view, and a tracker failing to import is a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gapbench.errors import UserError

BACKENDS = ("tensorboard", "wandb", "mlflow")


class Tracker:
    """Fans one stream of scalars out to the chosen backends."""

    def __init__(self, backends: list[str], folder: Path, name: str, config: dict[str, Any]):
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise UserError(f"--log {','.join(unknown)}: choose from {', '.join(BACKENDS)}")
        self.folder = Path(folder)
        self.writers: list[Any] = []
        for backend in backends:
            try:
                self.writers.append(getattr(self, f"_open_{backend}")(name, config))
            except ImportError as exc:
                raise UserError(
                    f"--log {backend} needs its package: pip install 'gapbench[tracking]' ({exc})"
                ) from exc

    def _open_tensorboard(self, name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.folder / "tensorboard"))
        writer.add_text("config", str(config))
        return ("tensorboard", writer)

    def _open_wandb(self, name: str, config: dict[str, Any]):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        run = wandb.init(
            project="gapbench",
            name=name,
            dir=str(self.folder),
            config=config,
            reinit="finish_previous",
        )
        return ("wandb", run)

    def _open_mlflow(self, name: str, config: dict[str, Any]):
        import mlflow

        if "MLFLOW_TRACKING_URI" not in os.environ:  # a local file store beside the run
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((self.folder / "mlruns").resolve().as_uri())
        mlflow.set_experiment("gapbench")
        run = mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:250] for k, v in config.items()})
        return ("mlflow", run)

    def log(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None}
        for kind, writer in self.writers:
            if kind == "tensorboard":
                for key, value in values.items():
                    writer.add_scalar(key, value, step)
                writer.flush()
            elif kind == "wandb":
                writer.log(values, step=step)
            else:
                import mlflow

                mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def close(self) -> None:
        for kind, writer in self.writers:
            if kind == "tensorboard":
                writer.close()
            elif kind == "wandb":
                writer.finish()
            else:
                import mlflow

                mlflow.end_run()
        self.writers = []


def epoch_scalars(
    history: dict[str, Any], method_log: dict[str, Any], step_range: tuple[int, int]
) -> dict[str, float]:
    """What an epoch contributes: loss, sparsity, partition densities, turnover of its updates."""
    out = {"train/loss": history.get("train_loss"), "sparsity/overall": history.get("sparsity")}
    densities = method_log.get("partition_density") or []
    if densities:
        for k, value in enumerate(densities[-1]):
            out[f"gap/partition_{k + 1}_density"] = value
    first, last = step_range
    turnover = [
        u["turnover"]
        for u in method_log.get("updates", [])
        if "turnover" in u and first <= u["step"] <= last
    ]
    if turnover:
        out["masks/turnover"] = sum(turnover) / len(turnover)
    return out
