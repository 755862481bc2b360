"""The one enforcement point: optimizer step hooks keep pruned weights and state at zero for any
loop that calls optimizer.step(), and the StepLoop clips only the gradients it applies."""

import pytest
import torch
from torch import nn

from gapbench.engine.loop import StepLoop
from gapbench.registry import get_method_class
from gapbench.sparse.enforce import ZERO_PRESERVING, MaskEnforcer
from gapbench.sparse.masks import MaskSet, topk_mask
from gapbench.sparse.method import Budget, Context, Plan


def _sparse_model(optimizer_cls, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = optimizer_cls(model.parameters(), **kw)
    masks = MaskSet(model, ["0.weight", "2.weight"])
    for name in masks.names:
        masks.set_mask(name, topk_mask(torch.rand_like(masks.params[name]), 10), opt)
    return model, opt, masks


def _train(model, opt, steps=5):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 8)).pow(2).mean().backward()
        opt.step()  # a foreign loop: only optimizer.step(), no gapbench code


OPTIMIZERS = [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 1e-2, "amsgrad": True}),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.Adamax, {"lr": 0.01, "weight_decay": 1e-2}),
    (torch.optim.NAdam, {"lr": 0.01, "weight_decay": 1e-2}),
    (torch.optim.RAdam, {"lr": 0.01, "weight_decay": 1e-2}),
    (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 1e-2}),
    (torch.optim.Adagrad, {"lr": 0.1, "weight_decay": 1e-2}),
    (torch.optim.Adadelta, {"lr": 1.0, "weight_decay": 1e-2}),
]


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_zero_preserving_optimizers_need_no_weight_pass(cls, kw):
    assert cls in ZERO_PRESERVING
    model, opt, masks = _sparse_model(cls, **kw)
    enforcer = MaskEnforcer(masks, opt)
    assert not enforcer.reapply_weights
    _train(model, opt)
    for name in masks.names:
        pruned = ~masks.masks[name]
        assert torch.all(masks.params[name][pruned] == 0), name
        for slot, value in opt.state[masks.params[name]].items():
            if slot == "exp_inf":  # Adamax's denominator floors at eps: not accumulated momentum
                continue
            if isinstance(value, torch.Tensor) and value.shape == pruned.shape:
                assert torch.all(value[pruned] == 0), slot


class Nudge(torch.optim.Optimizer):
    """An optimizer that moves every weight, gradient or not: masks must be re-applied."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.1})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1e-3)


def test_other_optimizers_get_their_weights_masked_after_the_step():
    model, opt, masks = _sparse_model(Nudge)
    enforcer = MaskEnforcer(masks, opt)
    assert enforcer.reapply_weights
    _train(model, opt)
    assert all(torch.all(masks.params[n][~masks.masks[n]] == 0) for n in masks.names)
    enforcer.remove()
    _train(model, opt, 1)
    assert any(torch.any(masks.params[n][~masks.masks[n]] != 0) for n in masks.names)


def test_clipping_sees_only_the_gradients_that_are_applied(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    masks = MaskSet(model, ["0.weight", "2.weight"])
    method = get_method_class("static")()
    plan = Plan(epochs=1)
    method.setup(Context(model, opt, masks, Budget(1, 1), 0.9, "uniform", 0))
    seen = []

    def spy(params, max_norm):
        seen.append([p.grad.clone() for p in model.parameters()])
        return torch.tensor(0.0)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    loop = StepLoop(
        model,
        opt,
        masks,
        method,
        plan,
        lambda m, x: m(x).pow(2).mean(),
        total_steps=1,
        grad_clip=1.0,
    )
    loop.run_step([torch.randn(5, 8)])
    grads = dict(zip([n for n, _ in model.named_parameters()], seen[0]))
    for name in masks.names:
        assert torch.all(grads[name][~masks.masks[name]] == 0)
        assert torch.any(grads[name][masks.masks[name]] != 0)
