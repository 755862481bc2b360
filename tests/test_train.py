"""The training loop: LR schedules, bit-identical resume, records, FLOPs ledger."""

import json

import pytest
import torch
from torch import nn

from gapbench.flops import measure_forward_flops
from gapbench.train import RunConfig, Trainer, lr_factor

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


def _config(tmp_path, name, **kw):
    base = dict(
        task="classification", method="gap", sparsity=0.9, epochs=4, out=str(tmp_path / name)
    )
    base.update(kw)
    base.setdefault("method_params", dict(GAP_SMALL) if base["method"] == "gap" else {})
    return RunConfig(**base)


def test_resume_continues_bit_identically(tmp_path):
    straight = Trainer(_config(tmp_path, "a"))
    record = straight.run()
    interrupted = Trainer(_config(tmp_path, "b"))
    assert interrupted.run(stop_after_epoch=2) is None
    assert interrupted.checkpoint_path.exists()
    resumed = Trainer(_config(tmp_path, "b"))
    record_b = resumed.run(resume=True)
    for (k, v), (k2, v2) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert k == k2 and torch.equal(v, v2), k
    assert record["metrics"] == record_b["metrics"]
    assert record["train_flops"] == record_b["train_flops"]
    assert not resumed.checkpoint_path.exists()  # removed once the record is written


def test_record_has_the_schedule_exact_sparsity_and_flops(tmp_path):
    record = Trainer(_config(tmp_path, "r")).run()
    on_disk = json.loads(open(record["_path"]).read())
    assert on_disk["status"] == "complete"
    assert on_disk["measured_sparsity"] == pytest.approx(0.9, abs=1e-5)
    assert on_disk["alive_prunable_params"] == round(0.1 * on_disk["prunable_params"])
    assert on_disk["budget"]["total_steps"] == 4 * on_disk["budget"]["steps_per_epoch"]
    densities = on_disk["method_log"]["partition_density"]
    assert [row.index(1.0) for row in densities[:3]] == [
        0,
        1,
        2,
    ]  # each partition dense in its step
    assert max(densities[3]) < 0.11  # fine-tune: all sparse
    assert 0 < on_disk["train_flops"] < on_disk["dense_train_flops"]
    assert on_disk["inference_flops"] < 0.2 * on_disk["dense_inference_flops"]
    assert on_disk["sparsity_policy"]["first_conv"] == "dense"
    assert 0.0 <= on_disk["metrics"]["top1"] <= 100.0


def test_parallel_gap_runs_through_the_trainer(tmp_path):
    params = {"mode": "parallel", "rounds": 1, "epochs_per_step": 1}
    record = Trainer(_config(tmp_path, "p", epochs=2, method_params=params)).run()
    assert record["budget"]["trainer_epochs"] == 4  # 3 workers one after another + 1 fine-tune
    assert record["budget"]["comparison_epochs"] == 2
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert (
        record["metrics"]["top1"] > 10.0
    )  # better than chance on 10 classes after BN recalibration


def test_max_steps_stops_early_and_still_leaves_the_target_sparsity(tmp_path):
    record = Trainer(_config(tmp_path, "m", max_steps=3)).run()
    assert record["status"] == "stopped_early"
    assert record["budget"]["steps_run"] == 3
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
