"""Velocity conventions, pairs from frames, splits and the jump history: written once for every kind of data.

numpy only (no torch, no adapter), so the data adapters, the rollout loop and the ASE / OpenMM
integrations share it without pulling in the model stack.

Velocity conventions
--------------------
A model's velocity input must mean at inference what it meant in training. Each convention has
one name (recorded in checkpoints as ``DataSpec.velocity_convention``):

* ``physical``: v_t as stored by the MD engine (instantaneous velocities). Rolled out only by
  models that predict velocities.
* ``backward``: v_t = (x_t − x_{t−Δt}) / Δt, the mean velocity over the jump that led to x_t.
  A rollout computes it from its own last two frames, so it is the convention for rollouts.
* ``forward``: v_t = (x_{t+1} − x_t) / δt with δt the interval between stored frames, the
  FastEGNN authors' one-shot convention (MD and Water-3D). It peeks one frame into the future,
  so it is never rolled out.

``paper`` is accepted as an alias of ``forward`` (the SPH code's old name for it) with a one-line
deprecation warning (`canonical_convention`).

A rollout's frame that leaves the physical range (`UNPHYSICAL`: what it does) is a convention
of every kind of data's rollout too: ``stop`` (the default) ends the rollout before it, as a
diverging prediction does; ``warn`` rolls on with a warning and a note.

Units: whatever the caller's are (Å and ps for MD, the dataset's units for SPH and N-body); Δt
(``span``) and δt (``frame_dt``) in the same time unit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import DataError, FastEGNNDeprecationWarning

PHYSICAL = "physical"
BACKWARD = "backward"
FORWARD = "forward"
#: Every velocity convention, by its one name.
VELOCITY_CONVENTIONS = (PHYSICAL, BACKWARD, FORWARD)
#: Old names still accepted (with a deprecation warning) -> the convention they mean.
CONVENTION_ALIASES = {"paper": FORWARD}

#: The three splits of every dataset, in this order (split index 0, 1, 2).
SPLITS = ("train", "valid", "test")
#: Train/valid/test sizes of the FastEGNN paper's AdK split (4,171 examples).
PAPER_ADK_RATIOS = (2481, 827, 863)

#: What a rollout frame outside the physical range does (see the module docstring).
UNPHYSICAL = ("stop", "warn")


def canonical_convention(name: str, where: str = "velocity_convention",
                         allowed: Sequence[str] = VELOCITY_CONVENTIONS) -> str:
    """The convention's one name for ``name`` (an alias is translated with a deprecation warning).

    ``allowed`` narrows the choice (SPH data store no velocities, so not ``physical``).
    Raises ValueError naming ``where`` for anything else.
    """
    if name in CONVENTION_ALIASES:
        canonical = CONVENTION_ALIASES[name]
        warnings.warn(
            f"{where}: {name!r} is a deprecated name of the {canonical!r} velocity convention; use {canonical!r}",
            FastEGNNDeprecationWarning,
            stacklevel=3,
        )
        name = canonical
    if name not in allowed:
        aliases = [alias for alias, target in CONVENTION_ALIASES.items() if target in allowed]
        choices = ", ".join(list(allowed) + [f"{alias} (= {CONVENTION_ALIASES[alias]})" for alias in aliases])
        raise ValueError(f"{where} must be one of {choices}, got {name!r}")
    return name


def history_frames(jump: int, convention: str) -> int:
    """Frames before the input frame t that a pair reads: ``jump`` for backward velocities, else 0."""
    return jump if convention == BACKWARD else 0


def valid_input_frames(num_frames: int, jump: int, convention: str) -> range:
    """Input frames t of a trajectory of ``num_frames`` with a pair t -> t + ``jump``.

    Every t with t + jump < num_frames, and t >= jump for ``backward`` velocities. (``forward``
    reads x_{t+1} too, which t + jump < num_frames already guarantees.)
    """
    first = history_frames(jump, convention)
    return range(first, max(num_frames - jump, first))


def frames_needed(jump: int, convention: str) -> int:
    """Fewest frames holding one pair: 2·jump + 1 for backward velocities, else jump + 1."""
    return history_frames(jump, convention) + jump + 1


def require_pairs(num_frames: int, jump: int, convention: str, where: str) -> range:
    """`valid_input_frames`, or a one-line DataError naming ``where`` when there is none."""
    valid = valid_input_frames(num_frames, jump, convention)
    if len(valid) == 0:
        raise DataError(
            f"{where}: {num_frames} frames are too few for jump {jump} with {convention!r} "
            f"velocities (need at least {frames_needed(jump, convention)})"
        )
    return valid


def invalid_input_frames(frames: Iterable[int], valid: range) -> list:
    """The entries of ``frames`` that are not whole numbers inside ``valid`` (in the given order)."""
    return [t for t in frames if int(t) != t or int(t) not in valid]


@dataclass
class PairVelocities:
    """Input velocity of a pair and the velocity at its target frame (None where undefined)."""

    velocities: np.ndarray
    target_velocities: Optional[np.ndarray]


def pair_velocities(
    positions: np.ndarray,
    t: int,
    jump: int,
    frame_dt: float,
    convention: str,
    velocities: Optional[np.ndarray] = None,
) -> PairVelocities:
    """The velocities of the pair (x_t, v_t) -> x_{t+jump} in ``convention``.

    positions : (T, N, 3) frames ``frame_dt`` apart; velocities : (T, N, 3) stored velocities
    (``physical`` only). Returns v_t and the target's velocity in the same convention where it
    is defined: physical: the stored v_t and v_{t+jump}; backward: (x_t − x_{t−jump}) / span and
    (x_{t+jump} − x_t) / span with span = jump · frame_dt (what a rollout feeds its next jump);
    forward: (x_{t+1} − x_t) / frame_dt and None. Computed in float64.
    """
    if convention == PHYSICAL:
        if velocities is None:
            raise ValueError("the physical convention needs stored velocities")
        return PairVelocities(velocities[t], velocities[t + jump])
    current = np.asarray(positions[t], dtype=np.float64)
    if convention == BACKWARD:
        span = jump * frame_dt
        before = np.asarray(positions[t - jump], dtype=np.float64)
        after = np.asarray(positions[t + jump], dtype=np.float64)
        return PairVelocities((current - before) / span, (after - current) / span)
    if convention == FORWARD:
        return PairVelocities((np.asarray(positions[t + 1], dtype=np.float64) - current) / frame_dt, None)
    raise ValueError(f"convention must be one of {VELOCITY_CONVENTIONS}, got {convention!r}")


def backward_velocity(positions: np.ndarray, previous: np.ndarray, dt: float) -> np.ndarray:
    """(x − x_prev) / Δt: the backward-convention velocity after a jump of Δt from ``previous``."""
    return (np.asarray(positions, dtype=np.float64) - np.asarray(previous, dtype=np.float64)) / dt


# --------------------------------------------------------------------------------------------
# Splits of one long trajectory
# --------------------------------------------------------------------------------------------


def contiguous_splits(
    num_frames: int,
    ratios: Sequence[float] = PAPER_ADK_RATIOS,
    jump: int = 1,
    history: int = 0,
) -> dict[str, range]:
    """Train/valid/test input frames from contiguous, ordered time blocks of one trajectory.

    The frames ``0..num_frames-1`` are cut into three consecutive blocks whose sizes are in
    the ratio ``ratios`` (each within one frame of the exact share). A block's input frames
    are the t with ``t - history`` and ``t + jump`` inside the block, so no example of one
    split touches a frame of another (neighbouring frames of an MD trajectory are nearly
    identical, so a random split would leak test frames into training).

    Parameters
    ----------
    num_frames : frames in the (strided) trajectory.
    ratios : three positive numbers; default the paper's AdK split 2481:827:863.
    jump : frames between input and target.
    history : frames before t an example reads (`history_frames`: ``jump`` for backward
        velocities, else 0).

    Returns
    -------
    ``{"train": range, "valid": range, "test": range}`` of input frames.

    Raises
    ------
    DataError
        If a block would hold no example; the message says how many frames are needed.
    """
    ratios = _check_ratios(ratios)
    jump = positive_int(jump, "jump")
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 0:
        raise ValueError(f"history must be a non-negative integer, got {history!r}")
    bounds = _block_bounds(int(num_frames), ratios)
    splits = {
        name: range(start + history, max(stop - jump, start + history))
        for name, start, stop in zip(SPLITS, bounds[:-1], bounds[1:])
    }
    if any(len(frames) == 0 for frames in splits.values()):
        per_block = jump + int(history) + 1
        needed = _frames_needed_for_blocks(ratios, per_block)
        shown = ":".join(f"{r:g}" for r in ratios)
        raise DataError(
            f"{num_frames} frames are too few for contiguous train/valid/test blocks in ratio "
            f"{shown} with jump {jump} and history {history}: every block needs at least "
            f"{per_block} frames, so at least {needed} frames are needed"
        )
    return splits


def positive_int(value: object, name: str) -> int:
    """``value`` as an int if it is a positive integer (not a bool); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(r) for r in ratios)
    if len(values) != len(SPLITS) or not all(np.isfinite(r) and r > 0 for r in values):
        raise ValueError(f"ratios must be {len(SPLITS)} positive numbers, got {tuple(ratios)!r}")
    return values


def _block_bounds(num_frames: int, ratios: tuple[float, ...]) -> list[int]:
    """[0, b1, b2, num_frames]: rounded cumulative shares, so each block is within 1 frame of its share."""
    shares = np.cumsum(ratios)[:-1] / sum(ratios)
    inner = [int(np.floor(num_frames * share + 0.5)) for share in shares]
    return [0, *inner, num_frames]


def _frames_needed_for_blocks(ratios: tuple[float, ...], per_block: int) -> int:
    """Smallest frame count whose blocks all hold at least ``per_block`` frames."""
    low = per_block * len(ratios)
    # Each block is >= its exact share - 1, so this many frames always suffice.
    high = int(np.ceil((per_block + 1) * sum(ratios) / min(ratios))) + 1
    for count in range(low, high + 1):
        if min(np.diff(_block_bounds(count, ratios))) >= per_block:
            return count
    return high


# --------------------------------------------------------------------------------------------
# Backward-velocity history at inference
# --------------------------------------------------------------------------------------------


class JumpHistory:
    """The last jump of a system, to give a ``backward`` model its mean velocity over Δt.

    The rollout loop, the ASE calculator and the OpenMM stepper all keep one. After a jump from
    x_a to x_b (`record`), a query at positions x that equal x_b (within ``tol``, max |Δx|) gets
    (x − x_a) / Δt: the system was moved by exactly that jump. A query at x_a again (the same
    point asked twice, e.g. with other momenta) gets the velocity the jump was computed from, if
    `record` was told it. Anything else gets None: the caller falls back to the engine's
    instantaneous velocities (an approximation for backward models) and says so.

    Positions are (N, 3) in the caller's length unit, Δt (``dt``) in its time unit.
    """

    def __init__(self, dt: float, tol: float = 1e-6) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}")
        self.dt = float(dt)
        self.tol = float(tol)
        self.start: Optional[np.ndarray] = None
        self.end: Optional[np.ndarray] = None
        self.start_velocity: Optional[np.ndarray] = None

    def record(self, start: np.ndarray, end: np.ndarray, start_velocity: Optional[np.ndarray] = None) -> None:
        """The system went (or is about to go) from ``start`` to ``end`` in one jump of Δt;
        ``start_velocity`` is the model input the jump was computed from, when there was one."""
        self.start = np.array(start, dtype=np.float64)
        self.end = np.array(end, dtype=np.float64)
        self.start_velocity = None if start_velocity is None else np.array(start_velocity, dtype=np.float64)

    def forget(self) -> None:
        """No known jump: the next query returns None."""
        self.start = self.end = self.start_velocity = None

    @property
    def known(self) -> bool:
        return self.start is not None

    def matches(self, a: np.ndarray, b: Optional[np.ndarray]) -> bool:
        """True if ``a`` and ``b`` have one shape and differ by at most ``tol`` everywhere."""
        return b is not None and a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= self.tol

    def velocity(self, positions: np.ndarray) -> Optional[np.ndarray]:
        """The backward velocity at ``positions`` from the recorded jump, or None (see the class)."""
        if self.start is None:
            return None
        x = np.asarray(positions, dtype=np.float64)
        if self.matches(x, self.end):
            return backward_velocity(x, self.start, self.dt)
        if self.start_velocity is not None and self.matches(x, self.start):
            return self.start_velocity
        return None
