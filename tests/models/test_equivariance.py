"""Symmetry and batching contract of every registered model, in float64.

One test set parametrised over `available_models()`: a model is covered the moment it is
registered.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.geometry import random_orthogonal

from fastegnn_md import FramePair, collate
from fastegnn_md.models import available_models, build_model
from symmetry_helpers import close, make_pairs, on_device, perturbed_model, run, transformed  # tests/models/

@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("drop_rate", [0.0, 0.5, 1.0])
def test_e3_equivariance(name: str, reflect: bool, drop_rate: float) -> None:
    rng = np.random.default_rng(1)
    model = perturbed_model(name)
    pairs = make_pairs(rng)
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 5.0
    with torch.no_grad():
        x, z = run(model, pairs, drop_rate=drop_rate)
        x_g, z_g = run(model, transformed(pairs, q, t), drop_rate=drop_rate)
    inputs = np.concatenate([p.positions for p in pairs])
    assert np.abs(x - inputs).max() > 1e-3, "model output barely moves: the test would not see an error"
    close(x_g, x @ q + t)
    if z is not None:
        close(z_g, z @ q + t)


@pytest.mark.parametrize("name", available_models())
def test_node_permutation(name: str) -> None:
    rng = np.random.default_rng(2)
    model = perturbed_model(name)
    pairs = make_pairs(rng)
    perms = [rng.permutation(p.num_nodes) for p in pairs]
    permuted = [
        FramePair(p.positions[s], p.velocities[s], p.target_positions[s], p.node_attrs[s]) for p, s in zip(pairs, perms)
    ]
    offsets = np.cumsum([0] + [p.num_nodes for p in pairs])[:-1]
    global_perm = np.concatenate([s + o for s, o in zip(perms, offsets)])
    with torch.no_grad():
        x, z = run(model, pairs)
        x_p, z_p = run(model, permuted)
    close(x_p, x[global_perm])
    if z is not None:  # virtual nodes are permutation-invariant
        close(z_p, z)


@pytest.mark.parametrize("name", available_models())
def test_graphs_in_a_batch_do_not_leak(name: str) -> None:
    rng = np.random.default_rng(3)
    model = perturbed_model(name)
    a, b, c = make_pairs(rng)
    b_changed = FramePair(b.positions + 3.0 * rng.normal(size=b.positions.shape), -b.velocities, b.target_positions, -b.node_attrs)
    with torch.no_grad():
        alone, z_alone = run(model, [a])
        together, z_together = run(model, [a, b, c])
        changed, z_changed = run(model, [a, b_changed, c])
    n = a.num_nodes
    close(together[:n], alone)
    close(changed[:n], alone)
    if z_alone is not None:
        close(z_together[0], z_alone[0])
        close(z_changed[0], z_alone[0])


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edgeless_and_isolated_graphs_run(name: str, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(4)
    model = perturbed_model(name).to(dtype)
    batch = on_device(collate(make_pairs(rng), cutoff=0.01, dtype=dtype))  # no node pair this close
    assert batch.num_edges == 0
    with torch.no_grad():
        out = model(batch)
    assert out.positions.dtype == dtype
    assert torch.isfinite(out.positions).all()
    if out.virtual_positions is not None:
        assert out.virtual_positions.shape == (3, 3, 3)


def test_fastegnn_channels_are_ordered_but_global_nodes_are_not() -> None:
    """Ordered virtual nodes separate; the unordered-set ablation keeps them identical (Fig. 4a)."""
    rng = np.random.default_rng(5)
    pairs = make_pairs(rng, sizes=(12,))
    with torch.no_grad():
        _, z_ordered = run(perturbed_model("fastegnn"), pairs)
        _, z_global = run(perturbed_model("global_nodes"), pairs)
    spread = lambda z: np.abs(z[0] - z[0].mean(axis=0)).max()  # noqa: E731
    assert spread(z_ordered) > 1e-3
    assert spread(z_global) < 1e-12


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'egnn2'"):
        build_model("egnn2", node_features=2, edge_features=2)


@pytest.mark.parametrize("name", available_models())
def test_chunked_evaluation_matches_single_chunk(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edges and node-channel rows are processed in cache-sized chunks; the chunk size must not
    change the result (beyond float64 round-off), for outputs and for gradients."""
    from fastegnn_md.models import kernels

    rng = np.random.default_rng(6)
    pairs = make_pairs(rng, sizes=(40, 25))
    batch = on_device(collate(pairs, cutoff=2.5, dtype=torch.float64))
    assert batch.num_edges > 100

    def outputs_and_grads():
        model = perturbed_model(name)
        out = model(batch)
        loss = out.positions.square().sum()
        if out.virtual_positions is not None:
            loss = loss + out.virtual_positions.square().sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out.positions, grads

    x_one, g_one = outputs_and_grads()
    monkeypatch.setattr(kernels, "EDGE_CHUNK", 7)
    x_many, g_many = outputs_and_grads()
    close(x_many, x_one)
    assert len(g_one) == len(g_many)
    for a, b in zip(g_one, g_many):
        close(b, a)


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_length_scale_keeps_equivariance_and_rescales(name: str, reflect: bool) -> None:
    """A model with length_scale L on data x equals the unscaled model on x / L, times L."""
    rng = np.random.default_rng(2)
    scale = 7.3
    plain = perturbed_model(name)
    scaled = perturbed_model(name)
    scaled.set_length_scale(scale)
    pairs = make_pairs(rng)
    big = [FramePair(p.positions * scale, p.velocities * scale, p.target_positions * scale, p.node_attrs) for p in pairs]
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 5.0
    with torch.no_grad():
        x, z = run(plain, pairs)
        x_big, z_big = run(scaled, big, cutoff=2.5 * scale)
        x_g, z_g = run(scaled, transformed(big, q, t), cutoff=2.5 * scale)
    close(x_big, x * scale)
    close(x_g, x_big @ q + t)
    if z is not None:
        close(z_big, z * scale)
        close(z_g, z_big @ q + t)


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_time_scale_keeps_equivariance_and_scales_velocities(name: str, reflect: bool) -> None:
    """A model with time_scale T on velocities v equals the plain model on v·T (the displacement
    over T), also with a length scale, and stays E(3)-equivariant."""
    rng = np.random.default_rng(3)
    time_scale, length_scale = 0.075, 3.1
    plain = perturbed_model(name)
    timed = perturbed_model(name)
    timed.set_time_scale(time_scale)
    pairs = make_pairs(rng)
    slow = [FramePair(p.positions, p.velocities / time_scale, p.target_positions, p.node_attrs) for p in pairs]
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 5.0
    with torch.no_grad():
        x, z = run(plain, pairs)
        x_slow, z_slow = run(timed, slow)
        x_g, z_g = run(timed, transformed(slow, q, t))
        both = perturbed_model(name)
        both.set_time_scale(time_scale)
        both.set_length_scale(length_scale)
        big = [FramePair(p.positions * length_scale, p.velocities * length_scale, p.target_positions * length_scale,
                         p.node_attrs) for p in slow]
        x_big, _ = run(both, big, cutoff=2.5 * length_scale)
    close(x_slow, x)
    close(x_g, x_slow @ q + t)
    close(x_big, x * length_scale)
    if z is not None:
        close(z_slow, z)
        close(z_g, z_slow @ q + t)
    with pytest.raises(ValueError, match="time_scale must be a positive time"):
        plain.set_time_scale(0.0)
