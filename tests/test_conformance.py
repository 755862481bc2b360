"""Every built-in method passes the conformance check; deliberately broken methods fail it."""

import pytest
import torch

from gapbench.method import Method
from gapbench.testing import ConformanceError, check_method


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core box run several times faster on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BUILT_IN = [
    ("dense", {}),
    ("static", {}),
    ("magnitude", {}),
    ("oneshot", {"dense_epochs": 2}),
    ("set", {"delta_t": 3}),
    ("rigl", {"delta_t": 3}),
    ("gap", {"partitions": 2, "rounds": 2}),
    ("gap", {"partitions": 2, "mode": "parallel", "rounds": 2}),
    ("gap", {"partitions": 3, "schedule": "random", "rounds": 1}),
]


@pytest.mark.parametrize(
    "name, params", BUILT_IN, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BUILT_IN)]
)
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_built_in_methods_conform(name, params, distribution):
    report = check_method(name, params, distribution=distribution)
    assert report.final_counts == report.target_counts or name == "dense"
    assert len(report.checks) == 4


def test_adam_moments_of_pruned_weights_stay_zero():
    check_method("rigl", {"delta_t": 3}, optimizer="adam")
    check_method("gap", {"partitions": 2, "rounds": 1}, optimizer="adam")


class TooDense(Method):
    """Keeps 1% more weights than the target."""

    name = "too_dense"

    def setup(self, model, optimizer, budget, masks, ctx):
        super().setup(model, optimizer, budget, masks, ctx)
        for n in masks.names:
            k = min(masks.numel(n), int(self.target_counts[n] * 1.01) + 1)
            self.prune_to(n, k)


class ForgetsToMaskGrads(Method):
    """Masks weights but lets momentum build up on pruned entries."""

    name = "no_grad_mask"

    def setup(self, model, optimizer, budget, masks, ctx):
        super().setup(model, optimizer, budget, masks, ctx)
        for n in masks.names:
            self.prune_to(n, self.target_counts[n])

    def before_step(self, step):
        pass


class Unseeded(Method):
    """Draws masks from a generator seeded by the OS: not reproducible from the run's seed."""

    name = "unseeded"

    def on_epoch_start(self, epoch):
        gen = torch.Generator()
        gen.seed()
        for n in self.masks.names:
            score = torch.rand(self.masks.params[n].shape, generator=gen)
            self.prune_to(n, self.target_counts[n], score=score)


class ForgetsItsState(Method):
    """Redraws masks every epoch from a counter it does not save: a resume restarts the count."""

    name = "stateless"

    def setup(self, model, optimizer, budget, masks, ctx):
        super().setup(model, optimizer, budget, masks, ctx)
        self.redraws = 0

    def on_epoch_start(self, epoch):
        self.redraws += 1
        gen = torch.Generator().manual_seed(self.ctx.seed + self.redraws)
        for n in self.masks.names:
            score = torch.rand(self.masks.params[n].shape, generator=gen)
            self.prune_to(n, self.target_counts[n], score=score)


@pytest.mark.parametrize(
    "broken, message",
    [
        (TooDense, "target"),
        (ForgetsToMaskGrads, "optimizer state"),
        (Unseeded, "same seed"),
        (ForgetsItsState, "resumed"),
    ],
)
def test_broken_methods_fail_the_check(broken, message):
    with pytest.raises(ConformanceError, match=message):
        check_method(broken)
