"""Where a trajectory's equilibration ends: the first time after which its block means stop drifting.

A reference run starts from a structure that is not in equilibrium with its force field (a crystal
structure, or the last frame of an earlier run re-protonated and minimised): its radius of gyration
and its distance from its eventual mean structure drift for tens to hundreds of ps. Pairs taken from
that drift teach a jump a motion that equilibrium dynamics never makes, so the drift is discarded.

Criterion (`equilibration_time`), stated so it can be checked by hand:

1. The last half of the trajectory is the reference (the criterion assumes it is equilibrated;
   a trajectory still drifting there is reported as such: `EquilibrationCheck.drifting`).
2. Observables per frame (`drift_observables`), both free of any reference structure, so an
   equilibrated protein that wanders between substates over nanoseconds is not taken for one
   still relaxing: the radius of gyration, and the number of residue contacts (8 Å, |i − j| ≥ 3;
   `metrics.contact_map`), which a compacting or unfolding structure changes.
3. Block means over blocks of ``block_ps``; the band of each observable is the mean ± ``z`` SD of
   the reference half's block means (slow equilibrium fluctuations widen it, as they should).
4. The discard time is the start of the first block whose means of every observable lie inside
   their bands: the time the relaxing observables first reach their equilibrium fluctuation. (Asking
   that every later block stay inside too is fragile: an equilibrated protein's slow substate
   changes put single blocks outside a band made from one half, and that rule then discards
   nanoseconds of villin's equilibrium runs.)

"Drifting" is said when the reference half's own block means still trend: the means of its first
and second halves differ by more than ``z`` SD of the block means within those halves.
Units: Å and ps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .metrics import contact_map, radius_of_gyration


@dataclass
class EquilibrationCheck:
    """The criterion's result for one trajectory (module docstring).

    discard_ps : time to discard (ps); block_starts : (B,) start of each block (ps); block_means :
    ``{observable: (B,) block means}`` (Rg in Å, contacts a count); bands : ``{observable: (low,
    high)}``; drifting :
    the reference half itself still trends (the discard is then a lower bound).
    """

    discard_ps: float
    block_starts: np.ndarray
    block_means: dict[str, np.ndarray] = field(default_factory=dict)
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)
    drifting: bool = False


def drift_observables(frames: np.ndarray, residue_ids: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Per-frame observables of (T, N, 3) frames (Å): ``rg`` (Å) and ``contacts`` (residue pairs
    in contact; ``residue_ids`` (N,) groups atoms, None makes each atom a residue)."""
    return {
        "rg": np.asarray(radius_of_gyration(frames), dtype=float),
        "contacts": np.array([contact_map(frame, residue_ids=residue_ids).sum() / 2 for frame in frames], dtype=float),
    }


def equilibration_time(
    frames: np.ndarray, frame_dt: float, residue_ids: Optional[np.ndarray] = None, block_ps: float = 25.0,
    z: float = 2.0,
) -> EquilibrationCheck:
    """The criterion of the module docstring for (T, N, 3) frames (Å) ``frame_dt`` ps apart;
    ``residue_ids`` (N,) as in `drift_observables`.

    Needs at least 8 blocks (4 in the reference half); raises ValueError otherwise.
    """
    per_block = max(int(round(block_ps / frame_dt)), 1)
    blocks = len(frames) // per_block
    if blocks < 8:
        raise ValueError(f"{len(frames)} frames make {blocks} blocks of {block_ps:g} ps; the criterion needs 8")
    half = blocks // 2  # the reference: blocks half .. blocks-1
    observables = drift_observables(frames[: blocks * per_block], residue_ids)
    means = {name: values.reshape(blocks, per_block).mean(axis=1) for name, values in observables.items()}
    bands, inside, drifting = {}, np.ones(blocks, dtype=bool), False
    for name, block_means in means.items():
        ref = block_means[half:]
        centre, spread = float(ref.mean()), float(ref.std(ddof=1))
        bands[name] = (centre - z * spread, centre + z * spread)
        inside &= (block_means >= bands[name][0]) & (block_means <= bands[name][1])
        early, late = ref[: len(ref) // 2], ref[len(ref) - len(ref) // 2 :]
        within = float(np.sqrt((early.var(ddof=1) + late.var(ddof=1)) / 2))  # the trend left out
        drifting |= abs(float(early.mean() - late.mean())) > z * within
    first_kept = int(np.argmax(inside))  # the reference half's mean lies in its band: some block does
    starts = np.arange(blocks) * per_block * frame_dt
    return EquilibrationCheck(first_kept * per_block * frame_dt, starts, means, bands, bool(drifting))
