"""Removing the rigid motion of a molecule from its trajectory before pairs are made ("fit").

A protein in implicit solvent tumbles and drifts as a whole. That motion is not a function of the
structure, so no E(3)-equivariant jump can predict it, and in the lab frame it is most of what a
jump of picoseconds has to "predict": on the villin replicas at Δt = 5 ps the lab-frame
no-motion MSE is 0.72 Å², of which 0.29 Å² remains once each frame is superposed onto the first
(docs/architecture.md, "Fitting"). Trained on lab frames, a model spends its loss on noise; fitted,
the same data show the mean reversion a jump can learn. The fit is the usual one of MD analysis
(MDAnalysis' ``align.AlignTraj``): every frame of a file superposed, proper rotation and
translation, unweighted, on the selected atoms, onto that file's first frame. Velocities read
from the file are rotated with their frame.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ... import spec_keys as keys
from ...errors import DataError
from ...metrics import superpose_onto

NO_FIT = "none"
FIRST_FRAME = "first-frame"
#: The ways to fit a trajectory: leave the lab frame, or superpose every frame onto the first.
FIT_MODES = (NO_FIT, FIRST_FRAME)


def check_fit_mode(mode: Any, where: str = "fit") -> str:
    """``mode`` if it is one of `FIT_MODES`; else a one-line DataError naming ``where``."""
    if mode not in FIT_MODES:
        raise DataError(f"{where}: must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    return mode


def fit_frames(
    positions: np.ndarray, velocities: Optional[np.ndarray] = None, mode: str = FIRST_FRAME
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Frames (T, N, 3) Å, and velocities (T, N, 3) Å/ps or None, with the rigid motion removed.

    ``mode`` `NO_FIT` returns them unchanged; `FIRST_FRAME` superposes every frame onto frame 0
    (which stays where it is) and rotates each frame's velocities by the same rotation.
    """
    if check_fit_mode(mode) == NO_FIT or len(positions) == 0:
        return positions, velocities
    fitted, rotations = superpose_onto(positions, positions[0])
    if velocities is not None:
        velocities = np.einsum("tnj,tij->tni", velocities, rotations)
    return fitted, velocities


def fit_mode_of(extra: dict[str, Any]) -> str:
    """The fit a checkpoint's data had (``DataSpec.extra``); specs written before it: none."""
    return extra.get(keys.FIT, NO_FIT)
