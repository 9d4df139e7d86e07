"""MDAnalysis adapter: any topology + trajectory MDAnalysis reads -> FramePairs.

Units
-----
MDAnalysis converts every file it reads to its base units (see the ``units`` attribute of its
readers): Å for lengths, ps for times, Å/ps for velocities, amu for masses and e for charges.
These are fastegnn-md's MD units (``UNITS``), so nothing in this module converts units.

Pipeline (`load_md_pairs` does all of it in one call)::

    open_universe -> select_atoms -> make_whole -> trajectory_frames -> contiguous_splits
                  -> node_attributes                                -> frame_pairs (per split)

Frame indices in `frame_pairs`, `contiguous_splits` and ``FramePair.metadata["frames"]`` count
the frames *returned by* `trajectory_frames`, i.e. after the stride.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import MDAnalysis
import numpy as np
from MDAnalysis.coordinates.core import get_reader_for
from MDAnalysis.lib.distances import minimize_vectors
from MDAnalysis.transformations import unwrap
from MDAnalysis.transformations.base import TransformationBase
from tqdm.auto import tqdm

from .. import __version__
from ..checkpoint import VELOCITY_CONVENTIONS
from ..errors import DataError
from ..graph import FramePair
from ..io import write_atomically

PathLike = Union[str, os.PathLike]

#: Units of everything this module returns (MDAnalysis' base units; nothing is converted).
UNITS = {"length": "Å", "time": "ps", "velocity": "Å/ps", "mass": "amu", "charge": "e"}

SPLITS = ("train", "valid", "test")
#: Train/valid/test sizes of the FastEGNN paper's AdK split (4,171 examples).
PAPER_ADK_RATIOS = (2481, 827, 863)
#: Mass of carbon in amu: the mass fallback of `node_attributes` is mass / CARBON_MASS.
CARBON_MASS = 12.011

# Names of the ways `make_whole` can treat periodic boundaries (recorded in the data spec).
WHOLE_NONE = "none"
WHOLE_UNWRAP = "unwrap"
WHOLE_CHAIN = "minimum-image chain"
# Which of the above is used is a function of the files (box, bonds) and of this policy, so the
# policy (not the method chosen) enters the cache key; bump it when make_whole changes.
MAKE_WHOLE_POLICY = "unwrap bonded fragments, else minimum-image chain per segment/chain; v1"
#: Bump when the cached arrays or their meaning change (2: + the topology PDB text).
CACHE_FORMAT_VERSION = 2
#: `topology_pdb_text` stores all atoms of a topology up to this many, else only the selection's.
MAX_TOPOLOGY_PDB_ATOMS = 20_000
# One-line error messages are cut to this many characters (MDAnalysis lists every format it knows).
MAX_MESSAGE = 240


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
        _load_trajectory(universe, top, trajectories)
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


def _load_trajectory(universe: MDAnalysis.Universe, topology: Path, files: list[Path]) -> None:
    names = [str(path) for path in files]
    try:
        universe.load_new(names[0] if len(names) == 1 else names)
    except Exception as exc:
        # load_new's messages do not always say which file is at fault: find out (error path only).
        raise _diagnose_trajectory(universe, topology, files, exc) from None


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
            return DataError(f"{path}: cannot read as a trajectory ({_one_line(err)})")
        found = reader.n_atoms
        reader.close()
        if found != n_atoms:
            return DataError(f"{path}: has {found} atoms but the topology {topology} has {n_atoms}")
    return DataError(f"{files[0]}: cannot read the trajectory ({_one_line(exc)})")


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


def node_attributes(atoms: MDAnalysis.AtomGroup) -> tuple[np.ndarray, str]:
    """Per-atom node attributes ``a_i`` for the feature recipe (see `fastegnn_md.graph`).

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
    if hasattr(universe.atoms, "charges") and np.any(universe.atoms.charges != 0):
        return np.asarray(atoms.charges, dtype=np.float64)[:, None], "charge"
    masses = atom_masses(atoms)
    if masses is None:
        raise DataError(
            f"{topology_name(universe)}: topology has neither partial charges nor masses "
            "to use as node attributes"
        )
    return (masses / CARBON_MASS)[:, None], "mass"


def atom_masses(atoms: MDAnalysis.AtomGroup) -> Optional[np.ndarray]:
    """(N,) float64 masses in amu, or None when the topology has none."""
    if not hasattr(atoms, "masses"):
        return None
    return np.asarray(atoms.masses, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Periodic boundaries
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Frames and pairs
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
    stride = _positive_int(stride, "stride")
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


def valid_input_frames(num_frames: int, jump: int, convention: str) -> range:
    """Input frames t for which a pair (t -> t + jump) with ``convention`` velocities exists."""
    first = jump if convention == "backward" else 0
    return range(first, max(num_frames - jump, first))


def _frames_needed(jump: int, convention: str) -> int:
    return 2 * jump + 1 if convention == "backward" else jump + 1


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
    convention : velocity convention (docs/architecture.md):
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
    jump = _positive_int(jump, "jump")
    if convention not in VELOCITY_CONVENTIONS:
        raise ValueError(f"convention must be one of {VELOCITY_CONVENTIONS}, got {convention!r}")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    where = source or "trajectory"
    v = None
    if convention == "physical":
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
    valid = valid_input_frames(num_frames, jump, convention)
    if len(valid) == 0:
        raise DataError(
            f"{where}: {num_frames} frames are too few for jump {jump} with {convention!r} "
            f"velocities (need at least {_frames_needed(jump, convention)})"
        )
    inputs = valid if frames is None else [_check_frame(t, valid, where, jump, convention) for t in frames]
    span = jump * frame_dt
    pairs = []
    for t in inputs:
        if convention == "physical":
            vel, target_vel = v[t], v[t + jump]
        elif convention == "backward":
            vel, target_vel = (x[t] - x[t - jump]) / span, (x[t + jump] - x[t]) / span
        else:
            vel, target_vel = (x[t + 1] - x[t]) / frame_dt, None
        pairs.append(
            FramePair(
                positions=x[t],
                velocities=vel,
                target_positions=x[t + jump],
                node_attrs=attrs,
                target_velocities=target_vel,
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
    if int(t) != t or int(t) not in valid:
        raise DataError(
            f"{where}: input frame {t} has no pair for jump {jump} with {convention!r} "
            f"velocities (valid input frames: {valid.start}..{valid.stop - 1})"
        )
    return int(t)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def contiguous_splits(
    num_frames: int,
    ratios: Sequence[float] = PAPER_ADK_RATIOS,
    jump: int = 1,
    history: int = 0,
) -> dict[str, range]:
    """Train/valid/test input frames from contiguous, ordered time blocks.

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
    history : frames before t an example reads: ``jump`` for backward velocities, else 0.

    Returns
    -------
    ``{"train": range, "valid": range, "test": range}`` of input frames.

    Raises
    ------
    DataError
        If a block would hold no example; the message says how many frames are needed.
    """
    ratios = _check_ratios(ratios)
    jump = _positive_int(jump, "jump")
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
# Everything in one call, with an on-disk cache
# --------------------------------------------------------------------------------------------


@dataclass
class MDDataset:
    """FramePairs of one trajectory split into train/valid/test, and their data spec.

    splits : ``{"train" | "valid" | "test": list[FramePair]}``.
    spec_fields : keyword arguments of `fastegnn_md.checkpoint.DataSpec` for these data.
    frames : ``{split: range}`` input frames of each split (strided frame numbering).
    cached : True when the arrays came from the cache (the trajectory was not read).
    """

    splits: dict[str, list[FramePair]]
    spec_fields: dict[str, Any]
    frames: dict[str, range] = field(default_factory=dict)
    cached: bool = False


@dataclass
class _Processed:
    """What reading a trajectory produces; exactly what the cache stores."""

    positions: np.ndarray  # (T, N, 3) Å
    velocities: Optional[np.ndarray]  # (T, N, 3) Å/ps
    node_attrs: np.ndarray  # (N, 1)
    node_attr_source: str
    masses: Optional[np.ndarray]  # (N,) amu
    frame_dt: float  # ps, after the stride
    make_whole: str
    topology_pdb: str = ""  # `topology_pdb_text` of the first frame, after make_whole
    topology_scope: str = "all"
    topology_num_atoms: int = 0


def load_md_pairs(
    topology: PathLike,
    trajectory: Union[PathLike, Sequence[PathLike], None] = None,
    selection: str = "backbone",
    jump: int = 1,
    stride: int = 1,
    velocity_convention: str = "backward",
    cutoff: Optional[float] = 10.0,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
) -> MDDataset:
    """Topology + trajectory -> train/valid/test FramePairs and the data spec, in one call.

    Opens the files, selects the atoms, makes molecules whole, reads every ``stride``-th
    frame, splits the frames into contiguous blocks (`contiguous_splits`, paper ratio) and
    builds pairs t -> t + ``jump`` (in strided frames) with ``velocity_convention``.

    Parameters
    ----------
    cutoff : radius-graph cutoff in Å recorded in the spec (None: fully connected graphs).
    cache_dir : when given, the processed arrays are stored there, one ``.npz`` per key, and a
        later call with the same key does not open or read the files. The key is a sha256 over
        the absolute paths, sizes and modification times of the files, the selection, the
        stride, whether velocities are read (physical convention), the make-whole policy and
        the cache format / package / MDAnalysis versions. The cache file also holds the
        topology's PDB text (below), so a cache hit needs neither file.
    progress : show a progress bar while reading frames.

    Returns
    -------
    MDDataset; ``spec_fields["dt"]`` = jump * stride * trajectory dt (ps) and
    ``spec_fields["frame_stride"]`` = jump * stride. ``spec_fields["extra"]`` records
    ``jump`` and ``stride`` separately, the node attributes, the file names, and the topology
    itself: ``topology_pdb`` (`topology_pdb_text`: all atoms of the topology file with the
    first frame's coordinates, made whole; only the selection's atoms if the topology has more
    than `MAX_TOPOLOGY_PDB_ATOMS`), ``topology_scope`` (``"all"`` / ``"selection"``) and
    ``topology_num_atoms``.

    Raises
    ------
    DataError
        One line naming the file or argument at fault: missing/unreadable files, bad
        selection, no velocities for the physical convention, trajectory too short, ...
    """
    jump, stride = _check_load_args(jump, stride, velocity_convention, cutoff)
    top = _existing_file(topology).absolute()
    trajectories = [_existing_file(path).absolute() for path in _as_path_list(trajectory)]
    with_velocities = velocity_convention == "physical"
    source = ", ".join(str(path) for path in trajectories) or str(top)

    cache_file, key, data = None, "", None
    if cache_dir is not None:
        key = cache_key([top, *trajectories], selection, stride, with_velocities)
        cache_file = Path(cache_dir) / f"md-{key}.npz"
        data = _read_cache(cache_file, key)
    cached = data is not None
    if data is None:
        data = _process(top, trajectories, selection, stride, with_velocities, progress)
        if cache_file is not None:
            _write_cache(cache_file, key, data)

    history = jump if velocity_convention == "backward" else 0
    try:
        frames = contiguous_splits(len(data.positions), jump=jump, history=history)
    except DataError as exc:
        raise DataError(f"{source}: with stride {stride}, {exc}") from None
    splits = {
        name: frame_pairs(
            data.positions, data.velocities, data.node_attrs, data.masses, data.frame_dt,
            jump, velocity_convention, frames=inputs, source=source,
        )
        for name, inputs in frames.items()
    }
    spec = _spec_fields(data, top, trajectories, selection, jump, stride, velocity_convention, cutoff)
    return MDDataset(splits=splits, spec_fields=spec, frames=frames, cached=cached)


def _check_load_args(jump: Any, stride: Any, convention: str, cutoff: Optional[float]) -> tuple[int, int]:
    try:
        jump, stride = _positive_int(jump, "jump"), _positive_int(stride, "stride")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if convention not in VELOCITY_CONVENTIONS:
        choices = ", ".join(VELOCITY_CONVENTIONS)
        raise DataError(f"velocity_convention must be one of {choices}, got {convention!r}")
    if cutoff is not None and not cutoff > 0:
        raise DataError(f"cutoff must be a positive length in Å or None, got {cutoff!r}")
    return jump, stride


def _process(
    top: Path, trajectories: list[Path], selection: str, stride: int, with_velocities: bool, progress: bool
) -> _Processed:
    universe = open_universe(top, trajectories or None)
    atoms = select_atoms(universe, selection)
    attrs, attr_source = node_attributes(atoms)
    if with_velocities and not universe.trajectory.ts.has_velocities:
        # Fail before the (possibly slow) make_whole; trajectory_frames checks every frame.
        raise DataError(_no_velocities(universe, universe.trajectory.ts.frame))
    method = whole_method(universe, atoms)
    make_whole(universe, atoms)
    universe.trajectory[0]  # the first frame, made whole, for the topology's coordinates
    pdb_text, scope = topology_pdb_text(universe, atoms)
    num_atoms = len(universe.atoms) if scope == "all" else len(atoms)
    positions, velocities, frame_dt = trajectory_frames(universe, atoms, stride, with_velocities, progress)
    return _Processed(
        positions, velocities, attrs, attr_source, atom_masses(atoms), frame_dt, method,
        topology_pdb=pdb_text, topology_scope=scope, topology_num_atoms=num_atoms,
    )


def _spec_fields(
    data: _Processed,
    top: Path,
    trajectories: list[Path],
    selection: str,
    jump: int,
    stride: int,
    convention: str,
    cutoff: Optional[float],
) -> dict[str, Any]:
    return {
        "units": {"length": UNITS["length"], "time": UNITS["time"]},
        "dt": jump * data.frame_dt,
        "frame_stride": jump * stride,
        "velocity_convention": convention,
        "cutoff": None if cutoff is None else float(cutoff),
        "num_node_attrs": int(data.node_attrs.shape[1]),
        "num_nodes": int(data.positions.shape[1]),
        "selection": selection,
        "extra": {
            "node_attr_source": data.node_attr_source,
            "topology": str(top),
            "node_attrs": data.node_attrs.tolist(),
            "trajectory": [str(path) for path in trajectories],
            "make_whole": data.make_whole,
            "jump": jump,
            "stride": stride,
            # The topology itself (see topology_pdb_text), so the data can be described (and a
            # bare trajectory with topology_num_atoms atoms read) without the original files.
            "topology_pdb": data.topology_pdb,
            "topology_scope": data.topology_scope,
            "topology_num_atoms": data.topology_num_atoms,
        },
    }


def cache_key(files: Sequence[Path], selection: str, stride: int, with_velocities: bool) -> str:
    """sha256 hex digest identifying the processed arrays of these files and options."""
    described = []
    for path in files:
        stat = Path(path).stat()
        described.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    payload = {
        "files": described,
        "selection": selection,
        "stride": int(stride),
        "velocities": bool(with_velocities),
        "make_whole": MAKE_WHOLE_POLICY,
        "cache_format": CACHE_FORMAT_VERSION,
        "fastegnn_md": __version__,
        "mdanalysis": MDAnalysis.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> Optional[_Processed]:
    """The cached arrays, or None when the file is missing, unreadable or for another key."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            return _Processed(
                positions=stored["positions"],
                velocities=stored["velocities"] if "velocities" in stored.files else None,
                node_attrs=stored["node_attrs"],
                node_attr_source=str(stored["node_attr_source"]),
                masses=stored["masses"] if "masses" in stored.files else None,
                frame_dt=float(stored["frame_dt"]),
                make_whole=str(stored["make_whole"]),
                topology_pdb=stored["topology_pdb"].tobytes().decode("utf-8"),
                topology_scope=str(stored["topology_scope"]),
                topology_num_atoms=int(stored["topology_num_atoms"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache file is recomputed (and then replaced)


def _write_cache(path: Path, key: str, data: _Processed) -> None:
    arrays: dict[str, np.ndarray] = {
        "key": np.array(key),
        "positions": data.positions,
        "node_attrs": data.node_attrs,
        "node_attr_source": np.array(data.node_attr_source),
        "frame_dt": np.array(data.frame_dt),
        "make_whole": np.array(data.make_whole),
        # Bytes, not a numpy unicode string (4 bytes per character).
        "topology_pdb": np.frombuffer(data.topology_pdb.encode("utf-8"), dtype=np.uint8),
        "topology_scope": np.array(data.topology_scope),
        "topology_num_atoms": np.array(data.topology_num_atoms),
    }
    if data.velocities is not None:
        arrays["velocities"] = data.velocities
    if data.masses is not None:
        arrays["masses"] = data.masses
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


# --------------------------------------------------------------------------------------------
# Writers: predicted frames and virtual nodes, in any format MDAnalysis writes
# --------------------------------------------------------------------------------------------


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
    import warnings

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
    import warnings

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
    """

    def __init__(self, path: PathLike, universe: MDAnalysis.Universe, dt: Optional[float] = None) -> None:
        import warnings

        self.path = Path(path)
        writer_extension(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.universe = universe
        self.frames = 0
        writer_class = MDAnalysis.coordinates.core.get_writer_for(str(self.path))
        options: dict[str, Any] = {}
        if dt is not None and _stores_interval_only(writer_class):
            options["dt"] = dt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer = writer_class(str(self.path), n_atoms=len(universe.atoms), **options)

    def write(self, positions: np.ndarray, time: float) -> None:
        """Write one frame: positions (N, 3) Å at ``time`` ps."""
        import warnings

        ts = self.universe.trajectory.ts
        self.universe.atoms.positions = positions
        ts.time = time
        ts.frame = self.frames
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer.write(self.universe.atoms)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "StreamingTrajectoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _stores_interval_only(writer_class: type) -> bool:
    """True for writers that store a frame interval instead of per-frame times (DCD)."""
    formats = writer_class.format if isinstance(writer_class.format, (list, tuple)) else [writer_class.format]
    return any(str(fmt).upper() == "DCD" for fmt in formats)
