"""Weights that fit a frame pair at rest to its own scale (`losses.rest_weights`, `train --rest-scale`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import REST_WEIGHT_CAP, position_mse, rest_weights
from fastegnn_md.training import TrainConfig


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def three_graphs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Start and target of three graphs: one at rest (RMS displacement 0.001), one moving (0.1),
    one that does not move at all."""
    x = rng.normal(size=(12, 3))
    d = rng.normal(size=(12, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    y = x.copy()
    y[:5] += 0.001 * d[:5]
    y[5:9] += 0.1 * d[5:9]
    return x, y, torch.as_tensor(np.repeat([0, 1, 2], [5, 4, 3]))


def test_a_quiet_graph_weighs_the_square_of_scale_over_its_motion_and_a_moving_one_weighs_one():
    x, y, batch = three_graphs(np.random.default_rng(0))
    w = rest_weights(t64(y), t64(x), batch, 3, 0.01).numpy()
    np.testing.assert_allclose(w[:5], (0.01 / 0.001) ** 2, rtol=1e-10)
    np.testing.assert_array_equal(w[5:9], 1.0)
    np.testing.assert_array_equal(w[9:], REST_WEIGHT_CAP)  # no motion at all: capped, finite
    # the same data in another length unit and its scale: the same weights
    np.testing.assert_allclose(rest_weights(t64(1e3 * y), t64(1e3 * x), batch, 3, 10.0).numpy(), w, rtol=1e-10)


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_weights_are_e3_and_permutation_invariant(reflect):
    rng = np.random.default_rng(1)
    x, y, batch = three_graphs(rng)
    w = rest_weights(t64(y), t64(x), batch, 3, 0.01).numpy()
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    np.testing.assert_allclose(rest_weights(t64(y @ q + t), t64(x @ q + t), batch, 3, 0.01).numpy(), w, rtol=1e-10)
    perm = rng.permutation(12)
    np.testing.assert_allclose(rest_weights(t64(y[perm]), t64(x[perm]), batch[perm], 3, 0.01).numpy(), w[perm],
                               rtol=1e-10)


def test_only_moving_nodes_set_the_scale_and_the_weighted_mse_reduces_to_the_plain_one():
    x, y, batch = three_graphs(np.random.default_rng(2))
    moving = torch.ones(12, dtype=torch.bool)
    moving[5] = False  # a wall particle of the moving graph...
    y[5] = x[5]  # ...that stays put: it must not make its graph look quieter
    y_t, x_t = t64(y), t64(x)
    w = rest_weights(y_t, x_t, batch, 3, 0.01, moving)
    assert w[5] == 1.0 and torch.all(w[6:9] == 1.0)
    predicted = y_t + 0.01
    plain = position_mse(predicted, y_t, moving)
    assert float(position_mse(predicted, y_t, moving, torch.ones(12, dtype=torch.float64))) == pytest.approx(
        float(plain), rel=1e-14)
    weighted = position_mse(predicted, y_t, moving, w)
    # every node's error is 1e-4 per coordinate: the weighted mean is the mean weight of the moving nodes
    assert float(weighted) == pytest.approx(1e-4 * float(w[moving].mean()), rel=1e-12)
    assert not w.requires_grad


def test_the_setting_is_checked():
    with pytest.raises(ValueError, match="rest_scale must be a finite number >= 0"):
        TrainConfig(rest_scale=-0.01)


def test_training_weighs_quiet_pairs_up(tmp_path, random_walk_training):
    # The walk moves each atom ~0.5 Å per frame: a rest scale of 5 Å makes every pair "quiet",
    # weighing it ~(5 / 0.5)^2 = 100, and the logged training MSE is the weighted one.
    plain = random_walk_training(tmp_path / "plain", seed=4)
    weighted = random_walk_training(tmp_path / "weighted", seed=4, rest_scale=5.0)
    assert weighted["train_mse"] > 10 * plain["train_mse"]
