"""FramePairs from the frames of one MD trajectory (Å, ps), in any velocity convention.

The conventions, valid input frames and splits are `fastegnn_md.conventions` (shared with the
SPH adapter); this module adds what MD pairs carry: per-atom masses, read-only views into one
copy of the trajectory, and the MD wording of errors. Frame indices count the frames *returned
by* `reading.trajectory_frames`, i.e. after the stride.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from ...conventions import (  # noqa: F401  (re-exported: the adapter's names for them)
    PAPER_ADK_RATIOS,
    PHYSICAL,
    SPLITS,
    VELOCITY_CONVENTIONS,
    contiguous_splits,
    invalid_input_frames,
    pair_velocities,
    positive_int,
    require_pairs,
    valid_input_frames,
)
from ...errors import DataError
from ...graph import FramePair


def frame_pairs(
    positions: np.ndarray,
    velocities: Optional[np.ndarray],
    node_attrs: np.ndarray,
    masses: Optional[np.ndarray],
    frame_dt: float,
    jump: int,
    convention: str,
    frames: Optional[Iterable[int]] = None,
    source: str = "",
) -> list[FramePair]:
    """One FramePair per input frame t: (x_t, v_t) -> x_{t+jump}.

    Parameters
    ----------
    positions : (T, N, 3) Å.
    velocities : (T, N, 3) Å/ps from the file, or None; used by the ``"physical"`` convention only.
    node_attrs : (N, F) node attributes, shared by all pairs.
    masses : (N,) amu, or None.
    frame_dt : time between consecutive frames in ps.
    jump : frames between input and target.
    convention : velocity convention (`fastegnn_md.conventions`):
        ``"physical"``: v_t from the file (required);
        ``"backward"``: v_t = (x_t - x_{t-jump}) / (jump * frame_dt), so t >= jump;
        ``"forward"``: v_t = (x_{t+1} - x_t) / frame_dt, the paper's one-shot convention; it
        peeks at the future, so use it only to reproduce the paper's numbers, never for rollouts.
    frames : input frames t (default: all valid ones, `valid_input_frames`).
    source : where the frames come from (metadata and error messages).

    Returns
    -------
    Pairs with ``metadata`` ``dt`` = jump * frame_dt (ps), ``frames`` = (t, t + jump), ``source``
    and ``velocity_convention``. ``target_velocities`` are the file's v_{t+jump} (physical), the
    backward velocity at t + jump, i.e. (x_{t+jump} - x_t) / (jump * frame_dt), which is what a
    rollout feeds into its next jump (backward), or None (forward). Positions, targets and
    physical velocities are read-only views into one copy of the trajectory (no per-pair copy).

    Raises
    ------
    DataError
        For the physical convention without velocities, a frame without a valid pair, or a
        trajectory too short for one pair.
    """
    x = _frames_array(positions, "positions")
    num_frames, num_nodes = x.shape[:2]
    jump = positive_int(jump, "jump")
    if convention not in VELOCITY_CONVENTIONS:
        raise ValueError(f"convention must be one of {VELOCITY_CONVENTIONS}, got {convention!r}")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    where = source or "trajectory"
    v = None
    if convention == PHYSICAL:
        if velocities is None:
            raise DataError(
                f"{where}: has no velocities, which velocity_convention='physical' needs; "
                "use 'backward' to derive velocities from positions"
            )
        v = _frames_array(velocities, "velocities")
        if v.shape != x.shape:
            raise ValueError(f"velocities must have shape {x.shape}, got {v.shape}")
    attrs = np.asarray(node_attrs, dtype=np.float64)
    if attrs.ndim != 2 or attrs.shape[0] != num_nodes:
        raise ValueError(f"node_attrs must have shape ({num_nodes}, F), got {attrs.shape}")
    attrs = _read_only(attrs)
    mass = None if masses is None else _read_only(np.asarray(masses, dtype=np.float64))
    valid = require_pairs(num_frames, jump, convention, where)
    inputs = valid if frames is None else [_check_frame(t, valid, where, jump, convention) for t in frames]
    span = jump * frame_dt
    pairs = []
    for t in inputs:
        velocity = pair_velocities(x, t, jump, frame_dt, convention, v)
        pairs.append(
            FramePair(
                positions=x[t],
                velocities=velocity.velocities,
                target_positions=x[t + jump],
                node_attrs=attrs,
                target_velocities=velocity.target_velocities,
                masses=mass,
                metadata={
                    "dt": span, "frames": (t, t + jump), "source": source, "velocity_convention": convention,
                },
            )
        )
    return pairs


def _frames_array(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must have shape (T, N, 3), got {array.shape}")
    return _read_only(array)


def _read_only(array: np.ndarray) -> np.ndarray:
    # A read-only view: pairs share the trajectory's memory, so an in-place edit of one pair
    # would silently change its neighbours; this makes such an edit fail instead. The caller's
    # own array stays writeable.
    view = array.view()
    view.flags.writeable = False
    return view


def _check_frame(t: int, valid: range, where: str, jump: int, convention: str) -> int:
    if invalid_input_frames([t], valid):
        raise DataError(
            f"{where}: input frame {t} has no pair for jump {jump} with {convention!r} "
            f"velocities (valid input frames: {valid.start}..{valid.stop - 1})"
        )
    return int(t)
