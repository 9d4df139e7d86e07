"""Where FastEGNN's virtual nodes start (`FastEGNN.virtual_start`): the paper's centre of mass or a
learned weighted centre per channel; symmetry in float64, and why the centroid start needs help."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import mmd_loss
from fastegnn_md.models import build_model
from fastegnn_md.models.kernels import GraphPool
from fastegnn_md.training import TrainConfig
from symmetry_helpers import close, make_pairs, on_device, perturbed_model, run, to_numpy, transformed  # tests/models/


def starts(model, pairs):
    """Z^(0) (B, C, 3) of ``pairs`` as the model computes it."""
    batch = on_device(collate(pairs, cutoff=2.5, dtype=torch.float64))
    pool = GraphPool(batch.batch, batch.graph_sizes, batch.positions.dtype)
    with torch.no_grad():
        h = model.embedding(batch.node_features)
        return to_numpy(model.virtual_start(batch.positions, h, batch.batch, pool))


@pytest.mark.parametrize("name", ["fastegnn", "global_nodes"])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_weighted_start_keeps_e3_equivariance(name, reflect):
    rng = np.random.default_rng(11)
    model = perturbed_model(name, virtual_init="weighted")
    pairs = make_pairs(rng)
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 5.0
    with torch.no_grad():
        x, z = run(model, pairs)
        x_g, z_g = run(model, transformed(pairs, q, t))
    close(x_g, x @ q + t)
    close(z_g, z @ q + t)


def test_weighted_start_is_permutation_invariant_and_per_graph():
    rng = np.random.default_rng(12)
    model = perturbed_model("fastegnn", virtual_init="weighted")
    pairs = make_pairs(rng)
    perms = [rng.permutation(p.num_nodes) for p in pairs]
    permuted = [FramePair(p.positions[s], p.velocities[s], p.target_positions[s], p.node_attrs[s])
                for p, s in zip(pairs, perms)]
    close(starts(model, permuted), starts(model, pairs))
    with torch.no_grad():
        _, z = run(model, pairs)
        _, z_p = run(model, permuted)
    close(z_p, z)
    # A graph's start depends on that graph alone.
    close(starts(model, pairs[:1])[0], starts(model, pairs)[0])


def test_weighted_channels_start_apart_inside_the_graph_and_centroid_channels_together():
    rng = np.random.default_rng(13)
    pair = make_pairs(rng, sizes=(12,))[0]
    weighted = starts(perturbed_model("fastegnn", virtual_init="weighted"), [pair])[0]
    gaps = [np.linalg.norm(weighted[a] - weighted[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 0.05, gaps
    # Convex combinations of the atoms: inside the bounding box of the graph.
    assert (weighted >= pair.positions.min(0) - 1e-12).all() and (weighted <= pair.positions.max(0) + 1e-12).all()
    paper = starts(perturbed_model("fastegnn"), [pair])[0]
    close(paper, np.repeat(pair.positions.mean(0, keepdims=True), 3, axis=0))
    # The unordered ablation shares one weighting: its channels start together.
    shared = starts(perturbed_model("global_nodes", virtual_init="weighted"), [pair])[0]
    close(shared, np.repeat(shared[:1], 3, axis=0))


def test_large_logits_stay_finite():
    rng = np.random.default_rng(14)
    model = perturbed_model("fastegnn", virtual_init="weighted")
    with torch.no_grad():
        model.virtual_weighting.weight.mul_(1e4)
    z = starts(model, make_pairs(rng))
    assert np.isfinite(z).all()


def test_coincident_virtual_nodes_get_no_gradient_apart():
    """Why the paper's start leaves the nodes together: at equal z_c, Eq. 10's gradient is the
    same for every channel, so nothing moves them apart (benchmarks/virtual_node_optimum.py)."""
    rng = np.random.default_rng(15)
    real = torch.as_tensor(rng.normal(size=(40, 3)) * 3.0)
    z = real.mean(0).expand(1, 3, 3).clone().requires_grad_(True)
    mmd_loss(real, z, torch.tensor([40]), sigma=2.0, samples=40).backward()
    grad = z.grad[0]
    np.testing.assert_allclose(grad[1].numpy(), grad[0].numpy(), atol=1e-14)
    np.testing.assert_allclose(grad[2].numpy(), grad[0].numpy(), atol=1e-14)
    # Apart, the channels feel different forces.
    z_apart = (real.mean(0) + torch.as_tensor(rng.normal(size=(3, 3)))).unsqueeze(0).requires_grad_(True)
    mmd_loss(real, z_apart, torch.tensor([40]), sigma=2.0, samples=40).backward()
    assert (z_apart.grad[0][1] - z_apart.grad[0][0]).abs().max() > 1e-6


def test_older_hyperparameters_build_the_papers_start_and_bad_values_are_refused():
    model = build_model("fastegnn", node_features=2, edge_features=2, hidden=8, layers=1, virtual_nodes=3)
    assert model.virtual_init == "centroid" and not hasattr(model, "virtual_weighting")
    with pytest.raises(ValueError, match="virtual_init"):
        build_model("fastegnn", node_features=2, edge_features=2, virtual_init="random")
    with pytest.raises(ValueError, match="virtual_init"):
        TrainConfig(virtual_init="random")


def test_the_train_command_offers_every_start():
    import argparse

    from fastegnn_md.cli import train as train_cli
    from fastegnn_md.models.fastegnn import VIRTUAL_INITS

    sub = argparse.ArgumentParser().add_subparsers()
    train_cli.add_parser(sub)
    parser = sub.choices["train"]
    action = next(a for a in parser._actions if "--virtual-init" in a.option_strings)
    assert tuple(action.choices) == VIRTUAL_INITS
