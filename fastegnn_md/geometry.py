"""Small geometric helpers shared by the models, the data kinds, tests and benchmarks (numpy only)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def random_orthogonal(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    """A uniformly random 3x3 orthogonal matrix: a rotation (det +1) or, with ``reflect``,
    a rotation composed with a reflection (det -1). Apply to row vectors as ``x @ q``."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # makes the distribution uniform (Haar)
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def box_array(bounds: object) -> np.ndarray:
    """A box ``[[lower, upper]]`` per axis (SPH ``metadata["bounds"]``) as a (3, 2) float array;
    ValueError unless it is three intervals with upper > lower."""
    try:
        box = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (3, 2) or not np.all(box[:, 1] > box[:, 0]):
        raise ValueError(f"bounds must be [[lower, upper]] for 3 axes, got {bounds!r}")
    return box


def shrunk_box(box: np.ndarray, margin: float) -> np.ndarray:
    """(3, 2) ``box`` with every face moved ``margin`` (>= 0, its length unit) inwards; ValueError
    ("leaves no room in the box ...") when that empties an axis."""
    if not np.all(box[:, 1] - box[:, 0] > 2 * margin):
        raise ValueError(f"leaves no room in the box {box.tolist()}")
    return box + np.array([margin, -margin])


def unit_gravity_axis(axis: Sequence[float]) -> list[float]:
    """A finite nonzero 3-vector as a unit vector (list of 3 floats); ValueError otherwise."""
    try:
        values = [float(a) for a in axis]
    except (TypeError, ValueError):
        raise ValueError(f"gravity_axis must be a 3-vector, got {axis!r}") from None
    norm = math.sqrt(sum(v * v for v in values))
    if len(values) != 3 or not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"gravity_axis must be a finite nonzero 3-vector, got {axis!r}")
    return [v / norm for v in values]
