"""The moving mask end to end: walls/kinematic nodes are inputs only.

Hand-made cases: which nodes the MSE (training and evaluation) and the MMD see, what the model
outputs for non-moving nodes, and what the Predictor does with an SPH-style spec.
"""

from __future__ import annotations

from math import exp

import numpy as np
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.checkpoint import DataSpec
from fastegnn_md.losses import mmd_loss, moving_subset, position_mse
from fastegnn_md.models import build_model
from fastegnn_md.predictor import Predictor
from fastegnn_md.training import TrainConfig, Trainer, evaluate_mse


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def test_position_mse_counts_only_moving_nodes():
    """Errors per node: (1, 0, 0), (10, 10, 10) [wall], (0, 2, 0) -> (1 + 4) / (2 nodes * 3)."""
    predicted = t64([[1, 0, 0], [10, 10, 10], [0, 2, 0]])
    target = torch.zeros(3, 3, dtype=torch.float64)
    moving = torch.tensor([True, False, True])
    assert abs(float(position_mse(predicted, target, moving)) - 5 / 6) < 1e-15
    assert abs(float(position_mse(predicted, target)) - (1 + 300 + 4) / 9) < 1e-13
    nothing = position_mse(predicted.requires_grad_(), target, torch.zeros(3, dtype=torch.bool))
    assert float(nothing.detach()) == 0.0
    nothing.backward()  # a batch of walls only is a zero loss, not NaN


def test_mmd_pulls_virtual_nodes_towards_moving_targets_only():
    """Graph 0: x = (0,0,0) moving, (5,5,5) wall; graph 1: (1,0,0) moving. One virtual node each,
    sigma 1: per graph 1 - k(x, z); the wall is left out."""
    real = t64([[0, 0, 0], [5, 5, 5], [1, 0, 0]])
    batch_index = torch.tensor([0, 0, 1])
    moving = torch.tensor([True, False, True])
    z = t64([[[0, 1, 0]], [[0, 0, 0]]])
    x, sizes = moving_subset(real, batch_index, 2, moving)
    assert sizes.tolist() == [1, 1]
    got = mmd_loss(x, z, sizes, sigma=1.0, samples=10)
    expected = ((1 - exp(-0.5)) + (1 - exp(-0.5))) / 2
    assert abs(float(got) - expected) < 1e-14
    # A graph with no moving node keeps only its virtual term (no NaN).
    x, sizes = moving_subset(real, batch_index, 2, torch.tensor([False, False, True]))
    got = mmd_loss(x, z, sizes, sigma=1.0, samples=10)
    assert abs(float(got) - ((1 - 0.0) + (1 - exp(-0.5))) / 2) < 1e-14


def wall_pairs(rng: np.random.Generator, wall_target_shift: float = 0.0) -> list[FramePair]:
    """Two graphs of 6 nodes, nodes 0 and 1 walls; attrs: one-hot (water, wall)."""
    pairs = []
    for _ in range(2):
        x = rng.normal(size=(6, 3))
        v = rng.normal(size=(6, 3)) * 0.1
        target = x + v + 0.01 * rng.normal(size=(6, 3))
        target[:2] = x[:2] + wall_target_shift
        attrs = np.zeros((6, 2))
        attrs[2:, 0] = attrs[:2, 1] = 1.0
        pairs.append(FramePair(x, v, target, attrs, moving=np.array([False, False, True, True, True, True])))
    return pairs


def test_non_moving_outputs_are_their_targets_else_inputs():
    rng = np.random.default_rng(0)
    pairs = wall_pairs(rng, wall_target_shift=0.5)
    model = build_model("egnn", node_features=3, edge_features=3, hidden=8, layers=2).double().eval()
    batch = collate(pairs, cutoff=3.0, dtype=torch.float64)
    with torch.no_grad():
        out = model(batch).positions
        # Moving outputs do not depend on the targets at all.
        batch.target_positions = batch.target_positions + 7.0
        again = model(batch).positions
        batch.target_positions = None
        no_targets = model(batch).positions
    walls = ~batch.moving
    torch.testing.assert_close(out[walls], batch.positions[walls] + 0.5, rtol=0, atol=1e-12)
    torch.testing.assert_close(again[batch.moving], out[batch.moving], rtol=0, atol=0)
    torch.testing.assert_close(no_targets[walls], batch.positions[walls], rtol=0, atol=0)


def test_evaluate_mse_hand_case():
    """Linear x + 1·v on 3 nodes: errors (0.1, 0, 0) on the moving node, 2 on the wall ->
    MSE = 0.01 / 3 over the moving node only."""
    x = np.zeros((3, 3))
    v = np.zeros((3, 3))
    target = np.array([[0.1, 0, 0], [2.0, 0, 0], [0, 0, 0]])
    pair = FramePair(x, v, target, np.ones((3, 1)), moving=np.array([True, False, False]))
    model = build_model("linear", dt=1.0).double()
    mse = evaluate_mse(model, [pair], cutoff=None, drop_rate=0.0, dtype=torch.float64)
    assert abs(mse - 0.01 / 3) < 1e-15


def test_training_ignores_wall_targets(tmp_path):
    """Moving the walls' targets changes nothing: same losses, same weights."""
    config = TrainConfig(model="fastegnn", hidden=8, layers=1, virtual_nodes=2, cutoff=3.0, epochs=2, batch_size=2,
                         sigma=1.0, mmd_weight=0.5, mmd_samples=3, dtype="float64")
    spec = {"units": {"length": "dimensionless", "time": "dimensionless"}}
    runs = []
    for shift, name in ((0.0, "a"), (3.0, "b")):
        pairs = wall_pairs(np.random.default_rng(1), wall_target_shift=shift)
        trainer = Trainer(config, pairs, pairs[:1], tmp_path / name, spec, progress=False)
        summary = trainer.fit(resume=False)
        runs.append((summary["best_valid_mse"], trainer.state.history, trainer.model.state_dict()))
    (mse_a, log_a, w_a), (mse_b, log_b, w_b) = runs
    assert mse_a == mse_b
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    for key in w_a:
        torch.testing.assert_close(w_a[key], w_b[key], rtol=0, atol=0)


def test_predictor_holds_walls_from_the_spec_columns():
    """An SPH-style spec marks column 1 as kinematic: walls stay put (or go where told)."""
    rng = np.random.default_rng(2)
    pair = wall_pairs(rng)[0]
    spec = DataSpec(cutoff=3.0, num_node_attrs=2, extra={"kinematic_attr_columns": [1]})
    torch.manual_seed(0)
    model = build_model("egnn", node_features=3, edge_features=3, hidden=8, layers=2)
    predictor = Predictor(model, spec, "egnn")
    jump = predictor.predict(pair.positions, pair.velocities, pair.node_attrs)
    np.testing.assert_allclose(jump.positions[:2], pair.positions[:2], rtol=0, atol=1e-6)
    assert np.abs(jump.positions[2:] - pair.positions[2:]).max() > 1e-6
    later = pair.positions + 1.0
    moved = predictor.predict(pair.positions, pair.velocities, pair.node_attrs, kinematic_positions=later)
    np.testing.assert_allclose(moved.positions[:2], later[:2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(moved.positions[2:], jump.positions[2:], rtol=0, atol=1e-6)
    # An explicit mask overrides the spec; a batch of frames works the same way.
    everything = predictor.predict(pair.positions, pair.velocities, pair.node_attrs, moving=np.ones(6, bool))
    assert np.abs(everything.positions[:2] - pair.positions[:2]).max() > 1e-6
    batch = predictor.predict(np.stack([pair.positions] * 2), np.stack([pair.velocities] * 2), pair.node_attrs)
    np.testing.assert_allclose(batch.positions[1], jump.positions, rtol=0, atol=1e-6)
