"""Small geometric helpers shared by tests, benchmarks and data augmentation."""

from __future__ import annotations

import numpy as np


def random_orthogonal(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    """A uniformly random 3x3 orthogonal matrix: a rotation (det +1) or, with ``reflect``,
    a rotation composed with a reflection (det -1). Apply to row vectors as ``x @ q``."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # makes the distribution uniform (Haar)
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q
