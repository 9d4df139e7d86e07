"""Training for rollouts: input noise on the velocity history, and pushforward unrolls.

A jump trained only on reference inputs meets, in a rollout, inputs it made itself, whose errors
it never saw. Two remedies from the learned-simulator literature, both on the examples of one
batch before it is collated:

* **Input noise** (GNS, Sanchez-Gonzalez et al. 2020): the two frames behind the input, x_{t−Δt}
  and x_t, get random-walk noise, n_{t−Δt} ~ N(0, σ²/2) and n_t = n_{t−Δt} + N(0, σ²/2) per
  coordinate, so x_t moves by n_t (σ in all) and the backward velocity (x_t − x_{t−Δt})/Δt by
  (n_t − n_{t−Δt})/Δt. The target moves with x_t (x_{t+Δt} + n_t), as GNS keeps its targets
  consistent: the model is asked for the true displacement from a noisy history, not to undo
  the offset of the whole input. A ``correction`` γ in (0, 1] (MeshGraphNets' choice, made for
  first-order systems) moves the target by only (1 − γ) n_t: the model is then also asked to
  take back the fraction γ of the position noise, i.e. to pull a particle that is where the data
  would not put it (too near a neighbour, inside a wall) back towards where it could be, in the
  hope that its rollouts then contract their own errors. On SPH water it measured neutral
  (benchmarks/RESULTS.md, ninth SPH section); the default stays GNS's γ = 0.
* **Pushforward** (LagrangeBench, Brandstetter et al. 2022): the model runs m jumps from the
  input without gradient, feeding itself its own outputs (velocity from its last two frames, as
  a rollout does), and the step with gradient starts from there, scored against the reference
  frame m + 1 jumps after the input. Each batch draws m uniformly from 0..K−1.

Both need velocities derived from positions (the backward convention): a file's physical
velocities have no history to perturb or to continue. Noise is drawn for the moving nodes only
(walls are kinematic inputs). Lengths in the data's unit, Δt in its time unit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Hashable, Optional, Sequence

import numpy as np
import torch

from .conventions import BACKWARD
from .graph import FramePair
from .inference import predict_positions

__all__ = ["RolloutTraining", "noisy_history", "successor_key"]


def successor_key(pair: FramePair, frame: Optional[int] = None) -> Optional[tuple[Hashable, ...]]:
    """The key that finds, among pairs of the same run, the pair whose input frame is ``frame``
    (default: this pair's target frame, i.e. its successor). None without frame metadata."""
    meta = pair.metadata
    frames = meta.get("frames")
    if frames is None:
        return None
    run = tuple(meta.get(name) for name in ("source", "system", "trajectory"))
    return (*run, int(frames[1] if frame is None else frame))


def noisy_history(pair: FramePair, sigma: float, rng: np.random.Generator, correction: float = 0.0) -> FramePair:
    """``pair`` with random-walk noise of total standard deviation ``sigma`` on its input history
    (module docstring); the target moves with the input position by (1 − ``correction``) of its
    noise (0: all of it, GNS; 1: none, the model undoes the noise). Returns a new pair."""
    moving = np.ones(len(pair.positions), dtype=bool) if pair.moving is None else np.asarray(pair.moving)
    dt = float(pair.metadata["dt"])
    half = sigma / np.sqrt(2.0)
    before = np.zeros(pair.positions.shape)
    step = np.zeros(pair.positions.shape)
    before[moving] = rng.normal(scale=half, size=(int(moving.sum()), 3))
    step[moving] = rng.normal(scale=half, size=(int(moving.sum()), 3))
    now = before + step
    return replace(
        pair,
        positions=pair.positions + now,
        velocities=pair.velocities + step / dt,
        target_positions=pair.target_positions + (1.0 - correction) * now,
        target_velocities=None,
    )


class RolloutTraining:
    """Turns a chunk of training pairs into the examples of one batch: noised, and unrolled.

    ``pairs``: every training pair (the unroll looks up later reference frames among them);
    ``input_noise``: σ of `noisy_history` (0: off); ``noise_correction``: its γ, the fraction of
    the position noise the target does not follow (0: GNS); ``unroll``: K, the most jumps a batch runs
    (1: off, every example is a reference input); ``seed`` seeds both draws. The random state is
    part of the trainer's resume state (`state` / `set_state`).
    """

    def __init__(self, pairs: Sequence[FramePair], input_noise: float, unroll: int, seed: int,
                 velocity_convention: str, noise_correction: float = 0.0) -> None:
        if (input_noise > 0 or unroll > 1) and velocity_convention != BACKWARD:
            raise ValueError(
                f"input noise and unrolled training need velocities from positions (backward), "
                f"not {velocity_convention!r}"
            )
        if not 0.0 <= noise_correction <= 1.0:
            raise ValueError(f"noise_correction must be in [0, 1], got {noise_correction}")
        self.input_noise, self.unroll = float(input_noise), int(unroll)
        self.noise_correction = float(noise_correction)
        self.rng = np.random.default_rng(seed)
        self.by_input: dict[tuple[Hashable, ...], FramePair] = {}
        if self.unroll > 1:
            for pair in pairs:
                frames = pair.metadata.get("frames")
                key = None if frames is None else successor_key(pair, frames[0])
                if key is not None:
                    self.by_input[key] = pair

    @property
    def active(self) -> bool:
        return self.input_noise > 0 or self.unroll > 1

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def successors(self, pair: FramePair, jumps: int) -> list[FramePair]:
        """The training pairs 1..``jumps`` jumps after ``pair`` in the same run, as far as they go."""
        found = []
        while len(found) < jumps:
            key = successor_key(pair)
            pair = self.by_input.get(key) if key is not None else None
            if pair is None:
                break
            found.append(pair)
        return found

    def examples(self, chunk: Sequence[FramePair], model: torch.nn.Module, cutoff: Optional[float],
                 drop_rate: float, dtype: torch.dtype, device: str) -> list[FramePair]:
        """The batch's examples from reference ``chunk``: noise first, then m free-running jumps
        (m uniform in 0..K−1; an example without m later reference frames runs fewer)."""
        examples = list(chunk)
        if self.input_noise > 0:
            examples = [noisy_history(pair, self.input_noise, self.rng, self.noise_correction) for pair in examples]
        if self.unroll > 1:
            steps = int(self.rng.integers(0, self.unroll))
            if steps:
                examples = self._pushed_forward(chunk, examples, steps, model, cutoff, drop_rate, dtype, device)
        return examples

    def _pushed_forward(self, chunk: Sequence[FramePair], examples: list[FramePair], steps: int,
                        model: torch.nn.Module, cutoff: Optional[float], drop_rate: float,
                        dtype: torch.dtype, device: str) -> list[FramePair]:
        # Each example runs as many of the ``steps`` jumps as the reference has frames after it.
        later = [self.successors(pair, steps) for pair in chunk]
        current = list(examples)
        offsets = [ex.target_positions - ref.target_positions for ex, ref in zip(examples, chunk)]
        was_training = model.training
        try:
            for step in range(1, max(map(len, later)) + 1):
                active = [i for i, chain in enumerate(later) if len(chain) >= step]
                predicted = predict_positions(model, [current[i] for i in active], cutoff, drop_rate,
                                              batch_size=len(active), dtype=dtype, device=device)
                for i, positions in zip(active, predicted):
                    before, reference = current[i], later[i][step - 1]
                    if before.moving is not None:  # walls follow the reference, not the model
                        positions = np.where(before.moving[:, None], positions, before.target_positions)
                    current[i] = replace(
                        reference,
                        positions=positions,
                        velocities=(positions - before.positions) / float(before.metadata["dt"]),
                        target_positions=reference.target_positions + offsets[i],
                        target_velocities=None,
                    )
        finally:
            model.train(was_training)
        return current
