"""Molecules split across periodic boundaries made whole, as an MDAnalysis on-the-fly transformation.

Positions in Å (MDAnalysis' units); the graphs are built with plain (non-periodic) distances, so
every frame is made whole before it is read (`make_whole`).
"""

from __future__ import annotations

from typing import Any, Optional

import MDAnalysis
import numpy as np
from MDAnalysis.lib.distances import minimize_vectors
from MDAnalysis.transformations import unwrap
from MDAnalysis.transformations.base import TransformationBase

from .reading import trajectory_name

# Names of the ways `make_whole` can treat periodic boundaries (recorded in the data spec).
WHOLE_NONE = "none"
WHOLE_UNWRAP = "unwrap"
WHOLE_CHAIN = "minimum-image chain"
# Which of the above is used is a function of the files (box, bonds) and of this policy, so the
# policy (not the method chosen) enters the cache key; bump it when make_whole changes.
MAKE_WHOLE_POLICY = "unwrap bonded fragments, else minimum-image chain per segment/chain; v1"


def whole_method(universe: MDAnalysis.Universe, atoms: MDAnalysis.AtomGroup) -> str:
    """Which way `make_whole` treats this system: ``"none"``, ``"unwrap"`` or ``"minimum-image chain"``.

    Decided on the current frame: no box -> ``"none"``; a box and bonds that involve the
    selection -> ``"unwrap"``; a box and no such bonds -> ``"minimum-image chain"``.
    """
    if not _has_box(universe.trajectory.ts):
        return WHOLE_NONE
    if hasattr(atoms, "bonds") and len(atoms.bonds) > 0:
        return WHOLE_UNWRAP
    return WHOLE_CHAIN


def make_whole(universe: MDAnalysis.Universe, atoms: MDAnalysis.AtomGroup) -> None:
    """Make molecules split across periodic boundaries whole in every frame read afterwards.

    Graphs are built with plain (non-periodic) distances, so a molecule split by the box would
    get spurious ~box-length edges and jumps. This adds an on-the-fly MDAnalysis transformation
    to ``universe.trajectory``; call it once, before reading frames. Which method is used
    (`whole_method`):

    * **no box**: nothing to do.
    * **box and bonds** (TPR, PSF, ...): ``MDAnalysis.transformations.unwrap`` on the bonded
      fragments that contain the selected atoms, and only those (e.g. the protein, not the
      solvent). Selected atoms without bonds (a PDB whose CONECT records cover only some
      atoms) are left as they are. MDAnalysis' unwrap is exact but not fast (~0.25 s per frame
      for the 3,341-atom AdK protein here); `load_md_pairs` caches its result.
    * **box, no bonds** (GRO, PDB without CONECT, ...): fallback `MinimumImageChain`. Each
      segment/chain of the selection is made contiguous by applying the minimum image
      convention to the vector between consecutive selected atoms in topology order. This is
      valid for polymer selections such as ``backbone`` or ``name CA``, whose consecutive atoms
      are always closer than half the box; it is wrong for selections whose consecutive atoms
      can be far apart (e.g. water or ions), which it would chain into one blob.

    Raises
    ------
    ValueError
        If the trajectory already has transformations (MDAnalysis adds them only once).
    """
    method = whole_method(universe, atoms)
    if method == WHOLE_NONE:
        return
    if method == WHOLE_UNWRAP:
        transform: TransformationBase = unwrap(_fragments_of(atoms))
    else:
        transform = MinimumImageChain(atoms)
    try:
        universe.trajectory.add_transformations(transform)
    except ValueError as exc:
        raise ValueError(
            f"make_whole: cannot add a transformation to {trajectory_name(universe)} ({exc})"
        ) from None


def _has_box(ts: Any) -> bool:
    dims = ts.dimensions
    return dims is not None and bool(np.all(np.asarray(dims[:3]) > 0))


def _fragments_of(atoms: MDAnalysis.AtomGroup) -> MDAnalysis.AtomGroup:
    """All atoms of the bonded fragments that contain at least one atom of ``atoms``."""
    indices = np.unique(np.concatenate([fragment.ix for fragment in atoms.fragments]))
    return atoms.universe.atoms[indices]


def chain_runs(atoms: MDAnalysis.AtomGroup) -> list[np.ndarray]:
    """Atom indices of the selection in topology order, split where the segment or chain changes."""
    order = np.argsort(atoms.ix, kind="stable")
    indices = atoms.ix[order]
    keys = [atoms.segindices[order]]
    if hasattr(atoms, "chainIDs"):
        keys.append(np.asarray(atoms.chainIDs)[order])
    breaks = np.zeros(max(len(indices) - 1, 0), dtype=bool)
    for key in keys:
        breaks |= key[1:] != key[:-1]
    return np.split(indices, np.nonzero(breaks)[0] + 1)


class MinimumImageChain(TransformationBase):
    """Make each segment/chain of a polymer selection contiguous across periodic boundaries.

    Per frame and per run of `chain_runs`: keep the first atom where it is and place atom k+1
    at atom k plus the minimum-image vector between them (triclinic boxes included). Only the
    selected atoms move. See `make_whole` for when this is valid.
    """

    def __init__(
        self, atoms: MDAnalysis.AtomGroup, max_threads: Optional[int] = None, parallelizable: bool = True
    ):
        super().__init__(max_threads=max_threads, parallelizable=parallelizable)
        self.runs = [run for run in chain_runs(atoms) if len(run) > 1]

    def _transform(self, ts: Any) -> Any:
        if not _has_box(ts):
            return ts
        box = np.asarray(ts.dimensions, dtype=np.float64)
        positions = ts.positions  # the frame's own array: edited in place
        for run in self.runs:
            # float64 so the running sum of steps does not accumulate float32 rounding.
            x = positions[run].astype(np.float64)
            steps = minimize_vectors(np.diff(x, axis=0), box)
            x[1:] = x[0] + np.cumsum(steps, axis=0)
            positions[run] = x
        return ts

