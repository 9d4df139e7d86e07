"""Holding a molecule's local geometry through a jump: bonds, bond angles and peptide planes.

A learned jump of several ps moves every atom by its conditional mean (or by a sample around it),
and neither keeps what MD keeps exactly or nearly so: covalent bond lengths and bond angles. MD
holds such distances with constraints (SHAKE, LINCS) that project each integrator step back onto
them; `HeldGeometry` does the same to a jump: the atoms closer than ``cutoff`` at the jump's
start (for heavy atoms at 2.6 Å, the bonds and bond angles) and the pairs the topology names
(`fastegnn_md.metrics.peptide_plane_pairs`, which fix every peptide ω) get back the distance
they had at the start, with the least motion (`keep_local_geometry`).

Lengths in the caller's unit (Å for molecules). Equivariant under E(3) and permutations: it reads
only pair distances and moves atoms along pair vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

#: Molecules: heavy-atom pairs closer than this (Å) are bonds or bond angles (C–N 1.33, N···C
#: across CA 2.45, CA···O 2.40; the next pairs, across a torsion, are ≥ 2.8 Å).
MOLECULAR_GEOMETRY_CUTOFF = 2.6


def local_pairs(positions: np.ndarray, cutoff: float) -> np.ndarray:
    """Index pairs (P, 2) of nodes closer than ``cutoff`` (length unit) in ``positions`` (N, 3)."""
    pairs = cKDTree(np.asarray(positions, np.float64)).query_pairs(r=cutoff, output_type="ndarray")
    return pairs.reshape(-1, 2)


def keep_local_geometry(
    sample: np.ndarray, pairs: np.ndarray, lengths: np.ndarray, moving: Optional[np.ndarray] = None,
    tolerance: float = 1e-3, max_iterations: int = 50,
) -> tuple[np.ndarray, float]:
    """Move ``sample`` (N, 3) the least (Euclidean norm, equal weights) so that each pair of
    ``pairs`` (P, 2) is ``lengths`` (P,) apart again; nodes not ``moving`` stay put.

    Gauss–Newton on the constraints d_p(x) = l_p: each step is the minimum-norm correction of the
    linearised constraints, Δx = −Jᵀ (J Jᵀ + εI)⁻¹ e (J sparse, P × 3N; the ridge ε keeps J Jᵀ
    invertible where constraints are redundant, as the distances of a rigid peptide group are,
    and is adapted Levenberg–Marquardt fashion so the error never grows), until every
    |d − l| ≤ ``tolerance`` (length unit).

    Why: a Gaussian spread of ~0.5 Å per atom is the right size for the residual of a 5 ps jump,
    but MD's residuals keep bond lengths and angles, which no Gaussian over Cartesian positions
    does (its independent part brings consecutive CA atoms into clashes within one jump).
    Restoring the local distances keeps the sample's larger-scale motion. `Predictor.sample`
    restores those of the jump's start, as bond constraints do in MD: restoring the mean's
    instead let villin's N–CA shrink from 1.47 to 1.32 Å in 26 sampled jumps (the mean's bonds
    shrink a little on sampled input, and that compounds). Equivariant: it reads only pair
    vectors. Returns the corrected positions and the largest remaining |d − l|.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    x = np.array(sample, dtype=np.float64)
    pairs = np.asarray(pairs).reshape(-1, 2)
    if len(pairs) == 0:
        return x, 0.0
    n, p = len(x), len(pairs)
    i, j = pairs[:, 0], pairs[:, 1]
    free = np.ones(n, bool) if moving is None else np.asarray(moving, bool)
    rows = np.repeat(np.arange(p), 6)
    columns = np.concatenate([3 * i[:, None] + np.arange(3), 3 * j[:, None] + np.arange(3)], axis=1).ravel()

    def errors(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = positions[i] - positions[j]
        d = np.sqrt(np.sum(r * r, axis=1))
        return r, d, d - lengths

    r, d, error = errors(x)
    # Levenberg–Marquardt on the ridge: a step that lowers the constraint error is taken and the
    # ridge shrinks (so redundant but consistent constraints, a rigid peptide plane, converge);
    # one that raises it is refused and the ridge grows (short steps where the linearisation is
    # poor, as after a large draw). The error therefore never grows.
    ridge = 1e-2
    for _ in range(max_iterations):
        if float(np.max(np.abs(error))) <= tolerance:
            break
        unit = r / np.maximum(d, 1e-12)[:, None]
        # ∂d/∂x_i = û, ∂d/∂x_j = −û; fixed nodes have no column.
        values = np.concatenate([unit * free[i][:, None], -unit * free[j][:, None]], axis=1).ravel()
        jac = sparse.csr_matrix((values, (rows, columns)), shape=(p, 3 * n))
        normal = (jac @ jac.T + ridge * sparse.identity(p)).tocsc()
        trial = x + (jac.T @ spsolve(normal, -error)).reshape(n, 3)
        trial_r, trial_d, trial_error = errors(trial)
        if np.sum(trial_error**2) < np.sum(error**2):
            x, r, d, error = trial, trial_r, trial_d, trial_error
            ridge = max(ridge * 0.3, 1e-6)
        else:
            ridge = ridge * 10.0
    worst = float(np.max(np.abs(error)))
    return x, worst



@dataclass
class HeldGeometry:
    """Which distances a jump keeps from its start: every pair closer than ``cutoff`` at the start
    (length unit) and ``held_pairs`` (P, 2) node indices given by the topology (or None)."""

    cutoff: float = MOLECULAR_GEOMETRY_CUTOFF
    held_pairs: Optional[np.ndarray] = None

    def pairs(self, start: np.ndarray) -> np.ndarray:
        """The held pairs (P, 2) for a jump from ``start`` (N, 3), each once, lower index first."""
        pairs = local_pairs(start, self.cutoff)
        if self.held_pairs is not None and len(self.held_pairs):
            pairs = np.concatenate([pairs, np.asarray(self.held_pairs, dtype=int).reshape(-1, 2)])
        return np.unique(np.sort(pairs, axis=1), axis=0) if len(pairs) else pairs

    def restore(self, start: np.ndarray, moved: np.ndarray, moving: Optional[np.ndarray] = None) -> np.ndarray:
        """``moved`` (N, 3), the jump's positions, with the held pairs at their distances in
        ``start`` (N, 3) again; nodes not ``moving`` (N,) bool stay where ``moved`` has them."""
        x = np.asarray(start, np.float64)
        pairs = self.pairs(x)
        if len(pairs) == 0:
            return np.asarray(moved, np.float64)
        lengths = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
        restored, _ = keep_local_geometry(moved, pairs, lengths, moving)
        return restored
