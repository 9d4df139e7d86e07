"""The kinetic-energy term (`losses.kinetic_energy_loss`) and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import kinetic_energy_loss
from fastegnn_md.training import TrainConfig

TOL = 1e-12


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def rms(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def test_loss_is_the_mean_squared_log_ratio_of_each_graphs_rms_displacement():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3))
    y, p = x + 0.1 * rng.normal(size=(10, 3)), x + 0.03 * rng.normal(size=(10, 3))
    batch = torch.as_tensor(np.repeat([0, 1], [6, 4]))
    expected = (np.log(rms(p[:6] - x[:6]) / rms(y[:6] - x[:6])) ** 2
                + np.log(rms(p[6:] - x[6:]) / rms(y[6:] - x[6:])) ** 2) / 2
    got = float(kinetic_energy_loss(t64(p), t64(y), t64(x), batch, 2))
    assert abs(got - expected) < 1e-10  # the floor under the log is far below this
    one = torch.zeros(10, dtype=torch.long)
    # A splash damped by a factor s costs log(s)^2; water at rest jittering 10x the data's motion
    # costs log(10)^2: the same size, however small the motion (the term has no length unit).
    for motion in (0.1, 0.0003):
        target = x + motion * rng.normal(size=(10, 3))
        damped = float(kinetic_energy_loss(t64(x + 0.5 * (target - x)), t64(target), t64(x), one, 1))
        assert abs(damped - np.log(0.5) ** 2) < 1e-9
        jitter = float(kinetic_energy_loss(t64(x + 10 * (target - x)), t64(target), t64(x), one, 1))
        assert abs(jitter - np.log(10) ** 2) < 1e-9
    assert abs(float(kinetic_energy_loss(t64(1e3 * p), t64(1e3 * y), t64(1e3 * x), batch, 2)) - expected) < 1e-10


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_loss_is_e3_and_permutation_invariant(reflect):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3))
    y, p = x + 0.2 * rng.normal(size=(9, 3)), x + 0.05 * rng.normal(size=(9, 3))
    one = torch.zeros(9, dtype=torch.long)
    before = float(kinetic_energy_loss(t64(p), t64(y), t64(x), one, 1))
    assert before > 1e-3
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    moved = float(kinetic_energy_loss(t64(p @ q + t), t64(y @ q + t), t64(x @ q + t), one, 1))
    assert abs(moved - before) < TOL
    perm = rng.permutation(9)
    assert abs(float(kinetic_energy_loss(t64(p[perm]), t64(y[perm]), t64(x[perm]), one, 1)) - before) < TOL
    # A graph-level figure: the same energy in other directions costs nothing.
    assert float(kinetic_energy_loss(t64(x + (y - x) @ q), t64(y), t64(x), one, 1)) < 1e-10


def test_moving_nodes_only_and_a_finite_gradient_at_rest():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    y = x + 0.1 * rng.normal(size=(5, 3))
    moving = torch.as_tensor([True, True, True, True, False])
    disturbed = y.copy()
    disturbed[4] += 40.0  # a wall particle: not predicted, not scored
    one = torch.zeros(5, dtype=torch.long)
    assert float(kinetic_energy_loss(t64(disturbed), t64(y), t64(x), one, 1, moving)) < 1e-10
    assert float(kinetic_energy_loss(t64(disturbed), t64(y), t64(x), one, 1)) > 1.0
    still = t64(x).requires_grad_()
    loss = kinetic_energy_loss(still, t64(x), t64(x), one, 1)  # nothing moves, predicted or observed
    loss.backward()
    assert torch.isfinite(still.grad).all()
    empty = kinetic_energy_loss(t64(x).requires_grad_(), t64(y), t64(x), one, 1, torch.zeros(5, dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_training_with_the_energy_term_records_it_and_checks_its_setting(tmp_path, random_walk_training):
    record = random_walk_training(tmp_path, seed=3, energy_weight=5.0)
    assert record["train_energy"] > 0
    assert record["train_loss"] > record["train_mse"]
    with pytest.raises(ValueError, match="energy_weight"):
        TrainConfig(energy_weight=-1.0)
