"""The Trainer through the runner: LR schedules, bit-identical resume, records, FLOPs, global runs."""

import json

import pytest
import torch
from helpers import run_one, spec_for
from torch import nn

from gapbench.engine.flops import measure_forward_flops
from gapbench.engine.lr import lr_factor
from gapbench.runner import ExecOptions, execute

GAP_SMALL = {"rounds": 1, "epochs_per_step": 1}


def test_lr_schedules():
    assert lr_factor("cosine", 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor("cosine", 9, 100, 10) == pytest.approx(1.0)
    assert lr_factor("cosine", 55, 100, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100, 10) == pytest.approx(0.0)
    assert lr_factor("inverse_sqrt", 99, 10**6, 100) == pytest.approx(1.0)
    assert lr_factor("inverse_sqrt", 399, 10**6, 100) == pytest.approx(0.5)
    assert lr_factor("constant", 5, 10, 0) == 1.0


def test_flops_of_conv_and_linear_are_counted_per_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    flops, order = measure_forward_flops(model, lambda: model(torch.zeros(2, 3, 4, 4)))
    assert order == ["0.weight", "2.weight"]
    assert flops["0.weight"] == 2 * (2 * 8 * 4 * 4) * 3 * 9
    assert flops["2.weight"] == 2 * 2 * 128 * 5


@pytest.mark.slow
def test_resume_continues_bit_identically(tmp_path):
    spec = spec_for(epochs=4, params=GAP_SMALL)
    straight = execute(spec, ExecOptions(out=tmp_path / "a", device="cpu"))
    options = ExecOptions(out=tmp_path / "b", device="cpu")
    assert execute(spec, options, stop_after_epoch=2) is None
    assert (tmp_path / "b" / "checkpoints" / f"{spec.run_id}.pt").exists()
    resumed = execute(spec, ExecOptions(out=tmp_path / "b", device="cpu", resume=True))
    assert resumed.metrics == straight.metrics
    assert resumed.flops["train"] == straight.flops["train"]
    untimed = lambda h: [{k: v for k, v in e.items() if not k.endswith("_time_s")} for e in h]  # noqa: E731
    assert untimed(resumed.history) == untimed(straight.history)
    assert not (tmp_path / "b" / "checkpoints" / f"{spec.run_id}.pt").exists()


@pytest.mark.slow
def test_record_has_the_schedule_exact_sparsity_and_flops(tmp_path):
    record = run_one(tmp_path, epochs=4, params=GAP_SMALL)
    on_disk = json.loads((tmp_path / "records" / record.file_name).read_text())
    assert on_disk["status"] == "complete" and on_disk["run_id"] == record.run_id
    assert on_disk["measured_sparsity"] == pytest.approx(0.9, abs=1e-5)
    assert on_disk["alive_prunable_params"] == round(0.1 * on_disk["prunable_params"])
    assert on_disk["budget"]["total_steps"] == 4 * on_disk["budget"]["steps_per_epoch"]
    densities = on_disk["method_log"]["partition_density"]
    assert [row.index(1.0) for row in densities[:3]] == [0, 1, 2]  # each partition dense in turn
    assert max(densities[3]) < 0.11  # fine-tune: all sparse
    flops = on_disk["flops"]
    assert 0 < flops["train"] < flops["dense_train_budget"]
    assert flops["inference"] < 0.2 * flops["dense_inference"]
    # RigL's policy: stem dense, classifier pruned; overall density over all conv/linear weights.
    assert on_disk["policy"]["dense_layer_tensors"] == ["conv1.weight"]
    assert 0.1 < on_disk["conv_linear_density"] < 0.11
    assert on_disk["params"]["partitions"] == 3 and on_disk["params"]["rounds"] == 1
    assert 0.0 <= on_disk["metrics"]["top1"] <= 100.0


@pytest.mark.slow
def test_parallel_gap_runs_through_the_trainer_and_reports_flops_against_the_budget(tmp_path):
    record = run_one(tmp_path, epochs=2, params={"mode": "parallel", **GAP_SMALL})
    assert record.budget["trainer_epochs"] == 4  # 3 workers one after another + 1 fine-tune
    assert record.budget["comparison_epochs"] == 2
    assert record.alive_prunable_params == round(0.1 * record.prunable_params)
    # Three workers' dense phases against a 2-epoch dense run: more than the steps-run ratio.
    flops = record.flops
    assert flops["train"] / flops["dense_train_budget"] == pytest.approx(
        2 * flops["train"] / flops["dense_train_same_steps"], rel=1e-6
    )
    assert record.metrics["top1"] > 10.0  # better than chance on 10 classes after BN recalibration


@pytest.mark.slow
@pytest.mark.parametrize("method", ["magnitude", "oneshot", "gap"])
def test_global_distribution_ends_at_exact_counts_for_every_method_that_takes_it(tmp_path, method):
    params = {"gap": GAP_SMALL, "oneshot": {"dense_epochs": 1}}.get(method, {})
    record = run_one(tmp_path, method=method, epochs=3, distributions=["global"], params=params)
    assert record.status == "complete"
    assert record.alive_prunable_params == round(0.1 * record.prunable_params)
    alive = [layer["alive"] / layer["numel"] for layer in record.per_layer.values()]
    assert max(alive) > min(alive)  # a real global split, not uniform


def test_max_steps_stops_early_and_still_leaves_the_target_sparsity(tmp_path):
    record = run_one(tmp_path, epochs=4, max_steps=3, params=GAP_SMALL)
    assert record.status == "stopped_early"
    assert record.budget["steps_run"] == 3
    assert record.alive_prunable_params == round(0.1 * record.prunable_params)
