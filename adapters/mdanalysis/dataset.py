"""A whole MD trajectory as train/valid/test FramePairs in one call, with an on-disk cache.

Pipeline (`load_md_pairs`)::

    open_universe -> select_atoms -> make_whole -> trajectory_frames -> contiguous_splits
                  -> node_attributes                                -> frame_pairs (per split)

Units: Å, ps, amu (MDAnalysis' own; `reading.UNITS`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import MDAnalysis
import numpy as np

from ... import __version__
from ... import spec_keys as keys
from ...chemistry import IDENTITY_RECIPE
from ...conventions import PHYSICAL, VELOCITY_CONVENTIONS, contiguous_splits, history_frames, positive_int
from ...errors import DataError
from ...graph import FramePair
from ...io import write_atomically
from .fit import NO_FIT, check_fit_mode, fit_frames
from .pairs import frame_pairs
from .reading import (
    NODE_ATTRIBUTE_SOURCES,
    UNITS,
    PathLike,
    _as_path_list,
    _existing_file,
    _no_velocities,
    atom_masses,
    node_attributes,
    open_universe,
    select_atoms,
    topology_pdb_text,
    trajectory_frames,
)
from .whole import MAKE_WHOLE_POLICY, make_whole, whole_method

#: Bump when the cached arrays or their meaning change (2: + the topology PDB text).
CACHE_FORMAT_VERSION = 2


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
    node_attrs: str = "charge",
    fit: str = NO_FIT,
    discard_ps: float = 0.0,
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
    node_attrs : ``"charge"`` (partial charges, else masses / 12.011; the attributes are stored
        in the spec for this topology) or ``"identity"`` (`fastegnn_md.chemistry`: atom role,
        residue type, element; the spec records the recipe and pins no atom count, so the model
        serves other proteins and namings, their attributes computed from their topologies).
    fit : ``"none"`` (lab frame) or ``"first-frame"``: every frame superposed onto the first
        before pairs are made (`fit.fit_frames`; the cache holds the unfitted frames). Recorded
        in the spec (``extra["fit"]``) when not "none".
    discard_ps : time (ps) at the start of the trajectory left out, as equilibration: no pair
        reads a frame before it, the fit superposes onto the first frame kept, and the blocks
        are cut from the frames that remain. Frame numbers (pair metadata, the spec's training
        frames) stay the file's. Recorded in the spec (``extra["discard_ps"]``) when > 0.

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
    check_fit_mode(fit, "fit")
    if node_attrs not in NODE_ATTRIBUTE_SOURCES:
        raise DataError(f"node_attrs must be one of {', '.join(NODE_ATTRIBUTE_SOURCES)}, got {node_attrs!r}")
    top = _existing_file(topology).absolute()
    trajectories = [_existing_file(path).absolute() for path in _as_path_list(trajectory)]
    with_velocities = velocity_convention == PHYSICAL
    source = ", ".join(str(path) for path in trajectories) or str(top)

    cache_file, key, data = None, "", None
    if cache_dir is not None:
        key = cache_key([top, *trajectories], selection, stride, with_velocities, node_attrs)
        cache_file = Path(cache_dir) / f"md-{key}.npz"
        data = _read_cache(cache_file, key)
    cached = data is not None
    if data is None:
        data = _process(top, trajectories, selection, stride, with_velocities, progress, node_attrs)
        if cache_file is not None:
            _write_cache(cache_file, key, data)

    skip = discarded_frames(discard_ps, data.frame_dt, len(data.positions), source)
    positions, velocities = fit_frames(data.positions[skip:], None if data.velocities is None
                                       else data.velocities[skip:], fit)
    # Put the discarded frames back in front (never read by a pair) so frame numbers stay the file's.
    positions = np.concatenate([data.positions[:skip], positions])
    if velocities is not None:
        velocities = np.concatenate([data.velocities[:skip], velocities])
    history = history_frames(jump, velocity_convention)
    try:
        kept = contiguous_splits(len(positions) - skip, jump=jump, history=history)
    except DataError as exc:
        after = f" after discarding {discard_ps:g} ps" if skip else ""
        raise DataError(f"{source}: with stride {stride}{after}, {exc}") from None
    frames = {name: range(inputs.start + skip, inputs.stop + skip) for name, inputs in kept.items()}
    splits = {
        name: frame_pairs(
            positions, velocities, data.node_attrs, data.masses, data.frame_dt,
            jump, velocity_convention, frames=inputs, source=source,
        )
        for name, inputs in frames.items()
    }
    spec = _spec_fields(data, top, trajectories, selection, jump, stride, velocity_convention, cutoff)
    if fit != NO_FIT:
        spec["extra"][keys.FIT] = fit
    if skip:
        spec["extra"][keys.DISCARD_PS] = float(discard_ps)
    # The frames each split read, first and last, in the file's numbering, keyed by the file's
    # name (files read as one chain get the joined names: a frame number spans them all).
    read_as = "+".join(path.name for path in trajectories) or top.name
    for key, name in ((keys.TRAIN_FRAMES, "train"), (keys.VALID_FRAMES, "valid")):
        inputs = frames[name]
        spec["extra"][key] = {read_as: [(inputs.start - history) * stride, (inputs.stop - 1 + jump) * stride]}
    return MDDataset(splits=splits, spec_fields=spec, frames=frames, cached=cached)


def discarded_frames(discard_ps: float, frame_dt: float, num_frames: int, source: str) -> int:
    """How many leading (strided) frames ``discard_ps`` ps of equilibration cover: every frame
    whose time after the first is below ``discard_ps``. Raises DataError (one line) for a
    negative time or one that leaves no frame."""
    if not (math.isfinite(discard_ps) and discard_ps >= 0):
        raise DataError(f"discard: must be a time >= 0 in ps, got {discard_ps!r}")
    skip = int(math.ceil(discard_ps / frame_dt - 1e-9)) if discard_ps > 0 else 0
    if skip >= num_frames:
        raise DataError(f"{source}: discarding {discard_ps:g} ps leaves no frame "
                        f"({num_frames} frames {frame_dt:g} ps apart)")
    return skip


def _check_load_args(jump: Any, stride: Any, convention: str, cutoff: Optional[float]) -> tuple[int, int]:
    try:
        jump, stride = positive_int(jump, "jump"), positive_int(stride, "stride")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if convention not in VELOCITY_CONVENTIONS:
        choices = ", ".join(VELOCITY_CONVENTIONS)
        raise DataError(f"velocity_convention must be one of {choices}, got {convention!r}")
    if cutoff is not None and not cutoff > 0:
        raise DataError(f"cutoff must be a positive length in Å or None, got {cutoff!r}")
    return jump, stride


def _process(
    top: Path, trajectories: list[Path], selection: str, stride: int, with_velocities: bool, progress: bool,
    node_attrs: str = "charge",
) -> _Processed:
    universe = open_universe(top, trajectories or None)
    atoms = select_atoms(universe, selection)
    attrs, attr_source = node_attributes(atoms, node_attrs)
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
    identity = data.node_attr_source == "identity"
    return {
        "units": {"length": UNITS["length"], "time": UNITS["time"]},
        "dt": jump * data.frame_dt,
        "frame_stride": jump * stride,
        "velocity_convention": convention,
        "cutoff": None if cutoff is None else float(cutoff),
        "num_node_attrs": int(data.node_attrs.shape[1]),
        # Identity attributes are computed for any atoms: such a model pins no atom count.
        "num_nodes": None if identity else int(data.positions.shape[1]),
        "selection": selection,
        "extra": {
            keys.NODE_ATTR_SOURCE: data.node_attr_source,
            # Where the data were, relative to the data (not this machine's absolute paths): the
            # trajectory files by name, the topology relative to the first trajectory's folder.
            keys.TOPOLOGY: os.path.relpath(top, trajectories[0].parent) if trajectories else top.name,
            **({keys.NODE_ATTR_RECIPE: IDENTITY_RECIPE} if identity else {keys.NODE_ATTRS: data.node_attrs.tolist()}),
            keys.TRAJECTORY: [path.name for path in trajectories],
            keys.MAKE_WHOLE: data.make_whole,
            keys.JUMP: jump,
            keys.STRIDE: stride,
            # The topology itself (see topology_pdb_text), so the data can be described (and a
            # bare trajectory with topology_num_atoms atoms read) without the original files.
            keys.TOPOLOGY_PDB: data.topology_pdb,
            keys.TOPOLOGY_SCOPE: data.topology_scope,
            keys.TOPOLOGY_NUM_ATOMS: data.topology_num_atoms,
        },
    }


def cache_key(files: Sequence[Path], selection: str, stride: int, with_velocities: bool,
              node_attrs: str = "charge") -> str:
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
        # Only a change of recipe changes the key, so caches of charge-attribute runs stay valid.
        **({"node_attrs": IDENTITY_RECIPE} if node_attrs == "identity" else {}),
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

