"""Experiment trackers: the TensorBoard event file is written and read back; wandb (offline) and
MLflow (local store) receive the same scalars."""

import pytest
from helpers import cli


@pytest.mark.slow
def test_trackers_receive_per_epoch_scalars(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    code, out, err = cli(
        capsys, "run", "--task", "classification", "--profile", "digits", "--methods", "gap",
        "--epochs", "4", "--method-arg", "gap.rounds=1", "--method-arg", "gap.epochs_per_step=1",
        "--log", "tensorboard,wandb,mlflow", "--device", "cpu", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = (tmp_path / "tracking").iterdir()
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "sparsity/overall", "gap/partition_1_density", "test/top1"} <= set(tags)
    densities = [e.value for e in events.Scalars("gap/partition_1_density")]
    assert densities[0] == 1.0 and densities[1] < 0.2  # grown in epoch 0, pruned after
    assert len(events.Scalars("train/loss")) == 4
    assert list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    import mlflow

    mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
    runs = mlflow.search_runs(experiment_names=["gapbench"])
    assert len(runs) == 1 and "metrics.test_top1" in runs.columns
