"""The one enforcement point: optimizer step hooks keep pruned weights and state at zero for any
loop that calls optimizer.step(), and the StepLoop clips only the gradients it applies."""

import pytest
import torch
from torch import nn

from gapbench.engine.loop import StepLoop
from gapbench.registry import get_method_class
from gapbench.sparse.enforce import ZERO_PRESERVING, MaskEnforcer, count_weights
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


def _backward(model):
    model.zero_grad()
    model(torch.randn(5, 8)).pow(2).mean().backward()


def test_a_replaced_step_does_not_leave_the_next_steps_gradients_unmasked():
    """A front-end masks for a replaced step (RigL) and skips the weight update: the next step's
    pre-hook must still mask, or momentum carries pruned weights away from zero."""
    model, opt, masks = _sparse_model(torch.optim.SGD, lr=0.1, momentum=0.9)
    enforcer = MaskEnforcer(masks, opt)
    _backward(model)
    enforcer.mask_grads()  # the replaced step: masked, no optimizer.step() follows
    for _ in range(3):
        _backward(model)
        opt.step()  # no clipping: only the pre-hook masks
    assert all(torch.all(masks.params[n][~masks.masks[n]] == 0) for n in masks.names)
    assert count_weights(masks).total_nonzero == masks.alive()
    count_weights(masks).check("test")


def test_the_method_reads_each_backwards_gradients_once_and_dense():
    """Clip, then a replaced step: mask_grads runs twice on one backward, but the method must read
    the dense gradients (the first call) and never the masked ones."""
    model, opt, masks = _sparse_model(torch.optim.SGD, lr=0.1)
    reads = []

    def read():
        reads.append({n: masks.params[n].grad.clone() for n in masks.names})

    enforcer = MaskEnforcer(masks, opt, before_mask=read)
    _backward(model)
    enforcer.mask_grads()  # before clipping
    enforcer.skip_step()  # the replaced step
    assert len(reads) == 1
    assert all(torch.any(reads[0][n][~masks.masks[n]] != 0) for n in masks.names)
    _backward(model)
    opt.step()
    assert len(reads) == 2  # a new backward is read again


def test_count_weights_sees_a_leak_that_the_masks_do_not():
    model, opt, masks = _sparse_model(torch.optim.SGD, lr=0.1)
    MaskEnforcer(masks, opt)
    _train(model, opt, 2)
    counted = count_weights(masks)
    counted.check("clean")
    assert counted.total_nonzero == masks.alive() and not any(counted.alive_zero.values())
    name = masks.names[0]
    with torch.no_grad():
        masks.params[name][~masks.masks[name]] = 1.0
    leaked = count_weights(masks)
    assert leaked.leaked[name] == masks.numel(name) - masks.count(name)
    with pytest.raises(RuntimeError, match="pruned weights are nonzero"):
        leaked.check("leak")
