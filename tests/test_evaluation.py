"""`evaluation`: the model scored beside "no motion" and "constant velocity", lab frame and aligned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastegnn_md.evaluation import jump_scores, predict_positions
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.graph import FramePair, feature_dims
from fastegnn_md.models import build_model
from fastegnn_md.training import evaluate_mse

ROOT = Path(__file__).resolve().parents[1]


def pair_moving_linearly(rng: np.random.Generator, n: int = 6, dt: float = 2.0) -> FramePair:
    """Atoms moving at constant velocity for ``dt``: constant velocity predicts them exactly."""
    positions, velocities = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    return FramePair(positions, velocities, positions + dt * velocities, np.zeros((n, 0)), metadata={"dt": dt})


def test_trivial_predictors_by_hand():
    rng = np.random.default_rng(3)
    pairs = [pair_moving_linearly(rng) for _ in range(3)]
    displacement = np.concatenate([p.target_positions - p.positions for p in pairs])
    scores = jump_scores(pairs, [p.positions for p in pairs], dt=99.0)  # metadata dt wins over the fallback
    assert scores["constant_velocity"]["mse"] == pytest.approx(0.0, abs=1e-24)
    assert scores["constant_velocity"]["aligned_mse"] == pytest.approx(0.0, abs=1e-20)
    assert scores["no_motion"]["mse"] == pytest.approx(np.mean(displacement**2), rel=1e-12)
    assert scores["model"] == scores["no_motion"]  # the "model" here predicts no motion


def test_aligned_mse_forgives_rigid_motion_only():
    """A target that is the input rotated and moved: no motion is perfect once aligned, not in the
    lab frame. A mirror image is not a rigid motion (chirality), nor is an internal deformation."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 3)) * 3
    mirrored = FramePair(x, np.zeros_like(x), x @ random_orthogonal(rng, reflect=True), np.zeros((8, 0)))
    assert jump_scores([mirrored], [x], dt=1.0)["no_motion"]["aligned_mse"] > 0.1
    moved = x @ random_orthogonal(rng) + rng.normal(size=3) * 5
    pair = FramePair(x, np.zeros_like(x), moved, np.zeros((8, 0)), metadata={"dt": 1.0})
    scores = jump_scores([pair], [x], dt=1.0)
    assert scores["no_motion"]["mse"] > 1.0
    assert scores["no_motion"]["aligned_mse"] == pytest.approx(0.0, abs=1e-20)
    bent = moved.copy()
    bent[0] += 1.0
    assert jump_scores([pair], [bent], dt=1.0)["model"]["aligned_mse"] > 1e-3


def test_moving_mask_scores_moving_nodes_only():
    rng = np.random.default_rng(5)
    pair = pair_moving_linearly(rng, n=6)
    pair.moving = np.array([True, True, True, True, False, False])
    guess = pair.positions.copy()
    guess[4:] += 100.0  # walls: not predictions, not scored
    expected = np.mean((pair.target_positions[:4] - pair.positions[:4]) ** 2)
    assert jump_scores([pair], [guess], dt=1.0)["model"]["mse"] == pytest.approx(expected, rel=1e-12)


def test_predictions_split_per_pair_and_match_evaluate_mse():
    """Predictions come back one array per pair, in order (pairs of different sizes), and pool to
    the same MSE as `evaluate_mse`."""
    rng = np.random.default_rng(6)
    pairs = [pair_moving_linearly(rng, n=n) for n in (4, 7, 5)]
    torch.manual_seed(0)
    model = build_model("egnn", node_features=feature_dims(0)[0], edge_features=feature_dims(0)[1], hidden=8, layers=2).double()
    predicted = predict_positions(model, pairs, cutoff=None, drop_rate=0.0, batch_size=2, dtype=torch.float64)
    assert [p.shape for p in predicted] == [(4, 3), (7, 3), (5, 3)]
    alone = predict_positions(model, pairs[1:2], cutoff=None, drop_rate=0.0, dtype=torch.float64)[0]
    np.testing.assert_allclose(predicted[1], alone, rtol=0, atol=1e-12)
    mse = evaluate_mse(model, pairs, cutoff=None, drop_rate=0.0, batch_size=2, dtype=torch.float64)
    assert jump_scores(pairs, predicted, dt=1.0)["model"]["mse"] == pytest.approx(mse, rel=1e-10)


def test_constant_velocity_on_md_extrapolates_the_last_jump():
    """With the backward velocity (x_t - x_(t-jump)) / Δt of a real trajectory, constant velocity is
    2 x_t - x_(t-jump): the trajectory's own earlier frame, not a velocity in other units."""
    from fastegnn_md.adapters.mdanalysis.kind import MDOptions, open_md_trajectory

    dataset = open_md_trajectory(ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc", MDOptions(jump=4, progress=False))
    pairs = dataset.load("train", 30)
    frames = {pair.metadata["frames"][0]: pair.positions for pair in pairs}
    checked = 0
    for pair in pairs:
        t = pair.metadata["frames"][0]
        if t - 4 in frames:
            extrapolated = pair.positions + pair.metadata["dt"] * pair.velocities
            np.testing.assert_allclose(extrapolated, 2 * pair.positions - frames[t - 4], atol=1e-4)
            checked += 1
    assert checked > 5
