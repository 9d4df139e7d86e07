"""Writers: predicted frames and virtual nodes, in any format MDAnalysis writes (Å, ps)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import MDAnalysis
import numpy as np

from ...errors import DataError
from ...io import commit_partial, partial_path, write_atomically
from .reading import PathLike


def writer_extension(path: PathLike) -> str:
    """``path``'s extension if MDAnalysis can write it, else raise DataError naming the file."""
    path = Path(path)
    try:
        MDAnalysis.coordinates.core.get_writer_for(str(path))
    except (TypeError, ValueError):
        kind = path.suffix.lstrip(".").upper() or "without extension"
        raise DataError(f"{path}: MDAnalysis cannot write trajectories of this format ({kind})") from None
    return path.suffix


def standalone_universe(atoms: MDAnalysis.AtomGroup) -> MDAnalysis.Universe:
    """A new Universe holding only ``atoms`` (topology attributes copied), with no periodic box."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        universe = MDAnalysis.Merge(atoms)
    universe.dimensions = None
    return universe


def virtual_node_universe(num_virtual: int) -> MDAnalysis.Universe:
    """Pseudo-atoms for C virtual nodes: names V1..VC, residue VRT 1..C, chain V, element X."""
    universe = MDAnalysis.Universe.empty(
        num_virtual, n_residues=num_virtual, atom_resindex=np.arange(num_virtual), trajectory=True
    )
    universe.add_TopologyAttr("name", [f"V{i + 1}" for i in range(num_virtual)])
    universe.add_TopologyAttr("type", ["X"] * num_virtual)
    universe.add_TopologyAttr("element", ["X"] * num_virtual)
    universe.add_TopologyAttr("resname", ["VRT"] * num_virtual)
    universe.add_TopologyAttr("resid", np.arange(1, num_virtual + 1))
    universe.add_TopologyAttr("chainID", ["V"] * num_virtual)
    universe.dimensions = None
    return universe


def write_pdb(universe: MDAnalysis.Universe, positions: np.ndarray, path: PathLike) -> Path:
    """Write ``universe``'s atoms at ``positions`` (N, 3) Å as a single-frame PDB, atomically."""
    path = Path(path)
    universe.atoms.positions = positions

    def write(handle: Any) -> None:
        tmp = path.with_name(f".{path.stem}.writing.pdb")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PDBWriter warns about the unit cell it invents
                universe.atoms.write(str(tmp))
            handle.write(tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)

    return write_atomically(path, write)


class StreamingTrajectoryWriter:
    """Append frames of a fixed atom set to a trajectory file as they are made.

    The format follows the file's extension (any MDAnalysis writer). Positions in Å, times in ps.
    ``dt`` (ps) is the frame interval for formats that store one instead of per-frame times (DCD
    stores no start time: its frames read back from 0 ps). Use as a context manager; frames
    written before an exception stay in the file.

    With ``partial=True`` the frames go to `partial_path` (``predicted.partial.xtc``) and
    `commit` renames that file to ``path`` once the run is complete: a run that is killed or fails
    leaves its frames under the partial name, and an earlier finished ``path`` is untouched.
    """

    def __init__(self, path: PathLike, universe: MDAnalysis.Universe, dt: Optional[float] = None,
                 partial: bool = False) -> None:
        self.path = Path(path)
        writer_extension(self.path)
        self.file = partial_path(self.path) if partial else self.path
        self.universe = universe
        self.frames = 0
        self.closed = False
        writer_class = MDAnalysis.coordinates.core.get_writer_for(str(self.path))
        options: dict[str, Any] = {}
        if dt is not None and _stores_interval_only(writer_class):
            options["dt"] = dt
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._writer = writer_class(str(self.file), n_atoms=len(universe.atoms), **options)
        except OSError as exc:  # name the output the user gave, not the partial file
            raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None

    def write(self, positions: np.ndarray, time: float) -> None:
        """Write one frame: positions (N, 3) Å at ``time`` ps."""
        ts = self.universe.trajectory.ts
        self.universe.atoms.positions = positions
        ts.time = time
        ts.frame = self.frames
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer.write(self.universe.atoms)
        self.frames += 1

    def close(self) -> None:
        if not self.closed:
            self._writer.close()
            self.closed = True

    def commit(self) -> Path:
        """Close, flush to disk and (partial mode) rename the file to ``path``; returns ``path``."""
        self.close()
        if self.file != self.path:
            _remove_offsets(self.path)  # the offsets of the file it replaces
            commit_partial(self.file, self.path)
            _remove_offsets(self.file)
        return self.path

    def __enter__(self) -> "StreamingTrajectoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _remove_offsets(path: Path) -> None:
    """MDAnalysis' XTC/TRR offset cache of a renamed file (``.<name>_offsets.npz``) describes it no more."""
    for cache in (path.with_name(f".{path.name}_offsets.npz"), path.with_name(f".{path.name}_offsets.lock")):
        cache.unlink(missing_ok=True)


def _stores_interval_only(writer_class: type) -> bool:
    """True for writers that store a frame interval instead of per-frame times (DCD)."""
    formats = writer_class.format if isinstance(writer_class.format, (list, tuple)) else [writer_class.format]
    return any(str(fmt).upper() == "DCD" for fmt in formats)
