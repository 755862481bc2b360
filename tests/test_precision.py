"""Mixed precision: bf16 autocast runs every task's tiny profile at exact sparsity, and a step the
fp16 scaler skips does not advance a method's schedule."""

import math

import pytest
import torch
from helpers import run_one
from torch import nn

from gapbench.engine.loop import StepLoop
from gapbench.registry import get_method_class
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "detection", "partseg", "translation"])
def test_bf16_runs_every_tiny_profile_at_exact_sparsity(tmp_path, task):
    record = run_one(tmp_path, task=task, method="rigl", precision="bf16", max_steps=2)
    assert record.identity["precision"] == "bf16"
    kept = sum(layer["alive"] for layer in record.per_layer.values())  # the masks
    assert kept == round(0.1 * record.prunable_params)
    # The weights: never more than the masks keep (RigL grows at zero, so after two steps a few
    # kept weights are still exactly zero; the record's count is read from the weights).
    assert record.alive_prunable_params <= kept
    assert all(
        math.isfinite(h["train_loss"]) for h in record.history if h["train_loss"] is not None
    )


def test_a_step_the_fp16_scaler_skips_is_not_a_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = MaskSet(model, ["0.weight", "2.weight"])
    method = get_method_class("rigl")(delta_t=1, delta_t_batch=1, replace_step=False)
    budget = Budget(1, 10, 1)
    plan = method.plan(budget)
    method.setup(Context(model, opt, masks, budget, 0.8, "uniform", 0))
    poison = {"on": False}

    def loss(m, x):
        out = m(x).float().pow(2).mean()
        return out * float("inf") if poison["on"] else out

    loop = StepLoop(model, opt, masks, method, plan, loss, total_steps=10, precision="fp16")
    loop.run_step([torch.randn(4, 8)])
    assert loop.step == 1 and len(method.log["updates"]) == 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    checksum = masks.checksum()
    poison["on"] = True
    loop.run_step([torch.randn(4, 8)])  # inf gradients: the scaler skips the step
    assert loop.step == 1 and len(method.log["updates"]) == 1  # schedule did not advance
    assert masks.checksum() == checksum
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
