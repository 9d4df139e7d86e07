"""Particle-cloud metrics: MSE per horizon, Sinkhorn divergence (POT) against exact OT, kinetic energy."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from fastegnn_md import particle_metrics as pm


def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def test_particle_mse_is_the_mean_squared_distance():
    reference = np.zeros((2, 3))
    predicted = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])  # squared distances 9 and 1
    assert pm.particle_mse(predicted, reference) == pytest.approx(5.0)
    frames = np.stack([reference, predicted, 2 * predicted])
    np.testing.assert_allclose(pm.particle_mse(frames, np.zeros_like(frames)), [0.0, 5.0, 20.0])
    with pytest.raises(ValueError):
        pm.particle_mse(predicted, reference[:1])


def test_mse_at_and_mse_n_per_horizon():
    per_jump = [1.0, 2.0, 3.0, 4.0, 6.0]
    assert pm.mse_at(per_jump, (1, 5, 20)) == {1: 1.0, 5: 6.0, 20: None}
    assert pm.mse_n(per_jump, (1, 2, 5, 20)) == {1: 1.0, 2: 1.5, 5: 3.2, 20: None}


def test_kinetic_energy_from_finite_differences_hand_case():
    # Two particles, dt 0.5: displacements (1, 0, 0) and (0, 2, 0) -> v = (2, 0, 0), (0, 4, 0).
    frames = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0], [1.0, 3.0, 1.0]]])
    velocities = pm.finite_difference_velocities(frames, 0.5)
    np.testing.assert_allclose(velocities, [[[2.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])
    np.testing.assert_allclose(pm.kinetic_energy(velocities), [0.5 * (4.0 + 16.0)])
    assert pm.kinetic_energy(velocities[0], mass=2.0) == pytest.approx(20.0)


def test_nearest_neighbour_distance_is_the_lattice_spacing_and_scales_with_compression():
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * 0.04
    assert pm.mean_nearest_neighbour_distance(grid) == pytest.approx(0.04, rel=1e-12)
    # compressed to 80 % along y (a thinner pool): the nearest neighbours are the y-neighbours
    squeezed = grid * np.array([1.0, 0.8, 1.0])
    assert pm.mean_nearest_neighbour_distance(squeezed) == pytest.approx(0.032, rel=1e-12)
    # two particles: each one's nearest neighbour is the other
    assert pm.mean_nearest_neighbour_distance(np.array([[0.0, 0, 0], [0.0, 0.3, 0.4]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="N >= 2"):
        pm.mean_nearest_neighbour_distance(np.zeros((1, 3)))


def test_neighbour_count_on_a_lattice_and_under_compression():
    grid = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * 0.04
    # within 1.2 spacings only the axis neighbours count: 6 inside, fewer on faces, edges, corners
    per_axis = 2 * 5 / 6  # of 6 positions along an axis, the 2 ends have one neighbour there, the others two
    assert pm.mean_neighbour_count(grid, 0.048) == pytest.approx(3 * per_axis, rel=1e-12)
    # squeezed to 80 % along y the count within 1.2 spacings is unchanged, within 1.3 x-y diagonals join
    squeezed = grid * np.array([1.0, 0.8, 1.0])
    assert pm.mean_neighbour_count(squeezed, 0.048) == pytest.approx(3 * per_axis, rel=1e-12)
    assert pm.mean_neighbour_count(squeezed, 0.052) > pm.mean_neighbour_count(grid, 0.052)
    assert pm.mean_neighbour_count(grid[:1], 0.1) == 0.0
    with pytest.raises(ValueError, match="radius"):
        pm.mean_neighbour_count(grid, 0.0)


def test_identical_clouds_have_zero_divergence():
    x = np.random.default_rng(0).random((40, 3))
    value, converged = pm.sinkhorn_divergence(x, x.copy(), reg=1e-3)
    assert value == 0.0 and converged


def test_shifted_cloud_scores_the_squared_shift():
    x = np.random.default_rng(1).random((50, 3))
    shift = np.array([0.05, -0.2, 0.1])
    value, converged = pm.sinkhorn_divergence(x, x + shift, reg=1e-3)
    assert converged
    assert value == pytest.approx(float(shift @ shift), rel=1e-6)


@pytest.mark.parametrize("reg", [1e-3, 2e-4])
def test_sinkhorn_divergence_approaches_exact_optimal_transport(reg):
    """On a small cloud with well-separated optimal matches the debiased Sinkhorn divergence at
    small ε equals W2² from POT's exact network-simplex solver."""
    rng = np.random.default_rng(2)
    x = rng.random((12, 3))
    y = x[rng.permutation(12)] + rng.normal(0.0, 0.02, (12, 3))  # shuffled: identities do not matter
    exact = ot.emd2(_uniform(12), _uniform(12), ot.dist(x, y))
    value, converged = pm.sinkhorn_divergence(x, y, reg=reg)
    assert converged
    assert value == pytest.approx(exact, rel=1e-6)


def test_isolated_particle_uses_the_log_domain_and_stays_exact():
    """A particle 1.2 away from the other cloud at ε = 1e-3 would underflow exp(-C/ε): the log
    domain takes over, and the divergence still matches exact OT."""
    rng = np.random.default_rng(3)
    x = rng.random((10, 3)) * 0.2
    y = x + rng.normal(0.0, 0.01, x.shape)
    y[0] += [0.0, 1.2, 0.0]
    assert pm.entropic_transport_cost(x, y, 1e-3).method == "sinkhorn_log"
    assert pm.entropic_transport_cost(x, x, 1e-3).method == "sinkhorn"
    exact = ot.emd2(_uniform(10), _uniform(10), ot.dist(x, y))
    value, _ = pm.sinkhorn_divergence(x, y, reg=1e-3)
    assert value == pytest.approx(exact, rel=5e-3)


def test_subsample_is_seeded_sorted_and_bounded():
    assert np.array_equal(pm.subsample_indices(5, 10), np.arange(5))
    a = pm.subsample_indices(1000, 100, seed=4)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(a, pm.subsample_indices(1000, 100, seed=4))
    assert not np.array_equal(a, pm.subsample_indices(1000, 100, seed=5))


def test_default_regularisation_is_the_squared_connectivity_radius():
    assert pm.default_sinkhorn_reg(0.035) == pytest.approx(0.035**2)
    with pytest.raises(ValueError):
        pm.default_sinkhorn_reg(0.0)
