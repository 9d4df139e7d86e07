"""The reference MD of an earlier `fastegnn-md validate` run, reused so that only the stepper runs.

Reference MD is almost all of a validation's cost (AdK: ~1.5 core-hours per 200 ps and replica;
the stepper ~1/20 of it), and it does not depend on the model or the stepper's settings. A run
with ``reference_from=DIR`` takes the reference replicas' frames, energies and wall times from
``DIR/validation.checkpoint.npz`` jump by jump and starts the stepper from the same common start:

* a run that stored its common start (``start_state``: positions and velocities of the whole
  system as OpenMM XML, ``start_previous``: the selected atoms one Δt before it, Å) and its
  ``reference_key`` (structure, force field, integrator, seed, steps per Δt, replica count) is
  reused as is when the keys agree;
* an older run without them is reused only if this run's common start, made again, lands on its
  first reference frame (max. abs. difference ≤ `START_TOLERANCE_A` Å): OpenMM's CPU platform
  with one thread repeats it bit for bit; another structure, force field, seed or Δt does not.

The speed-up is then the reused run's reference wall time over this run's stepper time: measured
in two processes, possibly under different loads; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import DataError

#: Largest per-coordinate difference (Å) between a recomputed common start and an old run's first
#: reference frame for that run's reference to be reused.
START_TOLERANCE_A = 1e-3
CHECKPOINT_NAME = "validation.checkpoint.npz"


@dataclass
class ReusedReference:
    """Reference arrays of an earlier run. ``arrays``: ``reference_frames`` (T+1, N, 3) Å,
    ``pe_reference`` (T+1,) kJ/mol, ``wall_reference`` (T,) s, and ``reference_<k>_frames``,
    ``pe_reference_<k>`` of replicas k = 1..replicas−1; ``start_state`` (OpenMM XML State) and
    ``start_previous`` (N, 3) Å when the run stored its common start."""

    directory: Path
    arrays: dict[str, np.ndarray]
    replicas: int
    jumps: int
    steps_per_jump: int
    reference_key: Optional[str]
    start_state: Optional[str]
    start_previous: Optional[np.ndarray]

    def names(self) -> tuple[str, ...]:
        """The per-jump arrays of every replica (replica 0's wall time included)."""
        extra = tuple(name for k in range(1, self.replicas) for name in (f"reference_{k}_frames", f"pe_reference_{k}"))
        return ("reference_frames", "pe_reference", "wall_reference") + extra

    def frame(self, k: int) -> dict[str, Any]:
        """Jump k's values (k ≥ 1): every replica's frame and energy, replica 0's wall time."""
        values = {name: self.arrays[name][k] for name in self.names() if name != "wall_reference"}
        values["wall_reference"] = float(self.arrays["wall_reference"][k - 1])
        return values

    def check_start(self, start: np.ndarray) -> None:
        """Refuse an old run whose first reference frame is not this run's common start ``start`` (N, 3) Å."""
        first = self.arrays["reference_frames"][0]
        if first.shape != start.shape:
            raise DataError(f"{self.directory}: its reference has {first.shape[0]} selected atoms, this run "
                            f"{start.shape[0]}: another structure or model selection; rerun without --reference-from")
        gap = float(np.abs(np.asarray(first, dtype=np.float64) - start).max())
        if gap > START_TOLERANCE_A:
            raise DataError(f"{self.directory}: its common start differs from this run's by {gap:.3g} Å (another "
                            f"structure, force field, seed or thread count?); rerun without --reference-from")


def load_reused_reference(directory: Any) -> ReusedReference:
    """Read the reference of the `validate` run in ``directory`` (its ``validation.checkpoint.npz``)."""
    directory = Path(directory)
    path = directory / CHECKPOINT_NAME
    if not path.is_file():
        raise DataError(f"{directory}: no {CHECKPOINT_NAME} (not the output directory of fastegnn-md validate)")
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable validation checkpoint ({exc})") from None
    if "reference_reused_from" in arrays:
        raise DataError(f"{directory}: reuses another run's reference itself; pass that run's directory "
                        f"({arrays['reference_reused_from']})")
    replicas = int(arrays["replicas"]) if "replicas" in arrays else 1
    reference = ReusedReference(directory, arrays, replicas, 0, 0, None, None, None)
    missing = [name for name in reference.names() + ("steps",) if name not in arrays]
    if missing:
        raise DataError(f"{path}: incomplete validation checkpoint (no {', '.join(missing)})")
    reference.jumps = len(arrays["pe_reference"]) - 1
    if reference.jumps < 1:
        raise DataError(f"{path}: holds no jump of reference MD yet")
    reference.steps_per_jump = int(arrays["steps"][0]) // reference.jumps
    if "reference_key" in arrays:
        reference.reference_key = str(arrays["reference_key"])
    if "start_state" in arrays:
        reference.start_state = str(arrays["start_state"])
        reference.start_previous = np.asarray(arrays["start_previous"], dtype=np.float64)
    return reference
