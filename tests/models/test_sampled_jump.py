"""FastEGNN's sampled jump (``noise_channels``), and the energy score that trains it, in float64.

With the noise drawn, the jump is an ordinary function of (inputs, noise): rotating, reflecting
and translating the inputs and rotating the noise with them transforms the output the same way,
and permuting nodes permutes the noise's effect; isotropic noise then makes the *law* of the
sample equivariant.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.losses import energy_score
from fastegnn_md.models import build_model
from symmetry_helpers import close, make_pairs, perturbed_model, run, transformed  # tests/models/

CHANNELS = 2


def sampling_model(name: str = "fastegnn", noise_into: str = "coordinates", noise_gate: str = "none",
                   noise_smoothing: int = 0) -> torch.nn.Module:
    """A float64 sampled-jump model whose noise weights are not at their zero start."""
    model = perturbed_model(name, noise_channels=CHANNELS, noise_into=noise_into, noise_gate=noise_gate,
                            noise_smoothing=noise_smoothing)
    with torch.no_grad():
        if noise_into == "features":
            model.noise_embedding.weight.normal_(std=1.0)
        for layer in model.layers:
            if layer.noise_head is not None:
                layer.noise_head.second.weight.normal_(std=0.3)
    return model


def with_noise(model: torch.nn.Module, noise: np.ndarray) -> None:
    """Make every jump of ``model`` use this (N, K, 3) noise instead of a fresh draw."""
    fixed = torch.as_tensor(noise, dtype=torch.float64)
    model.draw_noise = lambda x: fixed.to(x.device)


@pytest.mark.parametrize("name", ["fastegnn", "global_nodes"])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("noise_into, noise_gate, smoothing", [
    ("coordinates", "none", 0), ("features", "none", 0), ("coordinates", "speed", 2), ("features", "speed", 2)])
def test_a_drawn_jump_is_equivariant_when_the_noise_turns_with_the_input(name: str, reflect: bool, noise_into: str,
                                                                         noise_gate: str, smoothing: int) -> None:
    rng = np.random.default_rng(4)
    model = sampling_model(name, noise_into, noise_gate, smoothing)
    pairs = make_pairs(rng)
    n = sum(p.num_nodes for p in pairs)
    vectors = noise_into == "coordinates"
    noise = rng.normal(size=(n, CHANNELS, 3) if vectors else (n, CHANNELS))
    q, t = random_orthogonal(rng, reflect), rng.normal(size=3) * 5.0
    with torch.no_grad():
        with_noise(model, noise)
        x, z = run(model, pairs)
        with_noise(model, noise @ q if vectors else noise)  # scalars are invariant
        x_g, z_g = run(model, transformed(pairs, q, t))
        with_noise(model, np.zeros_like(noise))
        x_0, _ = run(model, pairs)
    assert np.abs(x - x_0).max() > 1e-2, "the noise barely moves the jump: the test would not see an error"
    close(x_g, x @ q + t)
    close(z_g, z @ q + t)


@pytest.mark.parametrize("noise_into, smoothing", [("coordinates", 0), ("features", 0), ("coordinates", 2)])
def test_a_drawn_jump_permutes_with_its_nodes_and_their_noise(noise_into: str, smoothing: int) -> None:
    rng = np.random.default_rng(5)
    model = sampling_model(noise_into=noise_into, noise_smoothing=smoothing)
    pairs = make_pairs(rng, sizes=(9, 6))
    perms = [rng.permutation(p.num_nodes) for p in pairs]
    permuted = [FramePair(p.positions[s], p.velocities[s], p.target_positions[s], p.node_attrs[s])
                for p, s in zip(pairs, perms)]
    order = np.concatenate([perms[0], perms[1] + pairs[0].num_nodes])
    noise = rng.normal(size=(len(order), CHANNELS, 3) if noise_into == "coordinates" else (len(order), CHANNELS))
    with torch.no_grad():
        with_noise(model, noise)
        x, z = run(model, pairs)
        with_noise(model, noise[order])
        x_p, z_p = run(model, permuted)
    close(x_p, x[order])
    close(z_p, z)


@pytest.mark.parametrize("noise_into", ["coordinates", "features"])
def test_each_call_draws_and_a_seed_repeats_the_draw(noise_into: str) -> None:
    model = sampling_model(noise_into=noise_into)
    pairs = make_pairs(np.random.default_rng(6))
    with torch.no_grad():
        torch.manual_seed(3)
        a, _ = run(model, pairs)
        b, _ = run(model, pairs)
        torch.manual_seed(3)
        c, _ = run(model, pairs)
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("noise_into", ["coordinates", "features"])
def test_noise_weights_start_at_zero_and_a_deterministic_model_has_none(noise_into: str) -> None:
    torch.manual_seed(0)
    plain = build_model("fastegnn", node_features=2, edge_features=2, hidden=16, layers=2, virtual_nodes=3)
    assert not any("noise" in key for key in plain.state_dict())
    sampled = build_model("fastegnn", node_features=2, edge_features=2, hidden=16, layers=2, virtual_nodes=3,
                          noise_channels=CHANNELS, noise_into=noise_into).double()
    missing, unexpected = sampled.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("noise" in key for key in missing)
    pairs = make_pairs(np.random.default_rng(7))
    with torch.no_grad():
        x_sampled, _ = run(sampled, pairs)
        x_plain, _ = run(plain.double(), pairs)
    close(x_sampled, x_plain)
    with pytest.raises(ValueError, match="noise_channels"):
        build_model("fastegnn", node_features=2, edge_features=2, noise_channels=-1)
    with pytest.raises(ValueError, match="noise_into"):
        build_model("fastegnn", node_features=2, edge_features=2, noise_channels=1, noise_into="velocities")


@pytest.mark.parametrize("noise_into", ["coordinates", "features"])
def test_a_speed_gated_jump_draws_nothing_for_nodes_at_rest(noise_into: str) -> None:
    """noise_gate "speed": each node's noise times its speed. With every node at rest the sample
    is the deterministic jump; one moving node makes it a sample again, scaled by its speed."""
    model = sampling_model(noise_into=noise_into, noise_gate="speed")
    rng = np.random.default_rng(8)
    pairs = [FramePair(p.positions, np.zeros_like(p.velocities), p.target_positions, p.node_attrs)
             for p in make_pairs(rng)]
    n = sum(p.num_nodes for p in pairs)
    noise = rng.normal(size=(n, CHANNELS, 3) if noise_into == "coordinates" else (n, CHANNELS))
    with torch.no_grad():
        with_noise(model, noise)
        drawn, _ = run(model, pairs)
        with_noise(model, np.zeros_like(noise))
        still, _ = run(model, pairs)
        close(drawn, still)
        pairs[0].velocities[0] = [0.3, 0.0, 0.4]
        with_noise(model, noise)
        moving, _ = run(model, pairs)
        scaled = noise.copy()
        scaled[0] *= 0.5  # the gate is |v| = 0.5: the same jump as half this node's noise ungated
        ungated = sampling_model(noise_into=noise_into)
        with_noise(ungated, np.where(np.arange(n).reshape((-1,) + (1,) * (noise.ndim - 1)) == 0, scaled, 0.0))
        expected, _ = run(ungated, pairs)
    assert np.abs(moving - still).max() > 1e-3
    close(moving, expected)
    with pytest.raises(ValueError, match="noise_gate"):
        build_model("fastegnn", node_features=2, edge_features=2, noise_channels=1, noise_gate="temperature")
    from fastegnn_md.training import TrainConfig

    with pytest.raises(ValueError, match="noise_gate speed gates a sampled jump's noise: it needs noise_channels"):
        TrainConfig(noise_gate="speed")
    with pytest.raises(ValueError, match="noise_smoothing smooths a sampled jump's noise: it needs noise_channels"):
        TrainConfig(noise_smoothing=1)
    with pytest.raises(ValueError, match="noise_smoothing must be >= 0"):
        TrainConfig(noise_channels=1, noise_smoothing=-1)
    with pytest.raises(ValueError, match="noise_smoothing"):
        build_model("fastegnn", node_features=2, edge_features=2, noise_channels=1, noise_smoothing=-1)


def test_smoothed_noise_sums_each_neighbourhood_and_keeps_unit_variance() -> None:
    """`smooth_noise`: one pass gives (eps_i + sum_j eps_j) / sqrt(1 + degree_i); an isolated node
    keeps its own; i.i.d. standard-normal noise keeps unit variance per node, and neighbours
    become correlated."""
    from fastegnn_md.models.fastegnn import smooth_noise
    from fastegnn_md.models.kernels import EdgeContext

    # A path 0 - 1 - 2 and an isolated node 3 (edges both ways, sorted by receiver).
    positions = torch.zeros((4, 3), dtype=torch.float64)
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])

    ctx = EdgeContext(SimpleNamespace(edge_index=edges, positions=positions))
    eps = torch.arange(24, dtype=torch.float64).reshape(4, 2, 3)
    once = smooth_noise(eps, ctx, 1)
    close(once[0].numpy(), ((eps[0] + eps[1]) / np.sqrt(2)).numpy())
    close(once[1].numpy(), ((eps[1] + eps[0] + eps[2]) / np.sqrt(3)).numpy())
    close(once[3].numpy(), eps[3].numpy())
    close(smooth_noise(eps[..., 0], ctx, 1).numpy(), once[..., 0].numpy())  # scalars as vectors' components
    gen = torch.Generator().manual_seed(0)
    draws = smooth_noise(torch.randn(4, 20000, 3, generator=gen, dtype=torch.float64), ctx, 1).reshape(4, -1)
    variance = draws.var(dim=1)
    assert torch.allclose(variance, torch.ones(4, dtype=torch.float64), atol=0.05)
    correlation = float((draws[0] * draws[1]).mean())
    assert correlation == pytest.approx(2 / np.sqrt(6), abs=0.05)  # two shared of 2 and 3 summed
    # The model smooths what it draws: the same weights and draw give another jump unsmoothed.
    pairs = make_pairs(np.random.default_rng(9))
    noise = np.random.default_rng(10).normal(size=(sum(p.num_nodes for p in pairs), CHANNELS, 3))
    jumps = []
    for passes in (0, 1):
        model = sampling_model(noise_smoothing=passes)
        with torch.no_grad():
            with_noise(model, noise)
            jumps.append(run(model, pairs)[0])
    assert np.abs(jumps[0] - jumps[1]).max() > 1e-3


def test_energy_score_of_a_point_is_its_distance_and_the_true_law_scores_lower() -> None:
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]], dtype=torch.float64)
    point = torch.zeros_like(target)
    # Two equal samples: the score is the mean distance to the target (0 and 3).
    assert float(energy_score(point, point, target)) == pytest.approx(1.5, abs=1e-9)
    moving = torch.tensor([False, True])
    assert float(energy_score(point, point, target, moving)) == pytest.approx(3.0, abs=1e-9)
    # y ~ N(0, I3) per node: samples from that law score about 1.13, the mean (a point) about 1.60.
    gen = torch.Generator().manual_seed(0)
    y, a, b = (torch.randn(20000, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    at_mean = float(energy_score(torch.zeros_like(y), torch.zeros_like(y), y))
    from_law = float(energy_score(a, b, y))
    assert at_mean == pytest.approx(1.596, abs=0.02)
    assert from_law == pytest.approx(1.128, abs=0.02)


def test_the_train_command_offers_every_noise_input_and_position_loss() -> None:
    import argparse

    from fastegnn_md.cli import train as train_cli
    from fastegnn_md.models.fastegnn import NOISE_GATES, NOISE_INPUTS
    from fastegnn_md.training import POSITION_LOSSES

    sub = argparse.ArgumentParser().add_subparsers()
    train_cli.add_parser(sub)
    parser = sub.choices["train"]
    choices = {flag: tuple(action.choices or ()) for action in parser._actions for flag in action.option_strings}
    assert choices["--noise-into"] == NOISE_INPUTS
    assert choices["--noise-gate"] == NOISE_GATES
    assert choices["--position-loss"] == POSITION_LOSSES
