"""GaP: partitions, the C-GaP schedule, the random variant, and the P-GaP merge."""

import torch
from torch import nn

from gapbench.budget import Budget
from gapbench.gap import GaP
from gapbench.masks import MaskSet
from gapbench.method import MethodContext
from gapbench.partition import consecutive_partitions


def test_parameter_balanced_partitions_are_consecutive_and_cover_everything():
    names = [f"l{i}" for i in range(8)]
    sizes = [1, 1, 1, 1, 10, 10, 20, 20]
    groups = consecutive_partitions(names, sizes, 4)
    assert [n for g in groups for n in g] == names
    assert all(groups)
    assert groups[-1] == ["l7"]  # the heavy tail gets its own partition
    assert consecutive_partitions(names, sizes, 4, "layers") == [
        names[i : i + 2] for i in (0, 2, 4, 6)
    ]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.bn(self.a(x))))))


NAMES = ["a.weight", "b.weight", "c.weight"]


def _gap(**params):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = MaskSet(model, NAMES)
    budget = params.pop("budget", 4)
    method = GaP(**params)
    epochs = method.total_epochs(budget)
    ctx = MethodContext(sparsity=0.75, distribution="uniform", seed=3, forward_order=NAMES)
    method.setup(model, opt, Budget(epochs, 2), masks, ctx)
    return model, opt, masks, method, epochs


def _train_step(model, opt, method, step):
    opt.zero_grad()
    model(torch.randn(4, 6)).pow(2).mean().backward()
    method.before_step(step)
    opt.step()
    method.after_step(step)


def test_cgap_grows_each_partition_in_turn_and_ends_exactly_sparse():
    model, opt, masks, gap, epochs = _gap(partitions=3, rounds=2, epochs_per_step=1, budget=8)
    assert epochs == 8 and gap.finetune == 2
    targets = {n: round(0.25 * masks.numel(n)) for n in NAMES}
    assert gap.target_counts == targets
    step = 0
    for epoch in range(epochs):
        gap.on_epoch_start(epoch)
        for _ in range(2):
            _train_step(model, opt, gap, step)
            step += 1
            grown = NAMES[epoch % 3] if epoch < 6 else None
            for n in NAMES:
                expected = masks.numel(n) if n == grown else targets[n]
                assert masks.count(n) == expected, (epoch, n)
                assert int((masks.params[n] != 0).sum()) <= expected
        gap.on_epoch_end(epoch)
    gap.on_train_end()
    assert {n: masks.count(n) for n in NAMES} == targets
    dens = gap.log["partition_density"]
    assert [row.index(1.0) for row in dens[:6]] == [0, 1, 2, 0, 1, 2]
    assert all(max(row) < 1.0 for row in dens[6:])


def test_grown_weights_restart_from_zero_and_prune_keeps_largest():
    model, opt, masks, gap, _ = _gap(partitions=3, rounds=1, epochs_per_step=1, budget=3)
    before = masks.masks["a.weight"].clone()
    gap.on_epoch_start(0)
    w = model.a.weight.detach()
    assert torch.all(w[~before] == 0)  # grown entries start at exactly zero
    with torch.no_grad():
        model.a.weight.copy_(torch.arange(48, dtype=torch.float).view(8, 6))
    gap.on_epoch_end(0)
    kept = masks.masks["a.weight"].flatten().nonzero().flatten().tolist()
    assert kept == list(range(48 - 12, 48))


def test_random_schedule_never_regrows_the_previous_step():
    model, opt, masks, gap, epochs = _gap(partitions=3, schedule="random", rounds=3, budget=9)
    previous = set()
    for epoch in range(epochs):
        gap.on_epoch_start(epoch)
        grown = {n for n in NAMES if masks.count(n) == masks.numel(n)}
        assert len(grown) == 1 and not grown & previous
        previous = grown
        gap.on_epoch_end(epoch)


def test_pgap_merges_partition_tensors_from_their_worker_and_averages_the_rest():
    model, opt, masks, gap, epochs = _gap(partitions=3, mode="parallel", rounds=1, budget=2)
    assert epochs == 4 and gap.finetune == 1  # 3 workers x 1 epoch, then 1 fine-tune epoch
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for worker in range(3):
        gap.on_epoch_start(worker)
        # every worker starts from the same state, with its own partition dense
        assert torch.equal(model.bn.weight, start["bn.weight"])
        assert masks.count(NAMES[worker]) == masks.numel(NAMES[worker])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(worker + 1))  # a recognisable "training" update per worker
        gap.on_epoch_end(worker)
    # c.bias sits in module "c" with c.weight (partition 2): it comes from worker 2 alone
    assert torch.allclose(model.c.bias, start["c.bias"] + 3.0)
    assert torch.allclose(model.a.bias, start["a.bias"] + 1.0)
    # bn shares no module path with any weight: averaged over workers (+1, +2, +3 -> +2)
    assert torch.allclose(model.bn.weight, start["bn.weight"] + 2.0)
    # partition tensors come from their worker, pruned back to the target by magnitude
    kept = masks.masks["b.weight"]
    assert torch.allclose(model.b.weight[kept], (start["b.weight"] + 2.0)[kept])
    assert all(masks.count(n) == gap.target_counts[n] for n in NAMES)
