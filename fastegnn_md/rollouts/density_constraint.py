"""An opt-in incompressibility constraint for SPH rollouts: water pushed apart after every jump
until none of it is denser than at rest.

`fastegnn-md rollout DATA_DIR --keep-density`. The shipped SPH model packs water into clumps far
denser than SPH water ever is (benchmarks/RESULTS.md, issue 16), while the solver that made the
data keeps every particle within about 1 % of its rest density (`fastegnn_md.sph_kernel`). As
`--keep-in-box` holds the walls, this holds the density, the way position-based fluids do
(Macklin & Müller 2013, "Position Based Fluids"): one unilateral constraint per water particle,

    C_i = rho_i / rho_0 - 1 <= 0          (`sph_kernel.relative_density`, walls as neighbours)

solved by Jacobi iterations of

    lambda_i = -C_i / (sum_p |grad_p C_i|^2 + eps)   for water with C_i > 0, else 0
    dx_p     = sum_j (lambda_p + lambda_j) grad_p (V W_pj)        (p water; walls never move)

until every water particle is within ``tolerance`` of the rest density or ``iterations`` are
spent. Only compression is corrected (a free surface's low density is left alone), so water
at or below rest density does not move at all. One sweep moves a particle at most a quarter of
its radius, and never out of the box (nor further out than the model put it). Without a box the
constraint uses distances only, so it is equivariant under rotations, reflections and
translations; with or without, under permutations.

With backward velocities the next input velocity is computed from the corrected positions,
so the push becomes motion, as in position-based fluids. It is not the model's skill: the
report says the constraint was on and, per jump, how many of the model's particles it moved
and the model's densest water before it; "no motion" and "constant velocity" get the same
constraint. Lengths are the dataset's.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import DataError
from ..geometry import box_array, shrunk_box
from ..sph_kernel import SUPPORT_IN_RADII, close_pairs, cubic_kernel_slope, pair_density, particle_volume

#: Jacobi iterations at most per jump, and the density excess (relative) at which they stop.
DEFAULT_ITERATIONS = 100
DEFAULT_TOLERANCE = 0.005
#: Constraint force mixing (PBF's epsilon), relative to a lattice particle's |grad C|^2: keeps
#: lambda bounded where a particle's neighbours sit almost on top of it (zero kernel slope).
RELAXATION = 1e-3
#: The most one Jacobi sweep moves a particle, in particle radii.
MAX_STEP_IN_RADII = 0.25


def _pair_sum(i: np.ndarray, j: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """(size, 3): row p = sum of ``values`` (P, 3) over pairs with i = p minus over pairs with
    j = p, the sum of an antisymmetric pair quantity (a gradient) over each particle's pairs."""
    index = np.concatenate([i, j])
    signed = np.concatenate([values, -values])
    return np.stack([np.bincount(index, signed[:, c], size) for c in range(values.shape[1])], axis=1)


class KeepDensity:
    """``(k, positions (N, 3)) -> positions`` with the moving particles pushed apart until none
    is denser than the rest density (+ ``tolerance``); walls (not ``moving``) count as
    neighbours and never move.

    After a call: ``last_moved`` the water particles it moved, ``last_density`` the densest
    water's relative density before the push, ``last_after`` after it, ``last_iterations`` the
    Jacobi iterations used.

    particle_radius : r (L) of the solver that made the data; the kernel's support is 4 r.
    moving : (N,) bool; bounds : [[lower, upper]] per axis (3, 2) or None: the push never carries
    water nearer a face than r (where SPH water rests against a wall), nor further out than it
    was: the stored walls are one particle thick, and water pushed hard enough passes between
    them, where their push on it is parallel to the wall;
    iterations : at most this many Jacobi sweeps per jump (>= 1);
    tolerance : stop once every water particle's relative density is <= 1 + tolerance (> 0).
    """

    def __init__(self, particle_radius: float, moving: np.ndarray, bounds: Optional[Any] = None,
                 iterations: int = DEFAULT_ITERATIONS, tolerance: float = DEFAULT_TOLERANCE,
                 where: str = "--keep-density") -> None:
        if not (np.isfinite(particle_radius) and particle_radius > 0):
            raise DataError(f"{where}: the particle radius {particle_radius} must be a positive length")
        if int(iterations) < 1:
            raise DataError(f"{where}: iterations {iterations} must be >= 1")
        if not tolerance > 0:
            raise DataError(f"{where}: tolerance {tolerance} must be positive")
        self.particle_radius = float(particle_radius)
        self.support = SUPPORT_IN_RADII * self.particle_radius
        self.volume = particle_volume(self.particle_radius)
        self.moving = np.asarray(moving, dtype=bool)
        self.iterations, self.tolerance = int(iterations), float(tolerance)
        self.max_step = MAX_STEP_IN_RADII * self.particle_radius
        self.lower = self.upper = None
        if bounds is not None:
            try:
                self.lower, self.upper = shrunk_box(box_array(bounds), self.particle_radius).T
            except ValueError as exc:
                raise DataError(f"{where}: the dataset's box (metadata.json 'bounds'): {exc}") from None
        # A particle of the seeding lattice: the size of |grad C|^2 the relaxation is relative to.
        lattice = 2.0 * self.particle_radius
        slope = self.volume * float(cubic_kernel_slope(np.array([lattice]), self.support)[0])
        self.epsilon = RELAXATION * 12.0 * slope**2  # own gradient ~ 0 on a lattice; 6 neighbours twice
        self.last_moved, self.last_iterations = 0, 0
        self.last_density = self.last_after = float("nan")

    def __call__(self, k: int, positions: np.ndarray) -> np.ndarray:
        x = np.array(positions, dtype=np.float64)
        if x.shape != (len(self.moving), 3):
            raise DataError(f"--keep-density: positions {x.shape} do not match the {len(self.moving)} particles")
        before = x.copy()
        self.last_density = float("nan")
        for sweep in range(self.iterations + 1):
            pairs = self._pairs(x)
            i, j = pairs[:, 0], pairs[:, 1]
            diff = x[i] - x[j]
            distance = np.linalg.norm(diff, axis=1)
            density = pair_density(pairs, distance, len(x), self.particle_radius)
            excess = np.where(self.moving, density - 1.0, -np.inf)
            worst = float(excess.max()) if self.moving.any() else -np.inf
            if sweep == 0:
                self.last_density = 1.0 + worst
            if worst <= self.tolerance or sweep == self.iterations:
                break
            push = self._push(i, j, diff, distance, excess, len(x))[self.moving]
            length = np.linalg.norm(push, axis=1, keepdims=True)
            # A sweep moves no particle further than a fraction of its radius: a large first
            # correction would otherwise carry water across a one-particle-thick wall.
            water = x[self.moving]
            pushed = water + push * np.minimum(1.0, self.max_step / np.maximum(length, 1e-300))
            if self.lower is not None:  # never out of the box, nor further out than the model put it
                pushed = np.clip(pushed, np.minimum(water, self.lower), np.maximum(water, self.upper))
            x[self.moving] = pushed
        self.last_iterations, self.last_after = sweep, 1.0 + worst
        self.last_moved = int((x != before).any(axis=1).sum())
        return x

    def _pairs(self, x: np.ndarray) -> np.ndarray:
        """Pairs closer than the support with at least one water particle (wall pairs never matter)."""
        pairs = close_pairs(x, self.support)
        return pairs[self.moving[pairs[:, 0]] | self.moving[pairs[:, 1]]]

    def _push(self, i: np.ndarray, j: np.ndarray, diff: np.ndarray, distance: np.ndarray,
              excess: np.ndarray, size: int) -> np.ndarray:
        """One Jacobi sweep's displacement (size, 3) for the constraints with positive excess."""
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(distance[:, None] > 0, diff / distance[:, None], 0.0)
        grad = (self.volume * cubic_kernel_slope(distance, self.support))[:, None] * unit  # grad_i (V W_ij)
        own = _pair_sum(i, j, grad, size)  # grad_p C_p
        squared = (grad**2).sum(axis=1)
        moving = self.moving
        norm = (np.where(moving, (own**2).sum(axis=1), 0.0)
                + np.bincount(i, squared * moving[j], size) + np.bincount(j, squared * moving[i], size))
        active = moving & (excess > 0)
        lam = -np.where(active, excess, 0.0) / (norm + self.epsilon)
        return _pair_sum(i, j, (lam[i] + lam[j])[:, None] * grad, size)


def particle_radius_of(metadata: dict, given: Optional[float], where: str = "--keep-density") -> float:
    """The particle radius: ``given`` (--particle-radius) or the data's generator settings."""
    if given is not None:
        return float(given)
    generator = metadata.get("generator")
    settings = generator.get("settings") if isinstance(generator, dict) else None
    radius = settings.get("particle_radius") if isinstance(settings, dict) else None
    if radius is None:
        raise DataError(
            f"{where}: needs the solver's particle radius, which metadata.json does not record "
            "(generator.settings.particle_radius); pass --particle-radius R"
        )
    return float(radius)
