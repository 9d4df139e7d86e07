"""The density term (`losses.kernel_density`, `losses.density_loss`) and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.graph import local_pairs
from fastegnn_md.losses import density_loss, kernel_density
from fastegnn_md.training import TrainConfig

H = 0.1


def pairs_of(x: torch.Tensor, radius: float = H, sizes=None) -> torch.Tensor:
    return torch.as_tensor(local_pairs(x.detach().numpy(), sizes or [len(x)], radius))


def brute_density(x: np.ndarray, radius: float) -> np.ndarray:
    r2 = ((x[:, None] - x[None]) ** 2).sum(-1) / radius**2
    w = np.clip(1.0 - r2, 0.0, None) ** 3
    np.fill_diagonal(w, 0.0)
    return w.sum(axis=1)


def test_kernel_density_hand_case_and_brute_force():
    # Two particles h/2 apart: each weighs (1 - 1/4)^3 for the other; a third beyond h adds nothing.
    x = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.3, 0.0, 0.0]], dtype=torch.float64)
    rho = kernel_density(x, pairs_of(x), H)
    assert torch.allclose(rho, torch.tensor([0.75**3, 0.75**3, 0.0], dtype=torch.float64), atol=1e-15, rtol=0)
    cloud = np.random.default_rng(0).uniform(0.0, 0.3, size=(60, 3))
    np.testing.assert_allclose(kernel_density(torch.as_tensor(cloud), pairs_of(torch.as_tensor(cloud)), H).numpy(),
                               brute_density(cloud, H), rtol=1e-12, atol=1e-14)
    # Extra pairs beyond h weigh nothing; no pair at all gives zero density.
    wide = pairs_of(torch.as_tensor(cloud), 0.2)
    np.testing.assert_allclose(kernel_density(torch.as_tensor(cloud), wide, H).numpy(), brute_density(cloud, H),
                               rtol=1e-12, atol=1e-14)
    assert float(kernel_density(x, torch.zeros((2, 0), dtype=torch.int64), H).abs().sum()) == 0.0


def lattice(spacing: float, n: int = 5) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(float(n))] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * spacing


def test_zero_for_the_target_and_larger_the_more_the_water_is_compressed():
    target = torch.as_tensor(lattice(0.04))
    assert float(density_loss(target, target, pairs_of(target), pairs_of(target), H)) == 0.0
    losses = []
    for squeeze in (0.95, 0.9, 0.8):
        predicted = target * torch.tensor([1.0, squeeze, 1.0], dtype=torch.float64)
        losses.append(float(density_loss(predicted, target, pairs_of(predicted), pairs_of(target), H)))
    assert 0.0 < losses[0] < losses[1] < losses[2]
    # A pure translation of every particle (no compression) costs nothing.
    shifted = target + torch.tensor([0.01, -0.2, 0.3], dtype=torch.float64)
    assert float(density_loss(shifted, target, pairs_of(shifted), pairs_of(target), H)) < 1e-24


@pytest.mark.parametrize("reflect", [False, True])
def test_e3_and_permutation_invariant(reflect):
    rng = np.random.default_rng(1)
    target = torch.as_tensor(lattice(0.04) + rng.normal(scale=0.005, size=(125, 3)))
    predicted = target + torch.as_tensor(rng.normal(scale=0.01, size=(125, 3)))
    moving = torch.as_tensor(rng.random(125) < 0.8)
    base = float(density_loss(predicted, target, pairs_of(predicted), pairs_of(target), H, moving))
    q = torch.as_tensor(random_orthogonal(rng, reflect=reflect))
    shift = torch.as_tensor(rng.normal(size=3))
    p2, t2 = predicted @ q.T + shift, target @ q.T + shift
    assert abs(float(density_loss(p2, t2, pairs_of(p2), pairs_of(t2), H, moving)) - base) < 1e-12
    perm = torch.as_tensor(rng.permutation(125))
    p3, t3 = predicted[perm], target[perm]
    assert abs(float(density_loss(p3, t3, pairs_of(p3), pairs_of(t3), H, moving[perm])) - base) < 1e-12


def test_walls_count_as_neighbours_but_only_moving_particles_are_scored():
    target = torch.as_tensor(lattice(0.04, 3))
    wall = torch.zeros(len(target), dtype=torch.bool)
    wall[:9] = True  # the x = 0 layer
    predicted = target.clone()
    predicted[~wall] *= torch.tensor([1.0, 0.9, 1.0], dtype=torch.float64)  # the water squeezed, walls fixed
    scored = density_loss(predicted, target, pairs_of(predicted), pairs_of(target), H, ~wall)
    expected = brute_density(predicted.numpy(), H) - brute_density(target.numpy(), H)
    assert abs(float(scored) - float((expected[~wall.numpy()] ** 2).mean())) < 1e-14
    empty = density_loss(predicted.requires_grad_(), target, pairs_of(predicted), pairs_of(target), H,
                         torch.zeros(len(target), dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_gradient_matches_finite_differences_and_pushes_a_squeezed_pair_apart():
    target = torch.tensor([[0.0, 0.0, 0.0], [0.06, 0.0, 0.0]], dtype=torch.float64)
    predicted = torch.tensor([[0.0, 0.0, 0.0], [0.03, 0.01, 0.0]], dtype=torch.float64, requires_grad=True)
    fixed_pairs = torch.tensor([[0], [1]])
    loss = density_loss(predicted, target, fixed_pairs, fixed_pairs, H)
    (grad,) = torch.autograd.grad(loss, predicted)
    assert grad[1, 0] < 0 < grad[0, 0]  # a descent step moves the squeezed pair apart along x
    eps = 1e-7
    for atom in range(2):
        for axis in range(3):
            step = torch.zeros_like(predicted)
            step[atom, axis] = eps
            up = density_loss(predicted.detach() + step, target, fixed_pairs, fixed_pairs, H)
            down = density_loss(predicted.detach() - step, target, fixed_pairs, fixed_pairs, H)
            assert abs(float(grad[atom, axis]) - float(up - down) / (2 * eps)) < 1e-6


def test_training_records_the_term_and_checks_its_settings(tmp_path, random_walk_training):
    record = random_walk_training(tmp_path, seed=3, density_weight=1.0, density_radius=3.0)
    assert record["train_density"] > 0
    assert record["train_loss"] > record["train_mse"]
    with pytest.raises(ValueError, match="density_weight"):
        TrainConfig(density_weight=-1.0)
    with pytest.raises(ValueError, match="density_radius"):
        TrainConfig(density_weight=1.0, density_radius=0.0)
    with pytest.raises(ValueError, match="needs a density_radius"):
        TrainConfig(density_weight=1.0, cutoff=None)
