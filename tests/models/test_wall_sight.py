"""Wall sight (``wall_reach``): the two wall features, their symmetries, and a start extended with them.

The features are checked against a brute-force nearest-wall search; the models that read them
are checked, in float64, for rotations, reflections, translations and node permutations with
walls in the graph; a wall beyond the radius graph's cutoff but within reach must change the
prediction (so the features are read), and a start without wall sight extended by ``--init``
must predict exactly what it did.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.checkpoint import DataSpec, load_checkpoint, save_checkpoint
from fastegnn_md.models import build_model
from fastegnn_md.models.wall_sight import WALL_FEATURES, wall_features
from fastegnn_md.training import TrainConfig, init_weights, make_model
from symmetry_helpers import DEVICE, close, on_device, to_numpy  # tests/models/

REACH = 2.0
SIGHTED = ["egnn", "fastegnn", "global_nodes"]


def wall_pairs(rng: np.random.Generator, sizes=((7, 5), (4, 3), (5, 0))) -> list[FramePair]:
    """Graphs of (moving, wall) nodes, walls first then water, shuffled; the last graph has no walls.
    Attributes: one-hot (water, wall)."""
    pairs = []
    for water, walls in sizes:
        n = water + walls
        x = rng.normal(size=(n, 3)) * 1.5
        moving = np.zeros(n, dtype=bool)
        moving[walls:] = True
        order = rng.permutation(n)
        x, moving = x[order], moving[order]
        attrs = np.stack([moving, ~moving], axis=1).astype(np.float64)
        pairs.append(FramePair(x, rng.normal(size=(n, 3)), x, attrs, moving=moving))
    return pairs


def brute_force(pairs: list[FramePair], reach: float) -> np.ndarray:
    rows = []
    for p in pairs:
        walls = np.flatnonzero(~p.moving)
        for i in range(p.num_nodes):
            if not p.moving[i]:
                rows.append((0.0, 0.0))
            elif len(walls) == 0:
                rows.append((1.0, 0.0))
            else:
                offsets = p.positions[walls] - p.positions[i]
                lengths = np.linalg.norm(offsets, axis=1)
                j = int(np.argmin(lengths))
                f = min(lengths[j], reach) / reach
                rows.append((f, float(p.velocities[i] @ offsets[j]) / lengths[j] / reach * (1 - f)))
    return np.array(rows)


def sighted_model(name: str, seed: int = 0) -> torch.nn.Module:
    """float64 model with wall sight, weights moved off their small initial gain (as
    `symmetry_helpers.perturbed_model`), node features [|v|, 2 attributes, 2 wall columns]."""
    torch.manual_seed(seed)
    model = build_model(name, node_features=3 + WALL_FEATURES, edge_features=3, hidden=16, layers=3,
                        virtual_nodes=3, wall_reach=REACH).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.to(DEVICE).eval()


def predict(model: torch.nn.Module, pairs: list[FramePair], cutoff: float = 1.5) -> np.ndarray:
    return to_numpy(model(on_device(collate(pairs, cutoff=cutoff, dtype=torch.float64))).positions)


def test_features_are_the_nearest_wall_clipped_and_tapered():
    """Against a brute-force search: distance / R clipped at 1, speed towards the wall / R tapered."""
    rng = np.random.default_rng(0)
    pairs = wall_pairs(rng)
    batch = collate(pairs, cutoff=1.5, dtype=torch.float64)
    got = wall_features(batch.positions, batch.velocities, batch.moving, batch.graph_sizes, REACH)
    expected = brute_force(pairs, REACH)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-13, rtol=0)
    moving = batch.moving.numpy()
    assert (expected[moving, 0] == 1.0).any() and (expected[moving, 0] < 1.0).any()  # both sides of the clip
    # Without a moving mask there are no walls: every node is out of reach.
    none = wall_features(batch.positions, batch.velocities, None, batch.graph_sizes, REACH)
    np.testing.assert_array_equal(none.numpy(), np.tile([1.0, 0.0], (batch.num_nodes, 1)))


def test_features_are_chunked_without_changing_them(monkeypatch):
    rng = np.random.default_rng(1)
    pairs = wall_pairs(rng, sizes=((40, 9),))
    batch = collate(pairs, cutoff=1.5, dtype=torch.float64)
    whole = wall_features(batch.positions, batch.velocities, batch.moving, batch.graph_sizes, REACH)
    monkeypatch.setattr("fastegnn_md.models.wall_sight._BLOCK", 7)
    chunked = wall_features(batch.positions, batch.velocities, batch.moving, batch.graph_sizes, REACH)
    np.testing.assert_array_equal(chunked.numpy(), whole.numpy())


@pytest.mark.parametrize("name", SIGHTED)
@pytest.mark.parametrize("kind", ["rotation", "reflection"])
def test_wall_sight_keeps_the_model_equivariant(name: str, kind: str):
    rng = np.random.default_rng(2)
    model = sighted_model(name)
    pairs = wall_pairs(rng)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if (np.linalg.det(q) > 0) != (kind == "rotation"):
        q[:, 0] = -q[:, 0]
    t = rng.normal(size=3) * 5.0
    moved = [FramePair(p.positions @ q + t, p.velocities @ q, p.target_positions @ q + t, p.node_attrs,
                       moving=p.moving) for p in pairs]
    close(predict(model, moved), predict(model, pairs) @ q + t)


@pytest.mark.parametrize("name", SIGHTED)
def test_wall_sight_keeps_node_permutations(name: str):
    rng = np.random.default_rng(3)
    model = sighted_model(name)
    pairs = wall_pairs(rng)
    perms = [rng.permutation(p.num_nodes) for p in pairs]
    permuted = [FramePair(p.positions[s], p.velocities[s], p.target_positions[s], p.node_attrs[s], moving=p.moving[s])
                for p, s in zip(pairs, perms)]
    offsets = np.cumsum([0] + [p.num_nodes for p in pairs])[:-1]
    close(predict(model, permuted), predict(model, pairs)[np.concatenate([s + o for s, o in zip(perms, offsets)])])


def test_a_wall_beyond_the_cutoff_is_seen_within_reach():
    """EGNN, one water particle and one wall 1.0 apart, radius graph cutoff 0.5: no edge joins
    them, so only the wall features can tell the model where the wall is. (FastEGNN's virtual
    nodes see every node, walls too, so it is not the model to isolate the features with.)"""
    model = sighted_model("egnn")
    water = np.array([[0.0, 0.0, 0.0]])
    velocity = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    attrs = np.array([[1.0, 0.0], [0.0, 1.0]])

    def with_wall_at(y: float) -> np.ndarray:
        x = np.concatenate([water, [[0.0, y, 0.0]]])
        pair = FramePair(x, velocity, x, attrs, moving=np.array([True, False]))
        return predict(model, [pair], cutoff=0.5)[0]

    near, nearer, far, farther = with_wall_at(-1.0), with_wall_at(-0.8), with_wall_at(-3.0), with_wall_at(-4.0)
    assert np.abs(near - nearer).max() > 1e-6  # within reach: the wall's distance matters
    np.testing.assert_array_equal(far, farther)  # beyond reach (and the cutoff): it does not


def test_models_without_node_features_refuse_wall_sight():
    with pytest.raises(ValueError, match="reads no node features"):
        build_model("linear", wall_reach=REACH)
    with pytest.raises(ValueError, match="wall_reach"):
        TrainConfig(model="rf", wall_reach=REACH)
    with pytest.raises(ValueError, match="positive length"):
        TrainConfig(model="fastegnn", wall_reach=0.0)


def test_a_start_without_wall_sight_is_extended_exactly(tmp_path):
    """--init from a model without wall sight: zero weight on the new columns, so the extended
    model predicts what the start did; the checkpoint it would save rebuilds with its reach."""
    rng = np.random.default_rng(4)
    pairs = wall_pairs(rng)
    spec = DataSpec(cutoff=1.5, num_node_attrs=2)
    plain = TrainConfig(model="fastegnn", hidden=16, layers=2, cutoff=1.5)
    start, start_hparams = make_model(plain, num_node_attrs=2)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_checkpoint(tmp_path / "start.pt", "fastegnn", start_hparams, start, spec)

    sighted = TrainConfig(model="fastegnn", hidden=16, layers=2, cutoff=1.5, wall_reach=REACH)
    model, hparams = make_model(sighted, num_node_attrs=2)
    assert hparams["node_features"] == start_hparams["node_features"] + WALL_FEATURES
    init_weights(model, "fastegnn", hparams, spec, str(path))
    batch = collate(pairs, cutoff=1.5, dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_array_equal(model.eval()(batch).positions.numpy(), start.eval()(batch).positions.numpy())

    # The extended model, saved and loaded, keeps its reach and its outputs.
    with torch.no_grad():
        model.embedding.weight[:, -WALL_FEATURES:] = 0.5  # now the wall columns matter
    saved = load_checkpoint(save_checkpoint(tmp_path / "sighted.pt", "fastegnn", hparams, model, spec))
    rebuilt = saved.build_model()
    assert rebuilt.wall_reach == REACH
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt(batch).positions.numpy(), model(batch).positions.numpy())
        assert np.abs(rebuilt(batch).positions.numpy() - start(batch).positions.numpy()).max() > 1e-4
