"""Shared helpers of the model tests (tests/models/, tests/test_reference_model.py), float64.

The device the models and batches run on is read here, once: ``FASTEGNN_TEST_DEVICE`` (default
``cpu``; ``cuda`` for `benchmarks/device_check.sh`). Models come from `perturbed_model` (or
``.to(DEVICE)``), batches go through `on_device`, and `close` accepts tensors on any device.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.graph import GraphBatch
from fastegnn_md.models import build_model

TOL = 1e-10  # relative to the output scale; float64 round-off is ~1e-15


def _test_device() -> torch.device:
    """``FASTEGNN_TEST_DEVICE`` as a torch device; a clear error when CUDA is asked for and absent."""
    name = os.environ.get("FASTEGNN_TEST_DEVICE", "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"FASTEGNN_TEST_DEVICE={name}, but torch sees no CUDA device")
    return device


DEVICE = _test_device()
ON_CUDA = DEVICE.type == "cuda"
# Two runs of the same computation: bitwise equal on CPU; on CUDA, index_add_ sums with atomics
# in no fixed order, so the reference's sums may differ in the last bits between runs.
RERUN_TOL = 1e-12 if ON_CUDA else 0.0


def on_device(batch: GraphBatch) -> GraphBatch:
    """``batch`` on the test device (the same object on CPU)."""
    return batch if DEVICE.type == "cpu" else batch.to(DEVICE)


def to_numpy(values: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """A tensor (any device, with or without grad) or array as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def close(actual: Union[np.ndarray, torch.Tensor], expected: Union[np.ndarray, torch.Tensor]) -> None:
    actual, expected = to_numpy(actual), to_numpy(expected)
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
    return model.to(DEVICE).eval()  # drawn on the CPU: the same weights on every device


def run(model: torch.nn.Module, pairs: list[FramePair], cutoff=2.5, drop_rate=0.0):
    """(positions (N, 3), virtual positions (B, C, 3) or None) of ``model`` on ``pairs``, as numpy."""
    out = model(on_device(collate(pairs, cutoff=cutoff, drop_rate=drop_rate, dtype=torch.float64)))
    z = None if out.virtual_positions is None else to_numpy(out.virtual_positions)
    return to_numpy(out.positions), z
