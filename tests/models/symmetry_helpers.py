"""Shared helpers of the model symmetry tests (test_equivariance.py, test_gravity.py), float64."""

from __future__ import annotations

import numpy as np
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.models import build_model

TOL = 1e-10  # relative to the output scale; float64 round-off is ~1e-15


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, atol=TOL * scale, rtol=0)


def make_pairs(rng: np.random.Generator, sizes=(9, 6, 1)) -> list[FramePair]:
    """Graphs of different sizes; the last is a single (isolated) node."""
    pairs = []
    for n in sizes:
        x = rng.normal(size=(n, 3)) * 1.5
        pairs.append(FramePair(x, rng.normal(size=(n, 3)), x, rng.choice([-1.0, 1.0], size=(n, 1))))
    return pairs


def transformed(pairs: list[FramePair], q: np.ndarray, t: np.ndarray) -> list[FramePair]:
    return [FramePair(p.positions @ q + t, p.velocities @ q, p.target_positions @ q + t, p.node_attrs) for p in pairs]


def perturbed_model(name: str, seed: int = 0, **hparams) -> torch.nn.Module:
    """A float64 model whose coordinate heads are far from their tiny initial gain.

    EGNN-style heads start with gain 1e-3, which would let a symmetry error hide below the
    tolerance; random weights of ordinary size make every term of the update matter.
    ``hparams`` go to `build_model` (e.g. ``gravity_axis``).
    """
    torch.manual_seed(seed)
    model = build_model(
        name, node_features=2, edge_features=2, hidden=16, layers=3, virtual_nodes=3, **hparams
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def run(model: torch.nn.Module, pairs: list[FramePair], cutoff=2.5, drop_rate=0.0):
    out = model(collate(pairs, cutoff=cutoff, drop_rate=drop_rate, dtype=torch.float64))
    z = None if out.virtual_positions is None else out.virtual_positions.detach().numpy()
    return out.positions.detach().numpy(), z
