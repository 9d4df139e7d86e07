"""The local-distance term (`losses.local_distance_loss`, `graph.local_pairs`) and its use in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastegnn_md.adapters.mdanalysis.pairs import frame_pairs
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.graph import local_pairs
from fastegnn_md.losses import local_distance_loss
from fastegnn_md.training import TrainConfig, Trainer

TOL = 1e-12


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def test_loss_is_the_mean_squared_change_of_each_pair_distance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    pairs = np.array([[0, 1, 2], [3, 4, 5]])
    expected = np.mean([(np.linalg.norm(x[i] - x[j]) - np.linalg.norm(y[i] - y[j])) ** 2 for i, j in pairs.T])
    assert abs(float(local_distance_loss(t64(x), t64(y), torch.as_tensor(pairs))) - expected) < TOL
    empty = local_distance_loss(t64(x).requires_grad_(), t64(y), torch.zeros((2, 0), dtype=torch.long))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_with_a_second_sample_it_is_the_variogram_score_of_the_pair_distances():
    """(d_y - (d_x + d_x')/2)^2 per pair: two samples that move a pair together score like one,
    two that move it apart score their distances' mean (and so half their spread) against d_y."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=(6, 3))
    pairs = np.array([[0, 1, 2], [3, 4, 5]])
    x, x2 = y + rng.normal(size=(6, 3)) * 0.3, y + rng.normal(size=(6, 3)) * 0.3

    def d(a, i, j):
        return np.linalg.norm(a[i] - a[j])

    expected = np.mean([(d(y, i, j) - 0.5 * (d(x, i, j) + d(x2, i, j))) ** 2 for i, j in pairs.T])
    got = float(local_distance_loss(t64(x), t64(y), torch.as_tensor(pairs), t64(x2)))
    assert abs(got - expected) < TOL and abs(got - float(local_distance_loss(t64(x), t64(y), torch.as_tensor(pairs)))) > 1e-3
    shift = rng.normal(size=3)  # a second sample that is the first one moved rigidly: the same distances
    assert abs(float(local_distance_loss(t64(x), t64(y), torch.as_tensor(pairs), t64(x + shift)))
               - float(local_distance_loss(t64(x), t64(y), torch.as_tensor(pairs)))) < TOL


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_loss_is_e3_and_permutation_invariant_and_zero_for_a_rigid_copy(reflect):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)) * 2, rng.normal(size=(8, 3)) * 2
    pairs = torch.as_tensor(local_pairs(x, [8], 3.0))
    assert pairs.shape[1] > 3
    before = float(local_distance_loss(t64(x), t64(y), pairs))
    assert before > 1e-3
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 10
    # Each frame moved on its own: the term compares distances, not positions.
    moved = float(local_distance_loss(t64(x @ q + t), t64(y @ random_orthogonal(rng, reflect) - t), pairs))
    assert abs(moved - before) < TOL
    perm = rng.permutation(8)
    inverse = np.argsort(perm)
    permuted_pairs = torch.as_tensor(inverse[pairs.numpy()])
    assert abs(float(local_distance_loss(t64(x[perm]), t64(y[perm]), permuted_pairs)) - before) < TOL
    assert float(local_distance_loss(t64(x @ q + t), t64(x), pairs)) < TOL


def test_local_pairs_stay_inside_each_graph_below_the_cutoff_and_between_moving_nodes():
    rng = np.random.default_rng(2)
    sizes = [5, 7]
    # Both graphs occupy the same region: pairs across graphs would be close, and must not appear.
    positions = np.concatenate([rng.uniform(0, 3, size=(5, 3)), rng.uniform(0, 3, size=(7, 3))])
    pairs = local_pairs(positions, sizes, 2.0)
    graph = np.repeat([0, 1], sizes)
    assert pairs.shape[0] == 2 and pairs.dtype == np.int64
    assert (pairs[0] < pairs[1]).all() and (graph[pairs[0]] == graph[pairs[1]]).all()
    lengths = np.linalg.norm(positions[pairs[0]] - positions[pairs[1]], axis=1)
    assert (lengths < 2.0).all()
    expected = sum(
        int(np.linalg.norm(positions[i] - positions[j]) < 2.0)
        for i in range(12) for j in range(i + 1, 12) if graph[i] == graph[j]
    )
    assert pairs.shape[1] == expected
    moving = np.ones(12, dtype=bool)
    moving[[0, 6]] = False
    kept = local_pairs(positions, sizes, 2.0, moving)
    assert moving[kept].all() and kept.shape[1] == np.sum(moving[pairs[0]] & moving[pairs[1]])


def test_training_with_the_local_term_records_it_and_checks_its_settings(tmp_path, random_walk_training):
    record = random_walk_training(tmp_path, seed=3, local_distance_weight=5.0, local_distance_cutoff=3.0)
    assert record["train_local_distance"] > 0
    assert record["train_loss"] > record["train_mse"]
    with pytest.raises(ValueError, match="local_distance_weight"):
        TrainConfig(local_distance_weight=-1.0)
    with pytest.raises(ValueError, match="local_distance_cutoff"):
        TrainConfig(local_distance_cutoff=0.0)


def test_a_run_trained_by_the_energy_score_takes_the_local_term_over_both_samples(tmp_path, random_walk_training,
                                                                                monkeypatch):
    """With --position-loss energy-score the local term gets the second sample (its variogram
    score); with MSE it gets none."""
    import fastegnn_md.training as training

    seen = []
    real = training.local_distance_loss

    def recording(predicted, target, pairs, other=None):
        # (other, a sample that differs from predicted): equal at the first step, where the noise starts at zero
        seen.append((other is not None, other is not None and not torch.equal(other, predicted)))
        return real(predicted, target, pairs, other)

    monkeypatch.setattr(training, "local_distance_loss", recording)
    sampled = dict(model="fastegnn", noise_channels=2, position_loss="energy-score", local_distance_weight=5.0,
                   local_distance_cutoff=3.0)
    record = random_walk_training(tmp_path / "sampled", seed=3, **sampled)
    assert seen and all(given for given, _ in seen) and any(differs for _, differs in seen)
    assert record["train_local_distance"] > 0
    seen.clear()
    random_walk_training(tmp_path / "mse", seed=3, local_distance_weight=5.0, local_distance_cutoff=3.0)
    assert seen and not any(given for given, _ in seen)
