"""Autoregressive rollouts: K learned jumps from one frame, each fed only the model's own output.

Units: positions Å, velocities Å/ps, times ps (the checkpoint's units for molecular models).

A rollout needs a velocity for every input. Which one depends on the checkpoint's velocity
convention (docs/architecture.md):

* ``backward``: v_k = (x_k − x_{k−1}) / Δt from the rollout's own last two frames; the start
  velocity comes from the reference frame Δt before the start (see `start_velocity`).
* ``physical``: the model must predict velocities (``Jump.velocities``); otherwise it cannot
  be rolled out and `check_rollout_safe` says so.
* ``forward``: the paper's one-shot convention uses x_{t+1} − x_t, i.e. the future. Never
  rolled out.

The trivial predictors every report shows beside the model use the same start:
"no motion" keeps x_0, "constant velocity" moves x_0 + v_0·kΔt.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional, Protocol

import numpy as np

from .conventions import FORWARD, PHYSICAL, JumpHistory
from .errors import DataError, NonFiniteJump
from .local_geometry import HeldGeometry
from .predictor import Jump, Predictor

#: Default per-jump displacement (Å) beyond which a rollout is declared exploding. Thermal motion
#: moves a backbone atom ~1–3 Å in tens of ps; 20 Å in one jump is a broken structure.
DEFAULT_MAX_DISPLACEMENT = 20.0


class StopRollout(Exception):
    """Raised by an ``on_frame`` callback (e.g. a writer that cannot store the frame) to end the
    rollout cleanly: the frame is dropped, the ones before it are kept, the message is the reason."""


#: ``constrain(k, positions (N, 3)) -> positions (N, 3)`` for jump k (see `roll_out`).
Constraint = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class RolloutFrame:
    """One predicted frame: jump index k ≥ 1, time since the start (ps), positions (N, 3) Å,
    velocities fed to the next jump (N, 3) Å/ps, virtual nodes (C, 3) Å or None."""

    jump: int
    time: float
    positions: np.ndarray
    velocities: np.ndarray
    virtual_positions: Optional[np.ndarray]


@dataclass
class RolloutStop:
    """Why a rollout ended before its last jump (``reason`` is one line), and at which jump."""

    jump: int
    reason: str


@dataclass
class StartState:
    """Positions (N, 3) Å and velocity (N, 3) Å/ps a rollout starts from, and how v was obtained."""

    positions: np.ndarray
    velocities: np.ndarray
    note: str = ""
    exact: bool = True


@dataclass
class RolloutResult:
    """Frames 1..K the rollout produced (fewer if it stopped) and the stop, if any."""

    frames: list[RolloutFrame] = field(default_factory=list)
    stop: Optional[RolloutStop] = None


def check_rollout_safe(predictor: Predictor) -> None:
    """Raise DataError if the checkpoint's velocity convention cannot be fed its own outputs."""
    if predictor.spec.velocity_convention == FORWARD:
        raise DataError(
            "checkpoint: trained with the 'forward' velocity convention (x[t+1] - x[t], the future), "
            "which only one-shot evaluation may use; train with --velocity backward for rollouts"
        )


def start_velocity(
    positions: np.ndarray, frame_times: np.ndarray, start: int, dt: float
) -> StartState:
    """The ``backward`` start velocity at frame ``start`` of a trajectory.

    positions : (T, N, 3) Å; frame_times : (T,) ps; dt : the model's jump length (ps).
    Exact when a frame lies exactly dt before the start: v = (x_s − x_{s−dt}) / dt. Otherwise the
    earlier frame whose distance in time is closest to dt is used (and the note says so); with
    no earlier frame the start velocity is zero (noted).
    """
    x0 = positions[start]
    earlier = np.arange(start)
    if earlier.size == 0:
        return StartState(x0, np.zeros_like(x0), "no frame before the start: start velocity set to zero", False)
    gaps = frame_times[start] - frame_times[earlier]
    best = int(earlier[np.argmin(np.abs(gaps - dt))])
    gap = float(frame_times[start] - frame_times[best])
    velocity = (x0 - positions[best]) / gap
    if abs(gap - dt) <= 1e-3 * dt:
        return StartState(x0, velocity, "")
    note = (
        f"no frame {dt:g} ps before the start: start velocity from frame {best} "
        f"({gap:g} ps earlier) instead"
    )
    return StartState(x0, velocity, note, False)


class JumpFunction(Protocol):
    """One jump of a rollout: ``jump(positions (N, 3), velocities (N, 3), node_attrs, rng=rng) -> Jump``.

    The loop hands every call the same seeded ``numpy.random.Generator``, so a jump that is a
    sample from a distribution (not only the model's mean) gives a reproducible rollout.
    """

    def __call__(self, positions: np.ndarray, velocities: np.ndarray, node_attrs: Optional[np.ndarray], *,
                 rng: np.random.Generator) -> Jump: ...


class MeanJump:
    """The model's own (deterministic) jump: `Predictor.predict`; ignores the generator.

    ``held_geometry``, if given, restores the distances it names to their values at the jump's
    start (`fastegnn_md.local_geometry.HeldGeometry`: bonds, bond angles and peptide planes, as
    constraints do in MD); the predicted velocities and virtual nodes are the model's."""

    def __init__(self, predictor: Predictor, held_geometry: Optional[HeldGeometry] = None) -> None:
        self.predictor = predictor
        self.held_geometry = held_geometry

    def __call__(self, positions: np.ndarray, velocities: np.ndarray, node_attrs: Optional[np.ndarray], *,
                 rng: np.random.Generator) -> Jump:
        jump = self.predictor.predict(positions, velocities, node_attrs)
        if self.held_geometry is None:
            return jump
        held = self.held_geometry.restore(positions, jump.positions)
        return replace(jump, positions=held, mean=jump.positions)


class SampledJump:
    """A jump drawn from the checkpoint's fitted spread around the model's mean
    (`Predictor.sample`, `fastegnn_md.spread`), from the loop's seeded generator; ``held_pairs``
    (P, 2), where the topology is known, keep their distances too (`Predictor.sample`)."""

    def __init__(self, predictor: Predictor, held_pairs: Optional[np.ndarray] = None) -> None:
        predictor.require_spread()
        self.predictor = predictor
        self.held_pairs = held_pairs

    def __call__(self, positions: np.ndarray, velocities: np.ndarray, node_attrs: Optional[np.ndarray], *,
                 rng: np.random.Generator) -> Jump:
        return self.predictor.sample(positions, velocities, node_attrs, rng=rng, held_pairs=self.held_pairs)


def roll_out(
    predictor: Predictor,
    start: StartState,
    num_jumps: int,
    node_attrs: Optional[np.ndarray] = None,
    max_displacement: float = DEFAULT_MAX_DISPLACEMENT,
    on_frame: Optional[Callable[[RolloutFrame], None]] = None,
    progress: bool = False,
    constrain: Optional[Constraint] = None,
    jump: Optional[JumpFunction] = None,
    seed: Optional[int] = 0,
) -> RolloutResult:
    """Apply ``num_jumps`` learned jumps from ``start``; each input is the previous output.

    ``on_frame`` is called with every frame as soon as it is made (writers stream it to disk); it
    may raise `StopRollout` to end the rollout. The rollout stops early, keeping every frame
    made so far, when a prediction is not finite, moves any atom more than
    ``max_displacement`` Å in one jump, or ``on_frame`` stops it; ``result.stop`` says why.
    ``constrain(k, positions)``, if given, returns the positions of jump k with prescribed nodes
    put where they must be (SPH walls follow the reference); it runs before those checks and
    the velocity fed to the next jump is computed from what it returns. ``jump`` makes each jump
    (default `MeanJump`: the model's prediction), drawing from ``numpy.random.default_rng(seed)``.
    """
    from tqdm.auto import tqdm

    check_rollout_safe(predictor)
    result = RolloutResult()
    steps = iterate_jumps(predictor, start, num_jumps, node_attrs, max_displacement, result, constrain, jump, seed)
    for frame in tqdm(steps, total=num_jumps, desc="rollout", unit="jump", disable=not progress):
        if on_frame is not None:
            try:
                on_frame(frame)
            except StopRollout as exc:
                result.stop = RolloutStop(frame.jump, f"jump {frame.jump}: {exc}")
                break
        result.frames.append(frame)
    return result


def iterate_jumps(
    predictor: Predictor,
    start: StartState,
    num_jumps: int,
    node_attrs: Optional[np.ndarray],
    max_displacement: float,
    result: RolloutResult,
    constrain: Optional[Constraint] = None,
    jump: Optional[JumpFunction] = None,
    seed: Optional[int] = 0,
) -> Iterator[RolloutFrame]:
    """Generator behind `roll_out`; on a stop it records ``result.stop`` and returns."""
    dt = predictor.dt
    x, v = np.asarray(start.positions, np.float64), np.asarray(start.velocities, np.float64)
    physical = predictor.spec.velocity_convention == PHYSICAL
    step = jump if jump is not None else MeanJump(predictor)
    rng = np.random.default_rng(seed)
    history = JumpHistory(dt)
    for k in range(1, num_jumps + 1):
        try:
            out = step(x, v, node_attrs, rng=rng)
        except NonFiniteJump:
            result.stop = RolloutStop(k, f"jump {k}: the model predicted non-finite positions")
            return
        new_x = out.positions if constrain is None else constrain(k, out.positions)
        if not np.isfinite(new_x).all():
            result.stop = RolloutStop(k, f"jump {k}: the model predicted non-finite positions")
            return
        moved = float(np.sqrt(((new_x - x) ** 2).sum(axis=1)).max())
        if moved > max_displacement:
            result.stop = RolloutStop(k, f"jump {k}: {_moved_too_far(predictor, moved, max_displacement)}")
            return
        if physical:
            if out.velocities is None:
                raise DataError(
                    "checkpoint: uses physical velocities but its model does not predict them, "
                    "so it cannot be rolled out; train with --velocity backward"
                )
            new_v = out.velocities
        else:  # backward: the mean velocity over the jump just made, from the rollout's own frames
            history.record(x, new_x)
            new_v = history.velocity(new_x)
        x, v = new_x, new_v
        yield RolloutFrame(k, k * dt, x, v, out.virtual_positions)


def _moved_too_far(predictor: Predictor, moved: float, limit: float) -> str:
    """The stop reason for a node that moved ``moved`` > ``limit`` in one jump, in the model's unit."""
    unit = predictor.spec.units.get("length", "Å")
    if unit == "Å":
        return f"an atom moved {moved:.1f} Å in one jump (limit {limit:g} Å); the rollout is exploding"
    suffix = "" if unit == "dimensionless" else f" {unit}"  # SPH/N-body: the dataset's own length unit
    return f"a particle moved {moved:.3g}{suffix} in one jump (limit {limit:g}{suffix}); the rollout is exploding"


def no_motion(start: StartState, num_jumps: int, dt: float) -> np.ndarray:
    """Trivial predictor: x_k = x_0 for k = 1..K; (K, N, 3) Å."""
    return np.repeat(start.positions[None], num_jumps, axis=0)


def constant_velocity(start: StartState, num_jumps: int, dt: float) -> np.ndarray:
    """Trivial predictor: x_k = x_0 + v_0·kΔt for k = 1..K; (K, N, 3) Å."""
    steps = np.arange(1, num_jumps + 1, dtype=np.float64)[:, None, None] * dt
    return start.positions[None] + start.velocities[None] * steps


TRIVIAL_PREDICTORS: dict[str, Callable[[StartState, int, float], np.ndarray]] = {
    "no motion": no_motion,
    "constant velocity": constant_velocity,
}
