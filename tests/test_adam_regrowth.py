"""Adam after regrowth: a weight regrown with zeroed moments late in a run takes a first update
3.16x a fresh Adam's under torch's per-tensor step count; with per-entry ages (MaskSet.
track_adam_ages, on for GaP) it takes exactly a fresh Adam's updates. RigL keeps torch's
behaviour, as its TF reference."""

import pytest
import torch
from torch import nn

from gapbench.registry import get_method_class
from gapbench.sparse.masks import AGE_KEY, MaskSet

LR = 1e-3
STEPS = 10_000  # the regrowth happens after this many steps


def _gradient(step: int) -> torch.Tensor:
    """A gradient of steady sign and size per entry, with some noise."""
    gen = torch.Generator().manual_seed(step)
    base = torch.linspace(-1.0, 1.0, 64).reshape(8, 8) + 0.05
    return base * (1 + 0.1 * torch.randn(8, 8, generator=gen))


def _regrown_updates(optimizer: str, ages: bool, after: int = 3) -> tuple[torch.Tensor, ...]:
    """Train STEPS steps, prune half the entries for a step, regrow them; return the updates of
    the regrown entries over `after` steps, those of a fresh Adam on the same gradients, and
    the final weights of the entries never pruned."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 8, bias=False)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    opt = kind(layer.parameters(), lr=LR, weight_decay=1e-2)
    masks = MaskSet(layer, ["weight"])
    if ages:
        masks.track_adam_ages(opt)
    w = layer.weight

    def step(index: int) -> None:
        w.grad = _gradient(index) * masks.masks["weight"]
        opt.step()

    for i in range(STEPS):
        step(i)
    half = torch.zeros(8, 8, dtype=torch.bool)
    half[:, ::2] = True
    masks.set_mask("weight", half, opt)
    step(STEPS)
    masks.set_mask("weight", torch.ones(8, 8, dtype=torch.bool), opt)  # regrown at zero
    fresh_w = torch.zeros(8, 8, requires_grad=True)
    fresh = kind([fresh_w], lr=LR, weight_decay=1e-2)
    updates, fresh_updates = [], []
    for i in range(STEPS + 1, STEPS + 1 + after):
        before, fresh_before = w.detach().clone(), fresh_w.detach().clone()
        step(i)
        fresh_w.grad = _gradient(i)
        fresh.step()
        updates.append((w.detach() - before)[~half])
        fresh_updates.append((fresh_w.detach() - fresh_before)[~half])
    return torch.stack(updates), torch.stack(fresh_updates), w.detach()[half].clone()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_regrown_weights_take_a_fresh_adams_updates(optimizer):
    updates, fresh, kept = _regrown_updates(optimizer, ages=True, after=20)
    torch.testing.assert_close(updates, fresh, rtol=1e-4, atol=1e-9)
    ratio = float((updates[0].abs() / fresh[0].abs()).mean())
    assert ratio == pytest.approx(1.0, abs=1e-3)
    # Entries never pruned step exactly as torch steps them.
    _, _, kept_torch = _regrown_updates(optimizer, ages=False, after=20)
    assert torch.equal(kept, kept_torch)


def test_without_ages_the_first_update_is_3_16x_a_fresh_adams():
    updates, fresh, _ = _regrown_updates("adam", ages=False, after=1)
    ratio = float((updates[0].abs() / fresh[0].abs()).mean())
    assert ratio == pytest.approx((1 - 0.9) / (1 - 0.999) ** 0.5, rel=0.02)  # 3.16


def test_ages_live_in_the_optimizer_state_and_are_zero_where_the_moments_are():
    layer = nn.Linear(8, 8, bias=False)
    opt = torch.optim.Adam(layer.parameters(), lr=LR)
    masks = MaskSet(layer, ["weight"])
    masks.track_adam_ages(opt)
    for i in range(5):
        layer.weight.grad = _gradient(i) * masks.masks["weight"]
        opt.step()
    keep = torch.rand(8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    masks.set_mask("weight", keep, opt)
    layer.weight.grad = _gradient(5) * keep
    opt.step()
    age = opt.state[layer.weight][AGE_KEY]
    assert torch.equal(age[~keep], torch.zeros_like(age[~keep]))  # pruned: zero like its moments
    assert torch.equal(age[keep], torch.full_like(age[keep], 6.0))
    assert AGE_KEY in opt.state_dict()["state"][0]  # checkpoints carry it


def test_gap_corrects_and_rigl_keeps_its_references_global_step():
    assert get_method_class("gap").per_entry_adam_age
    assert not get_method_class("rigl").per_entry_adam_age
    assert not get_method_class("set").per_entry_adam_age
