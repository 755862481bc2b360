import torch
from torch import nn

from gapbench.sparse.masks import MaskSet, random_masks, topk_mask


def test_topk_mask_is_exact_and_breaks_ties_by_position():
    score = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0])
    mask = topk_mask(score, 2)
    assert mask.tolist() == [False, True, True, False, False]
    assert int(topk_mask(torch.ones(100), 37).sum()) == 37


def test_random_masks_are_exact_and_seeded():
    shapes = [torch.Size([10, 10]), torch.Size([7])]
    a = random_masks(shapes, [13, 3], torch.Generator().manual_seed(1))
    b = random_masks(shapes, [13, 3], torch.Generator().manual_seed(1))
    c = random_masks(shapes, [13, 3], torch.Generator().manual_seed(2))
    assert [int(m.sum()) for m in a] == [13, 3]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def _model_and_sgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(5, 8)).pow(2).mean()
    loss.backward()
    opt.step()  # creates momentum buffers
    return model, opt


def test_set_mask_zeroes_weights_and_optimizer_state_of_changed_entries():
    model, opt = _model_and_sgd()
    masks = MaskSet(model, ["0.weight", "2.weight"])
    w = model[0].weight
    mask = topk_mask(w.detach().abs(), 20)
    changed = masks.set_mask("0.weight", mask, opt)
    assert changed == w.numel() - 20
    assert int((w != 0).sum()) == 20
    buf = opt.state[w]["momentum_buffer"]
    assert torch.all(buf[~mask] == 0)
    assert torch.any(buf[mask] != 0)
    assert masks.density("0.weight") == 20 / w.numel()
    assert masks.is_dense("2.weight") and not masks.is_dense("0.weight")


def test_apply_and_grad_masking_keep_pruned_entries_at_zero_through_training():
    model, opt = _model_and_sgd()
    masks = MaskSet(model, ["0.weight"])
    masks.set_mask("0.weight", topk_mask(model[0].weight.detach().abs(), 10), opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 8)).pow(2).mean().backward()
        masks.mask_grads()
        opt.step()
        masks.apply()
    pruned = ~masks.masks["0.weight"]
    assert torch.all(model[0].weight[pruned] == 0)
    assert torch.all(opt.state[model[0].weight]["momentum_buffer"][pruned] == 0)


def test_state_dict_round_trip_and_checksum():
    model, opt = _model_and_sgd()
    masks = MaskSet(model, ["0.weight", "2.weight"])
    masks.set_mask("2.weight", topk_mask(torch.randn(4, 16), 5), opt)
    other = MaskSet(model, ["0.weight", "2.weight"])
    assert other.checksum() != masks.checksum()
    other.load_state_dict(masks.state_dict())
    assert other.checksum() == masks.checksum()
    assert other.count("2.weight") == 5
    assert masks.masks["2.weight"].dtype == torch.bool  # 1 byte per weight
