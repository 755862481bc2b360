import math

import pytest
import torch

from gapbench.errors import UserError
from gapbench.sparse.distribution import (
    erk_counts,
    global_counts,
    global_counts_total,
    keep_counts,
    total_keep,
    uniform_counts,
)

SHAPES = [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (64, 64, 1, 1), (10, 64)]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.9, 0.95, 0.999])
def test_uniform_and_erk_hit_the_exact_total(sparsity):
    sizes = [math.prod(s) for s in SHAPES]
    for counts in (uniform_counts(sizes, sparsity), erk_counts(SHAPES, sparsity)):
        assert sum(counts) == total_keep(sizes, sparsity)
        assert all(0 <= k <= n for k, n in zip(counts, sizes))


def test_uniform_is_within_one_weight_of_the_target_density():
    sizes = [math.prod(s) for s in SHAPES]
    for k, n in zip(uniform_counts(sizes, 0.9), sizes):
        assert abs(k - 0.1 * n) < 1.0


def test_erk_gives_small_layers_higher_density_and_caps_dense_layers():
    sizes = [math.prod(s) for s in SHAPES]
    counts = erk_counts(SHAPES, 0.5)
    densities = [k / n for k, n in zip(counts, sizes)]
    assert densities[0] == 1.0  # the 432-weight first layer would exceed 1 and is made dense
    assert densities[2] < densities[1]  # larger conv, lower density
    assert sum(counts) == total_keep(sizes, 0.5)


def test_global_keeps_the_largest_magnitudes_across_layers():
    a = torch.tensor([[5.0, 0.1], [0.2, 4.0]])
    b = torch.tensor([3.0, 0.3, 0.05, 2.5])
    assert global_counts([a, b], 0.5) == [2, 2]
    assert global_counts([a * 10, b], 0.5) == [2, 2]
    assert global_counts([a * 0.01, b], 0.625) == [0, 3]


def test_global_ranks_live_weights_first_and_hits_an_exact_total():
    # -1 marks dead entries: they are never kept while a live weight remains.
    a = torch.tensor([5.0, -1.0, -1.0, 0.5])
    b = torch.tensor([0.1, 0.2, -1.0, -1.0])
    assert global_counts_total([a, b], 3) == [2, 1]
    assert sum(global_counts_total([torch.rand(50), torch.rand(70)], 33)) == 33


def test_bad_sparsity_and_distribution_are_user_errors():
    with pytest.raises(UserError, match="outside"):
        keep_counts("uniform", SHAPES, 1.0)
    with pytest.raises(UserError, match="unknown distribution"):
        keep_counts("magic", SHAPES, 0.5)
