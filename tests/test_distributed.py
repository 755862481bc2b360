"""Data-parallel training: each rank reads its own share, masks agree, one record is written."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from gapbench.task import BuildRequest, make_loader
from tasks.translation.batching import TokenBatchLoader


def test_ranks_read_disjoint_shares_that_cover_the_epoch_once():
    data = TensorDataset(torch.arange(40))
    seen = []
    for rank in range(2):
        request = BuildRequest(
            None, None, seed=3, device=torch.device("cpu"), batch_size=4, rank=rank, world=2
        )
        loader = make_loader(data, request, shuffle=True)
        loader.sampler.set_epoch(1)
        seen.append([int(i) for (batch,) in loader for i in batch])
    assert len(seen[0]) == len(seen[1]) == 20
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(40))


def test_token_batches_are_sharded_by_rank():
    src = [[5] * (1 + i % 7) for i in range(60)]
    ids = []
    for rank in range(2):
        torch.manual_seed(0)  # the Trainer seeds every rank alike at every epoch
        loader = TokenBatchLoader(src, src, 40, shuffle=True, rank=rank, world=2)
        ids.append([int(i) for batch in loader for i in batch["ids"]])
    assert not set(ids[0]) & set(ids[1]) and len(ids[0]) > 0 and len(ids[1]) > 0


@pytest.mark.slow
def test_two_ranks_train_with_identical_masks_and_write_one_record(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "gapbench", "run", "--task", "classification", "--profile", "digits", "--methods", "gap", "--epochs", "4",
        "--method-arg", "gap.rounds=1", "--method-arg", "gap.epochs_per_step=1", "--device", "cpu",
        "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout[-1500:], result.stderr[-1500:])
    records = list((tmp_path / "records").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["budget"]["world_size"] == 2
    # The recipe is on the global batch: 64 = 2 ranks x 32, so 17 steps per epoch as on one rank.
    assert record["budget"]["global_batch"] == 64 and record["budget"]["steps_per_epoch"] == 17
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["metrics"]["top1"] > 10.0


PGAP = ["--methods", "gap", "--profile", "digits", "--epochs", "1", "--device", "cpu", "--save-weights",
        "--method-arg", "gap.mode=parallel", "--method-arg", "gap.partitions=2",
        "--method-arg", "gap.rounds=1", "--method-arg", "gap.epochs_per_step=1",
        "--method-arg", "gap.bn_batches=0"]  # fmt: skip


@pytest.mark.slow
def test_pgap_on_two_gloo_processes_equals_the_one_process_emulation(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    serial = [
        sys.executable,
        "-m",
        "gapbench",
        "run",
        "--task",
        "classification",
        *PGAP,
        "--out",
        str(tmp_path / "serial"),
    ]
    parallel = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
        "-m", "gapbench", "run", "--task", "classification", *PGAP, "--out", str(tmp_path / "groups"),
    ]  # fmt: skip
    for cmd in (serial, parallel):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, (result.stdout[-1500:], result.stderr[-1500:])
    (a,), (b,) = (list((tmp_path / d / "weights").glob("*.pt")) for d in ("serial", "groups"))
    one, two = torch.load(a), torch.load(b)
    assert one["masks"].keys() == two["masks"].keys()
    assert all(torch.equal(one["masks"][k], two["masks"][k]) for k in one["masks"])
    for key, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][key], value, atol=1e-5, rtol=1e-4, msg=key)
    (rec_one,), (rec_two,) = (
        list((tmp_path / d / "records").glob("*.json")) for d in ("serial", "groups")
    )
    rec_one, rec_two = json.loads(rec_one.read_text()), json.loads(rec_two.read_text())
    assert rec_one["budget"]["trainer_epochs"] == 2 and rec_two["budget"]["trainer_epochs"] == 1
    assert rec_two["plan"]["worker_groups"] == 2
    assert rec_two["flops"]["train"] == pytest.approx(rec_one["flops"]["train"], rel=1e-6)
