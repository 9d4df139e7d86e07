"""The radial-distance (envelope) term (`losses.radial_distance_loss`) and its use in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastegnn_md.adapters.mdanalysis.pairs import frame_pairs
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import radial_distance_loss
from fastegnn_md.training import TrainConfig, Trainer

TOL = 1e-12


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def one_graph(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


def test_loss_is_the_mean_squared_change_of_each_distance_to_the_centroid():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    expected = np.mean((np.linalg.norm(x - x.mean(0), axis=1) - np.linalg.norm(y - y.mean(0), axis=1)) ** 2)
    assert abs(float(radial_distance_loss(t64(x), t64(y), one_graph(7), 1)) - expected) < TOL
    # A structure shrunk by s about its centroid: every radius r becomes s r, the term (1 - s)^2 <r^2>
    # (the squared radius of gyration), which position MSE against a moving target does not isolate.
    s = 0.9
    shrunk = y.mean(0) + s * (y - y.mean(0))
    rg2 = np.mean(np.sum((y - y.mean(0)) ** 2, axis=1))
    assert abs(float(radial_distance_loss(t64(shrunk), t64(y), one_graph(7), 1)) - (1 - s) ** 2 * rg2) < TOL
    empty = radial_distance_loss(t64(x).requires_grad_(), t64(y), one_graph(7), 1, torch.zeros(7, dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_loss_is_e3_and_permutation_invariant_and_zero_for_a_rigid_copy(reflect):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 3)) * 2, rng.normal(size=(9, 3)) * 2
    before = float(radial_distance_loss(t64(x), t64(y), one_graph(9), 1))
    assert before > 1e-3
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    # Each frame moved on its own: the term compares radii, not positions.
    moved = float(radial_distance_loss(t64(x @ q + t), t64(y @ random_orthogonal(rng, reflect) - t), one_graph(9), 1))
    assert abs(moved - before) < TOL
    perm = rng.permutation(9)
    assert abs(float(radial_distance_loss(t64(x[perm]), t64(y[perm]), one_graph(9), 1)) - before) < TOL
    assert float(radial_distance_loss(t64(x @ q + t), t64(x), one_graph(9), 1)) < TOL


def test_each_graph_has_its_own_centroid_and_only_moving_nodes_count():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    batch = torch.as_tensor(np.repeat([0, 1], [4, 5]))
    # The second graph moved far away on its own: a shared centroid would change every radius.
    x = np.concatenate([a, b + 100.0])
    target = np.concatenate([a, b])
    assert float(radial_distance_loss(t64(x), t64(target), batch, 2)) < TOL
    # Nodes outside the mask change neither the mean nor the centroids.
    moving = torch.as_tensor([True, True, True, False, True, True, True, True, False])
    disturbed = x.copy()
    disturbed[3] += 50.0
    disturbed[8] -= 50.0
    assert float(radial_distance_loss(t64(disturbed), t64(target), batch, 2, moving)) < TOL
    assert float(radial_distance_loss(t64(disturbed), t64(target), batch, 2)) > 1.0


def test_training_with_the_radial_term_records_it_and_checks_its_setting(tmp_path, random_walk_training):
    record = random_walk_training(tmp_path, seed=3, radial_distance_weight=3.0)
    assert record["train_radial_distance"] > 0
    assert record["train_loss"] > record["train_mse"]
    assert "train_local_distance" not in record
    with pytest.raises(ValueError, match="radial_distance_weight"):
        TrainConfig(radial_distance_weight=float("nan"))
