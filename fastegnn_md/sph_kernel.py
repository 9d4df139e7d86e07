"""SPlisHSPlasH's cubic spline kernel, and the water's density relative to its rest density.

The solver behind this project's SPH data (DFSPH, `fastegnn_md.adapters.splishsplash`) computes
each particle's density with the cubic spline kernel of support h = 4 r (r the particle radius)
and holds it at or below the rest density. Measured on every fifth frame of the 62 stored
trajectories of this project's four SPH datasets (`benchmarks/sph_density.py`, 6,280 frames;
benchmarks/RESULTS.md), no water particle is ever more than 1.2 % denser than at rest, and in
99 % of frames none is more than 0.33 %: incompressibility is the one property every frame of
SPH water has, whatever the flow does.

    rho_i / rho_0 = (2 r)^3 * sum_j W(|x_i - x_j|, h),  h = 4 r,

the sum over every particle within h, i itself and the walls included (the stored walls are a
lattice at the fluid's spacing 2 r, so water at a wall is as dense as inside). (2 r)^3 is the
volume of a particle of the cubic lattice of spacing 2 r on which the solver seeds its water:
that lattice's relative density is 1.000 (the kernel's sum over it is pi / (8 r^3 k) to 1e-4).
Lengths are the dataset's (L); the relative density is dimensionless. numpy, float64.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

#: The solver's support radius in particle radii (SPlisHSPlasH's default: 4 r).
SUPPORT_IN_RADII = 4.0


def cubic_kernel(distance: np.ndarray, support: float) -> np.ndarray:
    """W(d, h) of SPlisHSPlasH's ``CubicKernel`` (3-D): (…,) L, h L -> (…,) L^-3.

    k = 8 / (pi h^3), q = d / h:  k (6 q^3 - 6 q^2 + 1) for q <= 1/2,  2 k (1 - q)^3 for q <= 1,
    0 beyond. Integrates to 1 over space.
    """
    q = np.asarray(distance, dtype=np.float64) / support
    k = 8.0 / (math.pi * support**3)
    inner = k * (6.0 * q**3 - 6.0 * q**2 + 1.0)
    outer = 2.0 * k * np.clip(1.0 - q, 0.0, None) ** 3
    return np.where(q <= 0.5, inner, outer)


def cubic_kernel_slope(distance: np.ndarray, support: float) -> np.ndarray:
    """dW/dd of `cubic_kernel`: (…,) L, h L -> (…,) L^-4 (<= 0; 0 at d = 0 and beyond h)."""
    q = np.asarray(distance, dtype=np.float64) / support
    k = 8.0 / (math.pi * support**3)
    inner = (k / support) * (18.0 * q**2 - 12.0 * q)
    outer = -(6.0 * k / support) * np.clip(1.0 - q, 0.0, None) ** 2
    return np.where(q <= 0.5, inner, outer)


def particle_volume(particle_radius: float) -> float:
    """(2 r)^3 (L^3): the volume that makes the seeding lattice's relative density 1."""
    return (2.0 * particle_radius) ** 3


def close_pairs(positions: np.ndarray, support: float) -> np.ndarray:
    """Every pair (i < j) of particles closer than ``support``: (N, 3) L -> (P, 2) int64."""
    return cKDTree(positions).query_pairs(r=support, output_type="ndarray").reshape(-1, 2)


def relative_density(positions: np.ndarray, particle_radius: float) -> np.ndarray:
    """Each particle's density over the rest density (module docstring): (N, 3) L, r L -> (N,).

    1 inside water at rest, below 1 at a free surface or in spray; above 1 is compressed water,
    which the solver does not let exist beyond its tolerance. Pass walls with the water (they
    count as neighbours) and read the water's entries.
    """
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must be (N, 3), got {x.shape}")
    if not particle_radius > 0:
        raise ValueError(f"particle_radius must be positive, got {particle_radius}")
    pairs = close_pairs(x, SUPPORT_IN_RADII * particle_radius)
    distance = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    return pair_density(pairs, distance, len(x), particle_radius)


def pair_density(pairs: np.ndarray, distance: np.ndarray, size: int, particle_radius: float) -> np.ndarray:
    """`relative_density` of ``size`` particles from their close pairs: pairs (P, 2) i < j holding
    every pair within the support (more weigh 0), distance (P,) L -> (size,)."""
    support = SUPPORT_IN_RADII * particle_radius
    weight = cubic_kernel(distance, support)
    total = float(cubic_kernel(np.zeros(1), support)[0]) + np.bincount(pairs[:, 0], weight, size)
    return particle_volume(particle_radius) * (total + np.bincount(pairs[:, 1], weight, size))
