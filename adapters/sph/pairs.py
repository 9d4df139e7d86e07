"""FramePairs from one SPH trajectory: the FastEGNN authors' random start frames and the velocity
conventions of `fastegnn_md.conventions` (forward, the authors' one-shot one, or backward)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import numpy as np

from ...conventions import (
    BACKWARD,
    FORWARD,
    canonical_convention,
    invalid_input_frames,
    pair_velocities,
    positive_int,
    require_pairs,
)
from ...conventions import valid_input_frames as _valid_input_frames
from ...errors import DataError
from ...graph import FramePair
from .trajectory import SPHTrajectory, particle_types_to_attrs, trajectory_convention

#: The FastEGNN authors' Water-3D sampling: this many random input frames per trajectory ...
PAPER_NUM_STARTS = 15
#: ... drawn from the first this many frames.
PAPER_START_WINDOW = 250
#: ``velocity`` choices of `frame_pairs` ("paper" is accepted as a deprecated name of "forward").
SPH_VELOCITY_CONVENTIONS = (FORWARD, BACKWARD)


def valid_input_frames(num_frames: int, jump: int, velocity: str) -> range:
    """Input frames t with a pair t -> t + jump: all t < T - jump, and t >= jump for "backward"."""
    return _valid_input_frames(num_frames, jump, _velocity_name(velocity))


def paper_starts(
    num_frames: int,
    jump: int,
    velocity: str = FORWARD,
    rng: Union[np.random.Generator, int, None] = 0,
    num_starts: int = PAPER_NUM_STARTS,
    window: int = PAPER_START_WINDOW,
) -> list[int]:
    """The FastEGNN authors' Water-3D sampling: ``num_starts`` random input frames among the
    first ``window`` frames (only those with a valid pair, `valid_input_frames`), drawn without
    replacement and returned sorted; all of them when fewer exist. ``rng``: a Generator or a
    seed (the same seed gives the same frames)."""
    valid = valid_input_frames(num_frames, jump, velocity)
    candidates = np.arange(valid.start, min(valid.stop, window))
    if candidates.size == 0:
        return []
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    chosen = generator.choice(candidates, size=min(num_starts, candidates.size), replace=False)
    return sorted(int(t) for t in chosen)


def _velocity_name(velocity: str) -> str:
    """The convention's one name; SPH data store no velocities, so "physical" is refused."""
    return canonical_convention(velocity, "velocity", allowed=SPH_VELOCITY_CONVENTIONS)


def frame_pairs(
    trajectory: SPHTrajectory,
    jump: int,
    starts: Optional[Iterable[int]] = None,
    velocity: str = FORWARD,
    frame_dt: float = 1.0,
    rng: Union[np.random.Generator, int, None] = 0,
    convention: Optional[str] = None,
) -> list[FramePair]:
    """One FramePair per input frame t: (x_t, v_t) -> x_{t+jump}, for a 3-D trajectory.

    Parameters
    ----------
    trajectory : positions (T, N, 3) in the dataset length unit.
    jump : frames between input and target (the authors' script uses 20, their paper 15).
    starts : input frames t. Default: `paper_starts` (the authors' sampling: 15 random frames
        among the first 250 that have a pair, drawn with ``rng``).
    velocity : input velocity convention:
        ``"forward"`` (deprecated name ``"paper"``): v_t = (x_{t+1} - x_t) / frame_dt, the FastEGNN
        authors' Water-3D loader (with frame_dt = 1 exactly their x[t+1] - x[t]). It peeks one
        frame into the future: fine for one-shot numbers, unusable in a rollout.
        ``"backward"``: v_t = (x_t - x_{t-jump}) / (jump * frame_dt), computable by a rollout
        from its own outputs; needs t >= jump.
    frame_dt : time between stored frames (1.0: time in frames; ``metadata["dt"]`` for the
        simulation's time unit).
    rng : Generator or seed for the default ``starts``.
    convention : particle-type numbering (default `trajectory_convention`).

    Returns
    -------
    Pairs with float64 positions/velocities/targets (per-pair copies), ``node_attrs`` the
    one-hot types (N, K) and ``moving`` the non-kinematic particles (`particle_types_to_attrs`;
    both shared read-only arrays), ``target_velocities`` = (x_{t+jump} - x_t) / (jump *
    frame_dt) for "backward" (what a rollout feeds its next jump), None for "forward", and
    ``metadata``: ``dt`` = jump * frame_dt, ``frames`` = (t, t + jump), ``source`` (the
    trajectory key), ``velocity_convention`` (``"forward"`` or ``"backward"``),
    ``particle_type_convention``.

    Raises
    ------
    DataError
        For non-3-D positions, unknown particle types, a trajectory too short for one pair, or
        an explicit start without a pair.
    """
    name = _velocity_name(velocity)
    jump = positive_int(jump, "jump")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    where = f"trajectory {trajectory.key}"
    if trajectory.dim != 3:
        raise DataError(f"{where}: positions are {trajectory.dim}-D; FramePair needs 3-D")
    convention = convention or trajectory_convention(trajectory)
    try:
        attrs, moving = particle_types_to_attrs(trajectory.particle_type, convention)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    attrs.flags.writeable = False  # shared by every pair: an in-place edit must fail, not leak
    moving.flags.writeable = False

    x = trajectory.positions
    valid = require_pairs(trajectory.num_frames, jump, name, where)
    if starts is None:
        inputs = paper_starts(trajectory.num_frames, jump, name, rng)
    else:
        inputs = [int(t) for t in starts]
        bad = invalid_input_frames(inputs, valid)
        if bad:
            raise DataError(
                f"{where}: input frame(s) {bad} have no pair for jump {jump} with {name!r} velocities "
                f"(valid input frames: {valid.start}..{valid.stop - 1})"
            )

    span = jump * frame_dt
    pairs = []
    for t in inputs:
        velocity_pair = pair_velocities(x, t, jump, frame_dt, name)
        current = x[t].astype(np.float64)
        target = x[t + jump].astype(np.float64)
        pairs.append(
            FramePair(
                positions=current,
                velocities=velocity_pair.velocities,
                target_positions=target,
                node_attrs=attrs,
                target_velocities=velocity_pair.target_velocities,
                moving=moving,
                metadata={
                    "dt": span,
                    "frames": (t, t + jump),
                    "source": str(trajectory.key),
                    "velocity_convention": name,
                    "particle_type_convention": convention,
                },
            )
        )
    return pairs

