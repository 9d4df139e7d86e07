"""Reading MD files with MDAnalysis: topology discovery, opening, atom selection, node attributes, frames.

Units
-----
MDAnalysis converts every file it reads to its base units (see the ``units`` attribute of its
readers): Å for lengths, ps for times, Å/ps for velocities, amu for masses and e for charges.
These are fastegnn-md's MD units (``UNITS``), so nothing here converts units.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import MDAnalysis
import numpy as np
from MDAnalysis.coordinates.core import get_reader_for
from tqdm.auto import tqdm

from ...conventions import positive_int
from ...chemistry import identity_attributes
from ...errors import DataError

PathLike = Union[str, os.PathLike]

#: Units of everything this adapter returns (MDAnalysis' base units; nothing is converted).
UNITS = {"length": "Å", "time": "ps", "velocity": "Å/ps", "mass": "amu", "charge": "e"}
#: Mass of carbon in amu: the mass fallback of `node_attributes` is mass / CARBON_MASS.
CARBON_MASS = 12.011
#: `topology_pdb_text` stores all atoms of a topology up to this many, else only the selection's.
MAX_TOPOLOGY_PDB_ATOMS = 20_000
# One-line error messages are cut to this many characters (MDAnalysis lists every format it knows).
MAX_MESSAGE = 240
#: Extensions tried, in order, for a topology beside a trajectory with the same stem.
TOPOLOGY_EXTENSIONS = (".tpr", ".psf", ".gro", ".pdb")


# --------------------------------------------------------------------------------------------
# Finding the topology of a trajectory
# --------------------------------------------------------------------------------------------


def find_topology(trajectory: PathLike) -> Optional[Path]:
    """The first of ``<stem>.tpr``, ``.psf``, ``.gro``, ``.pdb`` beside ``trajectory`` that exists
    and is not ``trajectory`` itself; None if there is none."""
    trajectory = Path(trajectory)
    for ext in TOPOLOGY_EXTENSIONS:
        candidate = trajectory.with_suffix(ext)
        if candidate.is_file() and not _same_file(candidate, trajectory):
            return candidate
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def resolve_md_files(trajectory: Path, topology: Optional[Path] = None) -> tuple[Path, Optional[Path]]:
    """(topology, trajectory or None) to read for ``trajectory``.

    ``topology`` if given; else `find_topology`; else ``trajectory`` itself when its format
    carries a topology (multi-frame PDB, GRO, ...); else a DataError asking for --topology.
    The trajectory is None when it is the topology file itself.
    """
    trajectory = Path(trajectory)
    if topology is None:
        topology = find_topology(trajectory)
    if topology is None:
        if carries_topology(trajectory):
            return trajectory, None
        if trajectory.is_file():
            probe_trajectory(trajectory)  # an unreadable file is that, before "no topology"
        tried = ", ".join(trajectory.with_suffix(ext).name for ext in TOPOLOGY_EXTENSIONS)
        raise DataError(f"{trajectory}: no topology found beside it (tried {tried}); pass --topology")
    topology = Path(topology)
    if topology.exists() and _same_file(topology, trajectory):
        return topology, None
    return topology, trajectory


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------


def open_universe(
    topology: PathLike, trajectory: Union[PathLike, Sequence[PathLike], None] = None
) -> MDAnalysis.Universe:
    """Open a topology and optional trajectory (one file or a list, read one after the other).

    Parameters
    ----------
    topology : any topology MDAnalysis reads (PSF, TPR, GRO, PDB, ...).
    trajectory : one trajectory file, a sequence of files (chained in order), or None to use
        the coordinates in the topology file itself (GRO, PDB, ...).

    Raises
    ------
    DataError
        ``"<file>: <what is wrong>"`` on one line for a missing file, a file MDAnalysis cannot
        read or does not support, a trajectory whose atom count differs from the topology, or a
        topology without coordinates and no trajectory.
    """
    top = _existing_file(topology)
    trajectories = [_existing_file(path) for path in _as_path_list(trajectory)]
    try:
        universe = MDAnalysis.Universe(str(top))
    except Exception as exc:  # MDAnalysis raises many types for unreadable files
        raise DataError(f"{top}: cannot read as a topology ({_one_line(exc)})") from None
    if trajectories:
        load_trajectory(universe, top, trajectories)
    elif getattr(universe, "_trajectory", None) is None:
        raise DataError(f"{top}: topology has no coordinates; give a trajectory file as well")
    return universe


def _as_path_list(trajectory: Union[PathLike, Sequence[PathLike], None]) -> list[Path]:
    if trajectory is None:
        return []
    if isinstance(trajectory, (str, os.PathLike)):
        return [Path(trajectory)]
    return [Path(path) for path in trajectory]


def _existing_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    return path


def load_trajectory(universe: MDAnalysis.Universe, topology: Path, files: list[Path]) -> None:
    """Load ``files`` (read one after the other) as the trajectory of ``universe``; one-line
    DataError naming the file at fault (``topology`` names the topology in messages)."""
    names = [str(path) for path in files]
    error: Optional[DataError] = None
    with quiet_reader_cleanup():
        try:
            universe.load_new(names[0] if len(names) == 1 else names)
        except Exception as exc:
            # load_new's messages do not always say which file is at fault: find out (error path only).
            error = _diagnose_trajectory(universe, topology, files, exc)
    if error is not None:
        raise error


def _diagnose_trajectory(
    universe: MDAnalysis.Universe, topology: Path, files: list[Path], exc: Exception
) -> DataError:
    n_atoms = len(universe.atoms)
    for path in files:
        try:
            reader_class = get_reader_for(str(path))
        except Exception:
            kind = path.suffix.lstrip(".").upper() or "without extension"
            return DataError(f"{path}: unsupported trajectory format ({kind}); MDAnalysis has no reader")
        try:
            reader = reader_class(str(path), n_atoms=n_atoms)
        except Exception as err:
            return DataError(f"{path}: cannot read as {format_name(path)} ({_one_line(err)})")
        found = reader.n_atoms
        reader.close()
        if found != n_atoms:
            return DataError(f"{path}: has {found} atoms but the topology {topology} has {n_atoms}")
    return DataError(f"{files[0]}: cannot read the trajectory ({_one_line(exc)})")


@contextlib.contextmanager
def quiet_reader_cleanup() -> Iterator[None]:
    """Swallow the "Exception ignored in ReaderBase.__del__" tracebacks that MDAnalysis prints
    when a reader fails half-way through opening a file (its ``close`` then fails too); the
    reason the file could not be read is reported as a DataError instead."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if type(unraisable.object).__name__ == "function" and getattr(unraisable.object, "__qualname__", "").endswith(
            "__del__"
        ):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()  # readers of a failed attempt are finalised now, while the hook is ours
        sys.unraisablehook = previous


def format_name(path: PathLike) -> str:
    """The format MDAnalysis reads ``path`` as (its extension, upper case)."""
    return Path(path).suffix.lstrip(".").upper() or "a file without extension"


def probe_trajectory(path: PathLike) -> Optional[int]:
    """Atoms in a trajectory file read on its own (no topology), or None when its format needs a
    topology to be read at all. DataError (one line) when MDAnalysis has no reader for it or its
    reader cannot read it (a text file named .xtc): that is said before any topology is looked for.
    """
    path = Path(path)
    try:
        reader_class = get_reader_for(str(path))
    except Exception:
        raise DataError(f"{path}: unsupported trajectory format ({format_name(path)}); MDAnalysis has no reader") from None
    error: Optional[DataError] = None
    with quiet_reader_cleanup():
        try:
            reader = reader_class(str(path))
        except (TypeError, ValueError) as exc:
            if "n_atoms" in str(exc):
                return None  # the format stores no atom count: the topology gives it
            error = DataError(f"{path}: cannot read as {format_name(path)} ({_one_line(exc)})")
        except Exception as exc:  # MDAnalysis raises OSError, RuntimeError, ... for unreadable files
            error = DataError(f"{path}: cannot read as {format_name(path)} ({_one_line(exc)})")
        else:
            count = int(reader.n_atoms)
            reader.close()
            return count
    # Raised here, outside the except blocks, so the failed reader is not kept alive by the
    # exception's context (its __del__ ran inside quiet_reader_cleanup).
    raise error


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def carries_topology(path: PathLike) -> bool:
    """True if MDAnalysis reads atom names etc. from this file type (PDB, GRO, ...), not just coordinates.

    Decided by the extension alone, as MDAnalysis does; pure trajectory formats (DCD, XTC, TRR,
    ...) only have MDAnalysis' minimal parser (atom count), so they are False.
    """
    from MDAnalysis.core._get_readers import get_parser_for
    from MDAnalysis.topology.MinimalParser import MinimalParser

    try:
        parser = get_parser_for(str(path))
    except Exception:  # no parser for this extension
        return False
    return parser is not MinimalParser


def topology_pdb_text(
    universe: MDAnalysis.Universe,
    atoms: Optional[MDAnalysis.AtomGroup] = None,
    max_atoms: int = MAX_TOPOLOGY_PDB_ATOMS,
) -> tuple[str, str]:
    """The topology as PDB text, so a checkpoint can describe its atoms without the original files.

    Writes ``universe.atoms`` (all atoms of the topology) with MDAnalysis' PDB writer
    (``atoms.write("x.pdb")``: CONECT records for the topology's bonds, coordinates of the
    current frame). If the universe has more than ``max_atoms`` atoms and ``atoms`` is given,
    writes only ``atoms`` (the selection) instead, to keep checkpoints small.

    Returns
    -------
    text : the PDB file's text; ``MDAnalysis.Universe(NamedStream(io.StringIO(text), "t.pdb"))``
        or a file holding it reads it back.
    scope : ``"all"`` or ``"selection"``: which atoms the text holds.

    Costs about 0.7 s for the 3,341 atoms and 3,365 bonds of AdK (the CONECT records dominate).
    """
    group, scope = universe.atoms, "all"
    if atoms is not None and len(universe.atoms) > max_atoms:
        group, scope = atoms, "selection"
    with tempfile.TemporaryDirectory(prefix="fastegnn-md-") as tmp:
        path = Path(tmp) / "topology.pdb"
        with warnings.catch_warnings():
            # The PDB writer warns about every PDB field the topology lacks (chain IDs, ...).
            warnings.simplefilter("ignore")
            group.write(str(path))
        text = path.read_text()
    return text, scope


def topology_name(universe: MDAnalysis.Universe) -> str:
    """The topology file of a Universe, for messages."""
    return str(universe.filename)


def trajectory_name(universe: MDAnalysis.Universe) -> str:
    """The trajectory file(s) of a Universe (comma-separated when chained), for messages."""
    reader = universe.trajectory
    names = getattr(reader, "filenames", None)
    if names is not None and len(names) > 0:
        return ", ".join(str(name) for name in names)
    return str(getattr(reader, "filename", None) or universe.filename)


# --------------------------------------------------------------------------------------------
# Atoms and their attributes
# --------------------------------------------------------------------------------------------


def select_atoms(universe: MDAnalysis.Universe, selection: str = "backbone") -> MDAnalysis.AtomGroup:
    """The atoms of ``selection`` (MDAnalysis selection language), in topology order.

    Raises
    ------
    DataError
        If the selection is invalid or matches no atom; the message names the selection and
        the topology file.
    """
    top = topology_name(universe)
    try:
        atoms = universe.select_atoms(selection)
    except Exception as exc:
        raise DataError(f"{top}: invalid atom selection {selection!r} ({_one_line(exc)})") from None
    if len(atoms) == 0:
        raise DataError(f"{top}: atom selection {selection!r} matches no atoms")
    return atoms


#: How node attributes are made: ``charge`` (partial charges, else masses) or ``identity``
#: (atom role, residue type, element: `fastegnn_md.chemistry`).
NODE_ATTRIBUTE_SOURCES = ("charge", "identity")


def node_attributes(atoms: MDAnalysis.AtomGroup, source: str = "charge") -> tuple[np.ndarray, str]:
    """Per-atom node attributes ``a_i`` for the feature recipe (see `fastegnn_md.graph`).

    ``source="identity"``: `fastegnn_md.chemistry.identity_attributes` of the atoms' names,
    residue names and elements (when the topology has them), (N, 32); source ``"identity"``.
    ``source="charge"`` (the default) as follows.

    Returns
    -------
    attrs : (N, 1) float64.
        The partial charges (e) of the atoms when the topology has charges that are not all
        zero; source ``"charge"``.
        Fallback, for topologies without charges (GRO, PDB, ...): the masses in amu divided by
        12.011, so carbon is 1 and the attribute stays O(1) like a charge; source ``"mass"``.
        Masses are what MDAnalysis reads or guesses from atom names/types.
    source : ``"charge"`` or ``"mass"``.

    Raises
    ------
    DataError
        If the topology has neither usable charges nor masses.
    """
    universe = atoms.universe
    if source == "identity":
        return identity_attributes(atoms.names, atoms.resnames, atom_elements(atoms), where=topology_name(universe)), \
            "identity"
    if source != "charge":
        raise DataError(f"node attributes: {source!r} is not one of {', '.join(NODE_ATTRIBUTE_SOURCES)}")
    if hasattr(universe.atoms, "charges") and np.any(universe.atoms.charges != 0):
        return np.asarray(atoms.charges, dtype=np.float64)[:, None], "charge"
    masses = atom_masses(atoms)
    if masses is None:
        raise DataError(
            f"{topology_name(universe)}: topology has neither partial charges nor masses "
            "to use as node attributes"
        )
    return (masses / CARBON_MASS)[:, None], "mass"


def atom_elements(atoms: MDAnalysis.AtomGroup) -> Optional[list[str]]:
    """The topology's element symbols, or None when it has none (the names tell them then)."""
    if not hasattr(atoms, "elements"):
        return None
    elements = [str(e) for e in atoms.elements]
    return elements if all(e.strip() for e in elements) else None


def atom_masses(atoms: MDAnalysis.AtomGroup) -> Optional[np.ndarray]:
    """(N,) float64 masses in amu, or None when the topology has none."""
    if not hasattr(atoms, "masses"):
        return None
    return np.asarray(atoms.masses, dtype=np.float64)



# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def trajectory_frames(
    universe: MDAnalysis.Universe,
    atoms: MDAnalysis.AtomGroup,
    stride: int = 1,
    velocities: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, Optional[np.ndarray], float]:
    """Read every ``stride``-th frame of the selection, after the trajectory's transformations.

    Returns
    -------
    positions : (T, N, 3) float64, Å.
    velocities : (T, N, 3) float64, Å/ps, or None unless ``velocities=True``.
    frame_dt : time between the returned frames in ps (``universe.trajectory.dt * stride``).

    Raises
    ------
    DataError
        If velocities are asked for and a frame has none, or if the frame times are not evenly
        spaced (jumps and velocities assume a constant frame interval).
    """
    stride = positive_int(stride, "stride")
    reader = universe.trajectory
    name = trajectory_name(universe)
    frames = reader[::stride]
    count, n_atoms = len(frames), len(atoms)
    positions = np.empty((count, n_atoms, 3), dtype=np.float64)
    vels = np.empty((count, n_atoms, 3), dtype=np.float64) if velocities else None
    times = np.empty(count, dtype=np.float64)
    bar = tqdm(frames, total=count, desc="reading frames", unit="frame", disable=not progress)
    for k, ts in enumerate(bar):
        if not ts.has_positions:
            raise DataError(f"{name}: frame {ts.frame} has no positions")
        positions[k] = atoms.positions
        if vels is not None:
            if not ts.has_velocities:
                raise DataError(_no_velocities(universe, ts.frame))
            vels[k] = atoms.velocities
        times[k] = ts.time
    frame_dt = float(reader.dt) * stride
    _check_even_spacing(times, frame_dt, name)
    return positions, vels, frame_dt


def _no_velocities(universe: MDAnalysis.Universe, frame: int) -> str:
    return (
        f"{trajectory_name(universe)}: frame {frame} has no velocities, which "
        "velocity_convention='physical' needs; use 'backward' to derive velocities from positions"
    )


def _check_even_spacing(times: np.ndarray, frame_dt: float, name: str) -> None:
    if not frame_dt > 0:
        raise DataError(f"{name}: frame interval is {frame_dt} ps; it must be positive")
    if len(times) < 2:
        return
    steps = np.diff(times)
    # Some formats store times in float32: allow their rounding at large times.
    tolerance = 1e-3 * frame_dt + 1e-6 * float(np.abs(times).max())
    if np.any(np.abs(steps - frame_dt) > tolerance):
        raise DataError(
            f"{name}: frame times are not evenly spaced (steps from {steps.min():g} to "
            f"{steps.max():g} ps, expected {frame_dt:g} ps)"
        )

