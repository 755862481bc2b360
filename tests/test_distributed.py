"""Data-parallel training with two CPU processes (gloo): identical masks, one record."""

import json
import os
import subprocess
import sys


def test_two_ranks_train_with_identical_masks_and_write_one_record(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "gapbench",
        "run",
        "--task",
        "classification",
        "--methods",
        "gap",
        "--epochs",
        "4",
        "--method-arg",
        "gap.rounds=1",
        "--method-arg",
        "gap.epochs_per_step=1",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout[-1500:], result.stderr[-1500:])
    records = list((tmp_path / "runs").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["budget"]["world_size"] == 2
    assert record["budget"]["steps_per_epoch"] == 8  # 17 batches of 64, split over 2 ranks
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["metrics"]["top1"] > 10.0
