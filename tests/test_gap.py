"""GaP: partitions, the C-GaP schedule, the random variant, P-GaP's merge, and the official-code
options, driven through the same StepLoop the Trainer uses."""

import pytest
import torch
from torch import nn

from gapbench.engine.loop import StepLoop
from gapbench.errors import UserError
from gapbench.gap import GaP
from gapbench.gap.merge import MergeAccumulator, owners
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context
from gapbench.sparse.partition import consecutive_partitions, min_max_split


def test_parameter_balanced_partitions_minimise_the_largest_group():
    names = [f"l{i}" for i in range(6)]
    # The old greedy cut gave 4 | 20; the optimal contiguous split is 14 | 10.
    assert consecutive_partitions(names, [1, 1, 1, 1, 10, 10], 2) == [names[:5], names[5:]]
    sizes = [1, 1, 1, 1, 10, 10, 20, 20]
    groups = consecutive_partitions([f"l{i}" for i in range(8)], sizes, 4)
    assert [n for g in groups for n in g] == [f"l{i}" for i in range(8)]
    assert max(sum(sizes[int(n[1:])] for n in g) for g in groups) == 20
    assert min_max_split([5, 1, 1, 1], 3) == [0, 1, 3]  # never an empty group
    assert consecutive_partitions(names, [1] * 6, 3, "layers") == [names[:2], names[2:4], names[4:]]
    with pytest.raises(UserError, match="balance"):
        consecutive_partitions(names, [1] * 6, 3, "stages")


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
SPE = 2  # steps per epoch


def _gap(budget=4, distribution="uniform", optimizer="sgd", **params):
    torch.manual_seed(0)
    model = Net()
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = MaskSet(model, NAMES)
    method = GaP(**params)
    plan = method.plan(Budget(budget, SPE))
    ctx = Context(
        model, opt, masks, Budget(plan.epochs, SPE), 0.75, distribution, seed=3, forward_order=NAMES
    )
    method.setup(ctx)
    loop = StepLoop(
        model,
        opt,
        masks,
        method,
        plan,
        lambda m, x: m(x).pow(2).mean(),
        total_steps=plan.epochs * SPE,
    )
    return model, opt, masks, method, plan, loop


def _epoch(loop, epoch, check=None):
    loop.run_epoch(epoch, (torch.randn(4, 6) for _ in range(SPE)), on_step=check)


def test_cgap_grows_each_partition_in_turn_and_ends_exactly_sparse():
    model, opt, masks, gap, plan, loop = _gap(partitions=3, rounds=2, epochs_per_step=1, budget=8)
    assert plan.epochs == 8 and plan.points["finetune_epochs"] == 2
    targets = {n: round(0.25 * masks.numel(n)) for n in NAMES}
    assert gap.target_counts == targets
    for epoch in range(plan.epochs):
        grown = NAMES[epoch % 3] if epoch < 6 else None

        def check(grown=grown):
            for n in NAMES:
                expected = masks.numel(n) if n == grown else targets[n]
                assert masks.count(n) == expected
                assert int((masks.params[n] != 0).sum()) <= expected

        _epoch(loop, epoch, check)
    gap.finish()
    assert masks.counts() == targets
    dens = gap.log["partition_density"]
    assert [row.index(1.0) for row in dens[:6]] == [0, 1, 2, 0, 1, 2]
    assert all(max(row) < 1.0 for row in dens[6:])


def test_grown_weights_restart_from_zero_and_prune_keeps_largest():
    model, opt, masks, gap, plan, loop = _gap(partitions=3, rounds=1, epochs_per_step=1, budget=3)
    before = masks.masks["a.weight"].clone()
    gap.on_epoch_start(0)
    assert torch.all(model.a.weight.detach()[~before] == 0)  # grown entries start at exactly zero
    with torch.no_grad():
        model.a.weight.copy_(torch.arange(48, dtype=torch.float).view(8, 6))
    gap.on_epoch_end(0)
    kept = masks.masks["a.weight"].flatten().nonzero().flatten().tolist()
    assert kept == list(range(48 - 12, 48))


def test_random_schedule_never_regrows_the_previous_step():
    model, opt, masks, gap, plan, loop = _gap(partitions=3, schedule="random", rounds=3, budget=9)
    previous = set()
    for epoch in range(plan.epochs):
        gap.on_epoch_start(epoch)
        grown = {n for n in NAMES if masks.count(n) == masks.numel(n)}
        assert len(grown) == 1 and not grown & previous
        previous = grown
        gap.on_epoch_end(epoch)


def test_pgap_merges_partition_tensors_from_their_worker_and_averages_the_rest():
    model, opt, masks, gap, plan, loop = _gap(partitions=3, mode="parallel", rounds=1, budget=2)
    assert plan.epochs == 4 and plan.points["finetune_epochs"] == 1  # 3 workers x 1 + 1
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for worker in range(3):
        gap.on_epoch_start(worker)
        assert torch.equal(model.bn.weight, start["bn.weight"])  # every worker starts the same
        assert masks.count(NAMES[worker]) == masks.numel(NAMES[worker])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(worker + 1))  # a recognisable "training" update per worker
        gap.on_epoch_end(worker)
    assert torch.allclose(model.c.bias, start["c.bias"] + 3.0)  # c.bias: with c.weight, worker 2
    assert torch.allclose(model.a.bias, start["a.bias"] + 1.0)
    # bn's path shares a prefix with no weight: averaged over workers (+1, +2, +3 -> +2)
    assert torch.allclose(model.bn.weight, start["bn.weight"] + 2.0)
    kept = masks.masks["b.weight"]
    assert torch.allclose(model.b.weight[kept], (start["b.weight"] + 2.0)[kept])
    assert all(masks.count(n) == gap.target_counts[n] for n in NAMES)


def test_merge_averages_the_bias_and_norm_of_a_dense_first_layer():
    # partseg: sa1.mlp.0 (dense first conv), sa1.mlp.1 (its BN), sa1.mlp.3 (partition 0).
    keys = ["sa1.mlp.0.weight", "sa1.mlp.1.weight", "sa1.mlp.1.running_mean", "sa1.mlp.3.weight",
            "sa1.mlp.4.weight", "fp1.mlp.0.weight", "fp1.mlp.1.bias"]  # fmt: skip
    partitions = [["sa1.mlp.3.weight"], ["fp1.mlp.0.weight"]]
    owner = owners(keys, partitions, dense_weights=["sa1.mlp.0.weight"])
    assert "sa1.mlp.0.weight" not in owner and "sa1.mlp.1.weight" not in owner  # averaged
    assert "sa1.mlp.1.running_mean" not in owner
    assert owner["sa1.mlp.3.weight"] == 0 and owner["fp1.mlp.1.bias"] == 1
    # detection: backbone.body.0.0 dense, its BN backbone.body.0.1 averaged, not worker 0's.
    keys = ["backbone.body.0.0.weight", "backbone.body.0.1.weight", "backbone.body.1.0.weight"]
    owner = owners(keys, [["backbone.body.1.0.weight"]], ["backbone.body.0.0.weight"])
    assert set(owner) == {"backbone.body.1.0.weight"}


def test_merge_accumulator_keeps_owned_tensors_and_a_running_mean():
    acc = MergeAccumulator({"w": 1}.get)
    for worker in range(3):
        acc.add(
            worker, {"w": torch.full((2,), float(worker)), "x": torch.full((2,), float(worker))}
        )
    merged = acc.result({"w": torch.zeros(2), "x": torch.zeros(2)})
    assert merged["w"].tolist() == [1.0, 1.0] and merged["x"].tolist() == [1.0, 1.0]
    assert set(acc.kept) == {"w"}  # never kappa copies of what is averaged


def test_pgap_keeps_bounded_state_not_kappa_copies():
    model, opt, masks, gap, plan, loop = _gap(partitions=3, mode="parallel", rounds=1, budget=2)
    model_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    for worker in range(2):
        _epoch(loop, worker)
    state = gap.state_dict()
    merge_bytes = sum(v.numel() * v.element_size() for v in state["merge"]["kept"].values())
    merge_bytes += sum(v.numel() * v.element_size() for v in state["merge"]["sums"].values())
    assert merge_bytes < 1.5 * model_bytes  # owned tensors once + the running sums (not 3 models)


def test_global_distribution_rederives_counts_from_current_weights_at_each_prune():
    model, opt, masks, gap, plan, loop = _gap(
        partitions=1, rounds=1, epochs_per_step=1, budget=1, distribution="global"
    )
    total = sum(gap.target_counts.values())
    gap.on_epoch_start(0)
    with torch.no_grad():
        model.a.weight.fill_(10.0)  # layer a now holds the largest magnitudes
    gap.on_epoch_end(0)
    assert total == 34 and masks.count("a.weight") == 34  # the whole budget goes to layer a
    assert masks.alive() == total and masks.counts() == gap.target_counts


def test_first_dense_trains_partition_one_from_its_init_and_adds_one_step():
    torch.manual_seed(0)
    init = Net().a.weight.detach().clone()
    model, opt, masks, gap, plan, loop = _gap(
        partitions=3, rounds=1, epochs_per_step=1, budget=4, first_dense=True
    )
    assert plan.points["grow_steps"] == 4 and plan.epochs == 4  # 1 + R*kappa steps, F = 0
    assert torch.equal(model.a.weight.detach(), init)  # not zeroed: dense from its init
    grown = []
    for epoch in range(plan.epochs):
        gap.on_epoch_start(epoch)
        grown.append(next(n for n in NAMES if masks.count(n) == masks.numel(n)))
        gap.on_epoch_end(epoch)
    assert grown == ["a.weight", "b.weight", "c.weight", "a.weight"]  # the official order


def test_optimizer_restart_clears_all_state_at_each_step():
    model, opt, masks, gap, plan, loop = _gap(
        partitions=3, rounds=1, budget=3, optimizer_restart=True
    )
    _epoch(loop, 0)
    assert opt.state  # momentum buffers exist after a step
    gap.on_epoch_start(1)
    assert not opt.state


def test_lr_clock_restarts_per_step_and_decays_peak_across_steps():
    _, _, _, _, plan, _ = _gap(
        partitions=2,
        rounds=2,
        epochs_per_step=2,
        budget=10,
        lr_restart=True,
        peak_lr_decay="linear",
    )
    clock = plan.lr_clock
    assert clock(0) == (0, 4, 1.0)  # step 0 of a 2-epoch grow step (4 optimizer steps)
    assert clock(5) == (1, 4, 0.75)  # second grow step: restarted, peak decayed linearly
    assert clock(16) == (0, 4, 1.0)  # fine-tune: its own schedule, full peak
    _, _, _, _, plan, _ = _gap(partitions=3, mode="parallel", rounds=1, budget=2)
    assert plan.lr_clock(2) == plan.lr_clock(0) == (0, 4, 1.0)  # workers 0 and 1 see one schedule
    assert plan.lr_clock(6) == (2, 4, 1.0)  # fine-tune continues the worker's schedule


def test_parameters_are_validated_when_built():
    with pytest.raises(UserError, match="partitions must be at least 1"):
        GaP(partitions=0)
    with pytest.raises(UserError, match="balance must be one of"):
        GaP(balance="stages")
    with pytest.raises(UserError, match="first_dense"):
        GaP(mode="parallel", first_dense=True)
    with pytest.raises(UserError, match="no parameter|unexpected keyword"):
        GaP(nope=1)
