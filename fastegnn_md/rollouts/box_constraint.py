"""An opt-in wall constraint for SPH rollouts: water put back inside the box after every jump.

`fastegnn-md rollout DATA_DIR --keep-in-box M`. A learned jump still lets some water through the
floor where a falling block hits it (benchmarks/RESULTS.md, issue 16); an SPH solver's boundary
handling never does. This is the constraint a user who needs the water in the box can switch
on, as MD codes hold bonds with SHAKE: after each jump, every moving particle coordinate below
``lower + M`` or above ``upper − M`` (``metadata["bounds"]``) is set to that limit, so a
particle that crossed a face sits M inside it (M = the particle radius puts it where SPH water
rests against a wall). With backward velocities the next input velocity is computed from the
moved position, so the particle loses its speed into the wall (an inelastic wall).

It is not the model's skill: the report says the constraint was on, counts the model's
particles it moved at each jump (``constrained_particles``), and applies the same constraint to
"no motion" and "constant velocity", so the comparison stays fair. Lengths are the dataset's.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import DataError
from ..geometry import box_array, shrunk_box
from ..rollout import Constraint


class KeepInBox:
    """``(k, positions (N, 3)) -> positions`` with the moving particles clipped into the box shrunk
    by ``margin`` on every face; ``last_moved`` is how many particles the last call moved.

    bounds : [[lower, upper]] per axis (3, 2); margin : M >= 0, less than half of every extent;
    moving : (N,) bool, the particles the constraint may move (walls never move).
    """

    def __init__(self, bounds: Any, margin: float, moving: np.ndarray, where: str = "--keep-in-box") -> None:
        try:
            box = box_array(bounds)
        except ValueError as exc:
            raise DataError(f"{where}: needs the dataset's box (metadata.json 'bounds'); {exc}") from None
        if not (np.isfinite(margin) and margin >= 0):
            raise DataError(f"{where} {margin}: must be a length >= 0")
        try:
            self.lower, self.upper = shrunk_box(box, margin).T
        except ValueError as exc:
            raise DataError(f"{where} {margin}: {exc}") from None
        self.margin = float(margin)
        self.moving = np.asarray(moving, dtype=bool)
        self.last_moved = 0

    def __call__(self, k: int, positions: np.ndarray) -> np.ndarray:
        positions = np.array(positions, dtype=np.float64)
        water = positions[self.moving]
        clipped = np.clip(water, self.lower, self.upper)
        self.last_moved = int((clipped != water).any(axis=1).sum())
        positions[self.moving] = clipped
        return positions


def chain(first: Optional[Constraint], second: Constraint) -> Constraint:
    """The constraint that applies ``first`` (if any), then ``second``, to jump k's positions."""
    if first is None:
        return second
    return lambda k, positions: second(k, first(k, positions))
