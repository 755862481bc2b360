"""Every built-in method passes the conformance check through the Trainer's StepLoop, under every
distribution it accepts; deliberately broken methods fail it."""

import pytest
import torch

from gapbench.errors import UserError
from gapbench.registry import get_method_class
from gapbench.sparse.method import Method
from gapbench.testing import ConformanceError, check_method

TINY_RIGL = {"delta_t": 3, "delta_t_batch": 8}  # the harness's batch is 8 samples
BUILT_IN = [
    ("dense", {}),
    ("static", {}),
    ("magnitude", {}),
    ("oneshot", {"dense_epochs": 2}),
    ("set", {}),
    ("set", {"variant": "rigl", **TINY_RIGL}),
    ("rigl", TINY_RIGL),
    ("rigl", {**TINY_RIGL, "replace_step": False, "reinit_when_same": True}),
    ("gap", {"partitions": 2, "rounds": 2}),
    ("gap", {"partitions": 2, "mode": "parallel", "rounds": 2}),
    ("gap", {"partitions": 3, "schedule": "random", "rounds": 1}),
    (
        "gap",
        {
            "partitions": 2,
            "rounds": 2,
            "first_dense": True,
            "optimizer_restart": True,
            "lr_restart": True,
        },
    ),
    ("snip", {}),
    ("grasp", {}),
    ("synflow", {"rounds": 10}),
    ("snfs", {}),
]
CASES = [
    (name, params, dist)
    for name, params in BUILT_IN
    for dist in ("uniform", "erk", "global")
    if name == "dense" or dist in get_method_class(name).distributions
]


@pytest.mark.parametrize(
    "name, params, distribution", CASES, ids=[f"{n}-{d}-{i}" for i, (n, _, d) in enumerate(CASES)]
)
def test_built_in_methods_conform(name, params, distribution):
    report = check_method(name, params, distribution=distribution)
    assert report.final_counts == report.target_counts or name == "dense"
    assert len(report.checks) == (5 if get_method_class(name).sparse else 4)
    _assert_priced(name, distribution, report)


# Methods whose per-layer FLOPs no plan can foresee: --match flops refuses them.
UNPREDICTABLE = {("snfs", d) for d in ("uniform", "erk")} | {
    (name, "global") for name in ("magnitude", "oneshot", "gap")
}


def _assert_priced(name, distribution, report):
    """Check (5) priced the run's FLOPs to 1%, or asserted that --match flops refuses it."""
    if not get_method_class(name).sparse:
        return
    if (name, distribution) in UNPREDICTABLE:
        assert report.flops_ratio is None and "refuses it" in report.checks[2]
    else:
        assert abs(report.flops_ratio - 1) <= 0.01, report.checks[2]


def test_the_refused_methods_are_those_whose_layer_counts_move_unforeseen():
    refused = {
        (name, d)
        for name, _, d in CASES
        if get_method_class(name).sparse and get_method_class(name).flops_unpredictable(d)
    }
    assert refused == UNPREDICTABLE


def test_global_is_in_the_matrix_for_every_method_that_prunes_trained_weights():
    assert {n for n, _, d in CASES if d == "global"} == {
        "dense",
        "magnitude",
        "oneshot",
        "gap",
        "snip",
        "grasp",
        "synflow",
    }


@pytest.mark.parametrize("name", ["static", "set", "rigl", "snfs"])
def test_from_scratch_methods_refuse_global_with_a_clear_error(name):
    with pytest.raises(UserError, match="does not support --distribution global"):
        check_method(name, {}, distribution="global")


def test_adam_moments_of_pruned_weights_stay_zero():
    check_method("rigl", TINY_RIGL, optimizer="adam")
    check_method("gap", {"partitions": 2, "rounds": 1}, optimizer="adam")
    check_method("set", {}, optimizer="adam")


class TooDense(Method):
    """Keeps 1% more weights than the target."""

    name = "too_dense"

    def setup(self, ctx):
        super().setup(ctx)
        for n in self.masks.names:
            self.prune_to(n, min(self.masks.numel(n), int(self.target_counts[n] * 1.01) + 1))


class RevivesPrunedWeights(Method):
    """Writes into pruned weights after the step."""

    name = "revives"

    def setup(self, ctx):
        super().setup(ctx)
        self.draw_random_masks()

    def update(self, step):
        with torch.no_grad():
            for n in self.masks.names:
                self.masks.params[n].add_(0.01)


class PollutesOptimizerState(Method):
    """Leaves momentum on pruned entries (as if it skipped MaskSet.set_mask)."""

    name = "pollutes"

    def setup(self, ctx):
        super().setup(ctx)
        self.draw_random_masks()

    def update(self, step):
        for n in self.masks.names:
            state = self.ctx.optimizer.state.get(self.masks.params[n], {})
            if "momentum_buffer" in state:
                state["momentum_buffer"].add_(1.0)


class EditsMasksBehindMaskSet(Method):
    """Changes a mask tensor in place instead of through set_mask."""

    name = "edits_masks"

    def setup(self, ctx):
        super().setup(ctx)
        self.draw_random_masks()

    def on_epoch_end(self, epoch):
        self.masks.masks["fc1.weight"][0, :5] = True


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

    def setup(self, ctx):
        super().setup(ctx)
        self.redraws = 0

    def on_epoch_start(self, epoch):
        self.redraws += 1
        gen = torch.Generator().manual_seed(self.ctx.seed + self.redraws)
        for n in self.masks.names:
            score = torch.rand(self.masks.params[n].shape, generator=gen)
            self.prune_to(n, self.target_counts[n], score=score)


class MispricesLayers(Method):
    """Static ERK masks, but foresees every layer at the overall density: the total alive weights
    are right, the FLOPs are not (convolutions cost more per weight than linear layers)."""

    name = "misprices_layers"

    def setup(self, ctx):
        super().setup(ctx)
        self.draw_random_masks()

    def expected_densities(self, epoch):
        density = sum(self.target_counts.values()) / self.masks.total()
        return dict.fromkeys(self.masks.names, density)


class ClaimsFixedLayers(Method):
    """Moves weights between layers every epoch without saying so (SNFS without its flags): only
    the FLOPs check catches it."""

    name = "moves_counts"
    redistributes = False

    def setup(self, ctx):
        super().setup(ctx)
        self.draw_random_masks()

    def on_epoch_end(self, epoch):
        a, b = self.masks.names[0], self.masks.names[2]
        self.target_counts[a] += 4
        self.target_counts[b] -= 4
        for n in (a, b):
            self.prune_to(n, self.target_counts[n], score=torch.rand(self.masks.params[n].shape))


def test_a_method_priced_right_in_total_but_wrong_per_layer_fails_check_5():
    with pytest.raises(ConformanceError, match="misprice"):
        check_method(MispricesLayers, distribution="erk")


def test_snfs_is_refused_by_match_flops_with_one_clear_line():
    from gapbench.matching import require_priceable

    with pytest.raises(
        UserError, match="cannot price snfs under --distribution uniform: its per-layer counts move"
    ):
        require_priceable("snfs", "uniform")
    require_priceable("gap", "uniform")  # priceable: no error
    require_priceable("snip", "global")  # its split is fixed at setup: priceable


@pytest.mark.parametrize(
    "broken, message",
    [
        (TooDense, "target"),
        (ClaimsFixedLayers, "misprice"),
        (RevivesPrunedWeights, "pruned weights"),
        (PollutesOptimizerState, "optimizer state"),
        (EditsMasksBehindMaskSet, "stale"),
        (Unseeded, "same seed"),
        (ForgetsItsState, "resumed"),
    ],
)
def test_broken_methods_fail_the_check(broken, message):
    with pytest.raises(ConformanceError, match=message):
        check_method(broken)


PATTERN_CASES = [
    (name, params)
    for name, params in BUILT_IN
    if name not in ("dense", "snfs")
    and not (name == "set" and "variant" not in params)
    and not params.get("schedule") == "random"
    and not params.get("first_dense")
]


@pytest.mark.parametrize("pattern", ["nm:2:4", "block:4x4"])
@pytest.mark.parametrize(
    "name, params", PATTERN_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PATTERN_CASES)]
)
def test_methods_keep_their_masks_inside_the_pattern(name, params, pattern):
    report = check_method(name, params, pattern=pattern)
    assert report.final_counts == report.target_counts
    _assert_priced(name, "uniform", report)  # FLOPs priced to 1% under nm:2:4 and blocks


def test_pattern_mistakes_are_clear_errors():
    with pytest.raises(UserError, match="unstructured only"):
        check_method("set", {}, pattern="nm:2:4")
    with pytest.raises(UserError, match="fixes every layer"):
        check_method("magnitude", {}, distribution="erk", pattern="nm:2:4")
    with pytest.raises(UserError, match="nm:N:M"):
        check_method("magnitude", {}, pattern="2:4")
