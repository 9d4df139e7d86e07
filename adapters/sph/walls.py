"""The walls of a closed box as kinematic boundary particles (DeepMind particle type 3).

A learned jump can only keep water in its box if the box is in its graph. `box_wall_particles`
samples the surface of an axis-aligned box on a regular lattice; `fastegnn-md sph generate`
stores these particles in every frame beside the water (type `DEEPMIND_KINEMATIC`, as DeepMind's
and LagrangeBench's datasets store their boundaries), so every reader, trainer and rollout sees
the walls as inputs only (`particle_types_to_attrs`: not moving, not scored). The solver's own
boundary (SPlisHSPlasH's Akinci particles, ~2× denser) stays inside the solver.

Spacing: the fluid's initial lattice spacing 2r, so the wall is as dense as the water; at the
connectivity radius of 1.6 diameters a fluid particle touching a wall has ~8 wall neighbours.
Edges between two wall particles are left out of every graph (`fastegnn_md.graph.build_edges`).
"""

from __future__ import annotations

import numpy as np


def box_wall_particles(bounds: np.ndarray, spacing: float) -> np.ndarray:
    """Points on the surface of the box ``bounds`` ((dim, 2): [lower, upper] per axis), on a lattice.

    Along each axis the lattice has ``round(extent / spacing)`` intervals (at least 1), so the
    points reach both faces exactly; every point of that lattice with at least one coordinate on
    a face is returned once (edges and corners included). Units: those of ``bounds`` and
    ``spacing``. Returns (M, dim) float64 in lexicographic lattice order, M = ∏(n_a + 1) − ∏(n_a − 1).
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or not np.all(bounds[:, 1] > bounds[:, 0]):
        raise ValueError(f"bounds must be (dim, 2) with upper > lower per axis, got {bounds.tolist()}")
    if not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a positive length, got {spacing}")
    extent = bounds[:, 1] - bounds[:, 0]
    intervals = np.maximum(np.rint(extent / spacing).astype(int), 1)
    axes = [np.arange(n + 1) for n in intervals]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    on_face = ((index == 0) | (index == intervals)).any(axis=1)
    index = index[on_face]
    return bounds[:, 0] + index * (extent / intervals)
