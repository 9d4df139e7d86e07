"""The radius-of-gyration term (`losses.gyration_loss`) and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import gyration_loss
from fastegnn_md.training import TrainConfig

TOL = 1e-12


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def rg(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))))


def test_loss_is_the_mean_squared_change_of_each_graphs_radius_of_gyration():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(4, 3)) * 3
    ta, tb = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    batch = torch.as_tensor(np.repeat([0, 1], [6, 4]))
    expected = ((rg(a) - rg(ta)) ** 2 + (rg(b) - rg(tb)) ** 2) / 2
    got = float(gyration_loss(t64(np.concatenate([a, b])), t64(np.concatenate([ta, tb])), batch, 2))
    assert abs(got - expected) < TOL
    # A uniform shrink by s about the centroid costs exactly ((1 - s) Rg)^2, however many atoms:
    # the bias a per-atom term spreads over its noise.
    s = 0.99
    shrunk = ta.mean(0) + s * (ta - ta.mean(0))
    assert abs(float(gyration_loss(t64(shrunk), t64(ta), torch.zeros(6, dtype=torch.long), 1))
               - ((1 - s) * rg(ta)) ** 2) < TOL


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_loss_is_e3_and_permutation_invariant_and_sees_only_the_envelope(reflect):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 3)) * 2, rng.normal(size=(9, 3))
    one = torch.zeros(9, dtype=torch.long)
    before = float(gyration_loss(t64(x), t64(y), one, 1))
    assert before > 1e-3
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    moved = float(gyration_loss(t64(x @ q + t), t64(y @ random_orthogonal(rng, reflect) - t), one, 1))
    assert abs(moved - before) < TOL
    perm = rng.permutation(9)
    assert abs(float(gyration_loss(t64(x[perm]), t64(y), one, 1)) - before) < TOL  # a graph-level figure
    # Rigid copies, and any rearrangement with the same Rg, cost nothing.
    assert float(gyration_loss(t64(x @ q + t), t64(x), one, 1)) < TOL


def test_moving_nodes_only_and_a_gradient_with_no_node():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    moving = torch.as_tensor([True, True, True, True, False])
    disturbed = x.copy()
    disturbed[4] += 40.0
    one = torch.zeros(5, dtype=torch.long)
    assert float(gyration_loss(t64(disturbed), t64(x), one, 1, moving)) < TOL
    assert float(gyration_loss(t64(disturbed), t64(x), one, 1)) > 1.0
    empty = gyration_loss(t64(x).requires_grad_(), t64(x), one, 1, torch.zeros(5, dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_training_with_the_gyration_term_records_it_and_checks_its_setting(tmp_path, random_walk_training):
    record = random_walk_training(tmp_path, seed=3, gyration_weight=5.0)
    assert record["train_gyration"] > 0
    assert record["train_loss"] > record["train_mse"]
    with pytest.raises(ValueError, match="gyration_weight"):
        TrainConfig(gyration_weight=-1.0)
