"""The learned gravity term (``gravity_axis``) of every registered model, in float64.

With gravity along ĝ a model may only be equivariant to the symmetries that keep ĝ: rotations
about ĝ, reflections through planes containing ĝ, translations and node permutations. These
tests check those hold tightly, that a rotation tilting ĝ changes the output (so the tests
can fail), that the term is trained (gradients reach it, Linear learns a constant drop), and
that ``gravity_axis=None`` is the model without the term.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.models import available_models, build_model
from symmetry_helpers import DEVICE, close, make_pairs, on_device, perturbed_model, run, transformed  # tests/models/

AXIS = np.array([0.3, -1.0, 0.2]) / np.linalg.norm([0.3, -1.0, 0.2])  # not a coordinate axis


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """Row-vector form (x @ q) of the rotation by ``angle`` about unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return r.T


def reflection_containing(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflection through a random plane that contains ``axis`` (Householder, normal ⟂ axis)."""
    n = np.cross(axis, rng.normal(size=3))
    n /= np.linalg.norm(n)
    return np.eye(3) - 2.0 * np.outer(n, n)


def gravity_model(name: str, axis=tuple(AXIS), seed: int = 0) -> torch.nn.Module:
    """float64 model with every weight (the gravity head's too) moved off its tiny initial gain."""
    return perturbed_model(name, seed, gravity_axis=axis)


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("kind", ["rotation", "reflection"])
def test_symmetries_that_keep_the_axis_hold(name: str, kind: str) -> None:
    rng = np.random.default_rng(11)
    model = gravity_model(name)
    pairs = make_pairs(rng)
    q = rotation_about(AXIS, 1.234) if kind == "rotation" else reflection_containing(AXIS, rng)
    np.testing.assert_allclose(AXIS @ q, AXIS, atol=1e-14)
    t = rng.normal(size=3) * 5.0
    x, z = run(model, pairs)
    x_g, z_g = run(model, transformed(pairs, q, t))
    close(x_g, x @ q + t)
    if z is not None:
        close(z_g, z @ q + t)


@pytest.mark.parametrize("name", available_models())
def test_node_permutation_with_gravity(name: str) -> None:
    rng = np.random.default_rng(12)
    model = gravity_model(name)
    pairs = make_pairs(rng)
    perms = [rng.permutation(p.num_nodes) for p in pairs]
    permuted = [
        FramePair(p.positions[s], p.velocities[s], p.target_positions[s], p.node_attrs[s]) for p, s in zip(pairs, perms)
    ]
    offsets = np.cumsum([0] + [p.num_nodes for p in pairs])[:-1]
    x, z = run(model, pairs)
    x_p, z_p = run(model, permuted)
    close(x_p, x[np.concatenate([s + o for s, o in zip(perms, offsets)])])
    if z is not None:
        close(z_p, z)


@pytest.mark.parametrize("name", available_models())
def test_a_rotation_that_tilts_the_axis_changes_the_output(name: str) -> None:
    """Rotating the system 90° about an axis ⟂ ĝ is a symmetry without gravity, not with it."""
    rng = np.random.default_rng(13)
    pairs = make_pairs(rng)
    q = rotation_about(np.cross(AXIS, [1.0, 0.0, 0.0]) / np.linalg.norm(np.cross(AXIS, [1.0, 0.0, 0.0])), np.pi / 2)
    t = rng.normal(size=3)
    with_gravity = gravity_model(name)
    x, _ = run(with_gravity, pairs)
    x_g, _ = run(with_gravity, transformed(pairs, q, t))
    assert np.abs(x_g - (x @ q + t)).max() > 1e-3, "gravity term does not break the tilted symmetry"

    plain = gravity_model(name, axis=None)
    x, _ = run(plain, pairs)
    x_g, _ = run(plain, transformed(pairs, q, t))
    close(x_g, x @ q + t)


@pytest.mark.parametrize("name", available_models())
def test_no_axis_is_the_model_without_the_term(name: str) -> None:
    """gravity_axis=None adds no weights (older checkpoints load) and a zero phi_g output adds nothing."""
    rng = np.random.default_rng(14)
    plain = gravity_model(name, axis=None)
    assert not any("gravity" in key for key in plain.state_dict())
    with_gravity = gravity_model(name)
    state = {k: v for k, v in with_gravity.state_dict().items() if not k.startswith("gravity_head.")}
    plain.load_state_dict(state)  # same weights apart from phi_g
    out_layer = with_gravity.gravity_head.net if name == "linear" else with_gravity.gravity_head.net[-1]
    with torch.no_grad():
        out_layer.weight.zero_()
        out_layer.bias.zero_()
    pairs = make_pairs(rng)
    close(run(with_gravity, pairs)[0], run(plain, pairs)[0])


@pytest.mark.parametrize("name", available_models())
def test_gradient_reaches_every_gravity_weight(name: str) -> None:
    """A freshly built model (initial gains, as training starts) gets a gradient on all of phi_g."""
    rng = np.random.default_rng(15)
    torch.manual_seed(0)
    model = build_model(name, node_features=2, edge_features=2, hidden=8, layers=2, gravity_axis=[0, 0, -1])
    model = model.double().to(DEVICE)
    batch = on_device(collate(make_pairs(rng), cutoff=2.5, dtype=torch.float64))
    batch.target_positions = batch.positions - 0.3 * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=DEVICE)
    out = model(batch)
    ((out.positions - batch.target_positions) ** 2).mean().backward()
    head = dict(model.gravity_head.named_parameters())
    assert head
    for key, param in head.items():
        assert param.grad is not None and float(param.grad.abs().max()) > 0.0, key


def test_linear_learns_a_constant_drop_along_gravity() -> None:
    """Ballistic data x' = x + v dt + d ĝ: Linear + gravity recovers alpha = dt and the drop d."""
    rng = np.random.default_rng(16)
    dt, drop = 0.5, 0.2
    g = np.array([0.0, -1.0, 0.0])
    pairs = []
    for _ in range(8):
        x, v = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
        pairs.append(FramePair(x, v, x + v * dt + drop * g, np.ones((20, 1))))
    batch = collate(pairs, dtype=torch.float64)
    torch.manual_seed(0)
    model = build_model("linear", dt=1.0, gravity_axis=g).double()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(batch).positions - batch.target_positions) ** 2).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(closure().detach()) < 1e-8
    assert abs(float(model.alpha.detach()) - dt) < 1e-3
    assert abs(float(model.gravity_head.net.bias.detach()) - drop) < 1e-3


def test_bad_axes_are_refused() -> None:
    for axis in ([0, 0, 0], [1, 2], [float("nan"), 0, 1], "y"):
        with pytest.raises(ValueError, match="gravity_axis"):
            build_model("egnn", node_features=2, edge_features=2, gravity_axis=axis)
    model = build_model("rf", edge_features=2, gravity_axis=[0, 0, -5])
    assert model.gravity_axis == [0.0, 0.0, -1.0]
