"""The training objective: position MSE and the MMD term of the paper (Eq. 10), in float64."""

from __future__ import annotations

from math import exp

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal

from fastegnn_md.losses import mmd_loss, position_mse, rbf_kernel, sample_nodes_per_graph

TOL = 1e-12


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def test_mmd_matches_hand_computed_eq10():
    """One graph, N=2 real nodes, C=2 virtual nodes, sigma=1: Eq. 10 written out by hand.

    k(a, b) = exp(-|a - b|^2 / 2).
    x1=(0,0,0), x2=(1,0,0); z1=(0,1,0), z2=(0,0,2).
    |z1-z2|^2 = 5            -> 1/C^2 sum k(z,z') = (1 + 1 + 2 e^{-5/2}) / 4
    |x1-z1|^2 = 1, |x1-z2|^2 = 4, |x2-z1|^2 = 2, |x2-z2|^2 = 5
                             -> 1/(NC) sum k(x,z) = (e^{-1/2} + e^{-2} + e^{-1} + e^{-5/2}) / 4
    """
    x = t64([[0, 0, 0], [1, 0, 0]])
    z = t64([[[0, 1, 0], [0, 0, 2]]])
    expected = (1 + 1 + 2 * exp(-2.5)) / 4 - (exp(-0.5) + exp(-2.0) + exp(-1.0) + exp(-2.5)) / 4
    got = mmd_loss(x, z, torch.tensor([2]), sigma=1.0, samples=100)
    assert got.dtype == torch.float64
    assert abs(float(got) - expected) < TOL

    # Same points, sigma = 2: k = exp(-d2 / 8).
    expected2 = (2 + 2 * exp(-5 / 8)) / 4 - (exp(-1 / 8) + exp(-4 / 8) + exp(-2 / 8) + exp(-5 / 8)) / 4
    got2 = mmd_loss(x, z, torch.tensor([2]), sigma=2.0, samples=2)
    assert abs(float(got2) - expected2) < TOL


def test_rbf_kernel_values():
    """k(a, b) = exp(-|a-b|^2 / (2 sigma^2)) for every pair, shape (P, Q)."""
    a = t64([[0, 0, 0], [1, 2, 2]])
    b = t64([[0, 0, 0], [0, 0, 3], [1, 2, 2]])
    k = rbf_kernel(a, b, sigma=1.5).numpy()
    d2 = np.array([[0, 9, 9], [9, 1 + 4 + 1, 0]], dtype=float)
    np.testing.assert_allclose(k, np.exp(-d2 / (2 * 1.5**2)), rtol=0, atol=TOL)


def test_mmd_batch_is_mean_of_per_graph_values():
    """A batch of unequal graphs [A (7 nodes), B (3 nodes)] scores the mean of A alone and B alone."""
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(7, 3)), rng.normal(size=(3, 3)) + 2.0
    za, zb = rng.normal(size=(1, 4, 3)), rng.normal(size=(1, 4, 3))
    sigma = 1.3
    alone_a = float(mmd_loss(t64(xa), t64(za), torch.tensor([7]), sigma, samples=50))
    alone_b = float(mmd_loss(t64(xb), t64(zb), torch.tensor([3]), sigma, samples=50))
    both = float(
        mmd_loss(t64(np.concatenate([xa, xb])), t64(np.concatenate([za, zb])), torch.tensor([7, 3]), sigma, samples=50)
    )
    assert abs(alone_a - alone_b) > 1e-3, "test would not notice a wrong weighting"
    assert abs(both - 0.5 * (alone_a + alone_b)) < TOL
    # Order of graphs in the batch does not matter.
    swapped = float(
        mmd_loss(t64(np.concatenate([xb, xa])), t64(np.concatenate([zb, za])), torch.tensor([3, 7]), sigma, samples=50)
    )
    assert abs(swapped - both) < TOL


def test_sample_nodes_per_graph_subsets():
    """samples < graph size: S distinct nodes inside each graph's range; smaller graphs get invalid slots."""
    sizes = torch.tensor([6, 2, 9, 3])
    offsets = [0, 6, 8, 17]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        index, valid = sample_nodes_per_graph(sizes, 3, generator=gen)
        assert index.shape == valid.shape == (4, 3)
        for g, (n, off) in enumerate(zip(sizes.tolist(), offsets)):
            assert valid[g].sum().item() == min(3, n)
            chosen = index[g][valid[g]].tolist()
            assert len(set(chosen)) == len(chosen), "duplicates"
            assert all(off <= i < off + n for i in chosen), (g, chosen)
        assert valid[1].tolist() == [True, True, False]
        assert set(index[1][valid[1]].tolist()) == {6, 7}  # a 2-node graph uses both of its nodes


def test_sample_nodes_width_is_capped_by_largest_graph():
    index, valid = sample_nodes_per_graph(torch.tensor([2, 4]), 100)
    assert index.shape == (2, 4)
    assert valid.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert sorted(index[0][valid[0]].tolist()) == [0, 1]
    assert sorted(index[1].tolist()) == [2, 3, 4, 5]


def test_sample_nodes_is_uniform():
    """Every node of a graph is picked with probability S/n (here 2/5 = 0.4), independently per graph."""
    draws = 4000
    sizes = torch.full((draws,), 5)
    index, valid = sample_nodes_per_graph(sizes, 2, generator=torch.Generator().manual_seed(1))
    assert valid.all()
    local = (index - 5 * torch.arange(draws).unsqueeze(1)).numpy()
    assert ((local >= 0) & (local < 5)).all() and (local[:, 0] != local[:, 1]).all()
    freq = np.bincount(local.ravel(), minlength=5) / draws
    np.testing.assert_allclose(freq, 0.4, atol=0.04)


def test_mmd_with_subsampling_uses_exactly_the_sampled_nodes():
    """With samples < graph size, mmd_loss equals Eq. 10 evaluated on the nodes sample_nodes_per_graph picks."""
    rng = np.random.default_rng(4)
    sizes = [8, 2, 5]
    x = rng.normal(size=(sum(sizes), 3))
    z = rng.normal(size=(3, 2, 3))
    sigma, samples = 0.9, 3
    index, valid = sample_nodes_per_graph(torch.tensor(sizes), samples, generator=torch.Generator().manual_seed(9))
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
    per_graph = []
    for g in range(3):
        xs = x[index[g][valid[g]].numpy()]
        assert len(xs) == min(samples, sizes[g])
        per_graph.append(k(z[g], z[g]).mean() - k(xs, z[g]).sum() / (len(xs) * z.shape[1]))
    got = mmd_loss(t64(x), t64(z), torch.tensor(sizes), sigma, samples, generator=torch.Generator().manual_seed(9))
    assert abs(float(got) - np.mean(per_graph)) < TOL
    full = mmd_loss(t64(x), t64(z), torch.tensor(sizes), sigma, samples=100)
    assert abs(float(full) - float(got)) > 1e-6, "subsampling made no difference: the test is blind"


def test_position_mse_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(11, 3)), rng.normal(size=(11, 3))
    got = position_mse(t64(a), t64(b))
    assert got.shape == ()
    assert abs(float(got) - np.mean((a - b) ** 2)) < TOL


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_mmd_is_e3_invariant(reflect):
    """Rotating/reflecting and translating real and virtual coordinates together leaves MMD unchanged."""
    rng = np.random.default_rng(3)
    sizes = [6, 4]
    x = rng.normal(size=(10, 3))
    z = rng.normal(size=(2, 3, 3))
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    before = float(mmd_loss(t64(x), t64(z), torch.tensor(sizes), 1.5, samples=100))
    after = float(mmd_loss(t64(x @ q + t), t64(z @ q + t), torch.tensor(sizes), 1.5, samples=100))
    assert abs(before - after) < TOL
    moved = float(mmd_loss(t64(x + t), t64(z), torch.tensor(sizes), 1.5, samples=100))
    assert abs(moved - before) > 1e-6, "moving only one input must change MMD"
