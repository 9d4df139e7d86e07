"""Datasets on disk -> FramePairs plus the data spec a checkpoint records.

`open_dataset` takes either

* a **dataset directory** holding a ``metadata.json`` whose ``format`` key names its reader.
  Today: ``fastegnn-md nbody`` (see `fastegnn_md.data.nbody` and docs/data-formats.md); or
* an **MD trajectory file** (any format MDAnalysis reads, or a multi-frame PDB/GRO that is its
  own topology), read with the MDAnalysis adapter (`fastegnn_md.adapters.mdanalysis`,
  imported only then) into contiguous train/valid/test blocks; format name ``MD_FORMAT``.
  `MDOptions` holds the reading options; `find_topology` the topology discovery.

`open_for_checkpoint` opens data for a trained checkpoint with the options its DataSpec records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import DataError
from ..graph import FramePair

NBODY_FORMAT = "fastegnn-md nbody"
MD_FORMAT = "fastegnn-md md trajectory"
#: Extensions tried, in order, for a topology beside a trajectory with the same stem.
TOPOLOGY_EXTENSIONS = (".tpr", ".psf", ".gro", ".pdb")
SPLITS = ("train", "valid", "test")


@dataclass
class MDOptions:
    """How to read an MD trajectory (`open_dataset`); the defaults are the CLI's.

    topology : topology file; None = `find_topology` (a file beside the trajectory).
    selection : MDAnalysis selection of the atoms that become graph nodes.
    jump, stride : the learned jump is ``jump`` frames of the trajectory read every ``stride``
        frames, i.e. ``jump * stride`` frames of the file.
    velocity_convention : "backward", "physical" or "forward" (docs/architecture.md).
    cutoff : radius-graph cutoff in Å (None: fully connected graphs).
    cache_dir : where the adapter caches the processed arrays (None: no cache).
    progress : progress bar while reading frames.
    """

    topology: Optional[Path] = None
    selection: str = "backbone"
    jump: int = 1
    stride: int = 1
    velocity_convention: str = "backward"
    cutoff: Optional[float] = 10.0
    cache_dir: Optional[Path] = None
    progress: bool = True


@dataclass
class Dataset:
    """The split(s) of one dataset and what a checkpoint must remember about it.

    ``splits`` holds the pairs of formats read in one go (MD trajectories); N-body splits are
    read from disk on each `load`.
    """

    path: Path
    format: str
    spec_fields: dict[str, Any]
    splits: Optional[dict[str, list[FramePair]]] = None

    def load(self, split: str, max_items: Optional[int] = None) -> list[FramePair]:
        """The pairs of ``split`` ("train", "valid" or "test"), the first ``max_items`` if given."""
        if self.splits is not None:
            if split not in self.splits:
                raise DataError(f"{self.path}: no split {split!r} (splits: {', '.join(self.splits)})")
            pairs = self.splits[split]
            return list(pairs if max_items is None else pairs[:max_items])
        if self.format == NBODY_FORMAT:
            from .nbody import load_nbody

            opts = self.spec_fields["extra"]
            return load_nbody(self.path, split, opts["frame_in"], opts["frame_out"], max_systems=max_items)
        raise DataError(f"{self.path}: dataset format {self.format!r} has no reader")


def read_metadata(path: Path) -> dict[str, Any]:
    meta_file = path / "metadata.json"
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory")
    if not meta_file.exists():
        raise DataError(f"{path}: not a dataset directory (no metadata.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_file}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_file}: metadata must be a JSON object")
    return meta


def is_trajectory_path(path: Union[str, Path]) -> bool:
    """True if ``path`` names a file (read as an MD trajectory), False for a directory or nothing."""
    path = Path(path)
    return path.exists() and not path.is_dir()


def open_dataset(
    path: Union[str, Path], frame_in: int = 30, frame_out: int = 40, md: Optional[MDOptions] = None
) -> Dataset:
    """Open a dataset directory or an MD trajectory file.

    ``frame_in``/``frame_out`` select the jump of N-body data; ``md`` (default `MDOptions()`)
    says how to read a trajectory. Raises DataError (one line) for a missing path, unreadable
    files, no topology found, a selection matching nothing, a trajectory too short, ...
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory or trajectory file")
    if not path.is_dir():
        return open_md_trajectory(path, md or MDOptions())
    meta = read_metadata(path)
    fmt = meta.get("format")
    if fmt == NBODY_FORMAT:
        num_frames = int(meta.get("num_frames", 0))
        if not 0 <= frame_in < frame_out < num_frames:
            raise DataError(
                f"{path}: frames {frame_in} -> {frame_out} do not fit a dataset of {num_frames} frames"
            )
        frame_dt = float(meta["frame_dt"])
        spec = {
            "units": {"length": "dimensionless", "time": "dimensionless"},
            "dt": (frame_out - frame_in) * frame_dt,
            "frame_stride": frame_out - frame_in,
            "velocity_convention": "physical",
            "cutoff": None,
            "num_node_attrs": 1,
            "extra": {"frame_in": frame_in, "frame_out": frame_out, "dataset_format": fmt},
        }
        return Dataset(path, fmt, spec)
    raise DataError(f"{path / 'metadata.json'}: unknown dataset format {fmt!r}")


# --------------------------------------------------------------------------------------------
# MD trajectories (MDAnalysis adapter)
# --------------------------------------------------------------------------------------------


def find_topology(trajectory: Union[str, Path]) -> Optional[Path]:
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
    from ..adapters.mdanalysis import carries_topology

    if topology is None:
        topology = find_topology(trajectory)
    if topology is None:
        if carries_topology(trajectory):
            return trajectory, None
        tried = ", ".join(trajectory.with_suffix(ext).name for ext in TOPOLOGY_EXTENSIONS)
        raise DataError(f"{trajectory}: no topology found beside it (tried {tried}); pass --topology")
    topology = Path(topology)
    if topology.exists() and _same_file(topology, trajectory):
        return topology, None
    return topology, trajectory


def _import_adapter() -> Any:
    try:
        from ..adapters import mdanalysis
    except ImportError as exc:
        raise DataError(f"reading MD trajectories needs MDAnalysis ({exc}); pip install MDAnalysis") from None
    return mdanalysis


def open_md_trajectory(path: Union[str, Path], options: Optional[MDOptions] = None) -> Dataset:
    """Read an MD trajectory into train/valid/test pairs (`load_md_pairs`); see `MDOptions`.

    The spec's ``extra`` gets ``dataset_format`` = `MD_FORMAT` on top of the adapter's fields
    (topology path and PDB text, node attributes, jump, stride, ...).
    """
    path = Path(path)
    options = options or MDOptions()
    mdanalysis = _import_adapter()
    topology, trajectory = resolve_md_files(path, options.topology)
    loaded = mdanalysis.load_md_pairs(
        topology,
        trajectory,
        selection=options.selection,
        jump=options.jump,
        stride=options.stride,
        velocity_convention=options.velocity_convention,
        cutoff=options.cutoff,
        cache_dir=options.cache_dir,
        progress=options.progress,
    )
    spec = dict(loaded.spec_fields)
    spec["extra"] = {**spec["extra"], "dataset_format": MD_FORMAT}
    return Dataset(path, MD_FORMAT, spec, splits=loaded.splits)


def is_md_spec(spec: Any) -> bool:
    """True if a DataSpec describes MD trajectory data (also for checkpoints trained through the
    Python API on `load_md_pairs` data, which lack ``dataset_format``)."""
    fmt = spec.extra.get("dataset_format")
    return fmt == MD_FORMAT or (fmt is None and "topology" in spec.extra)


def md_options_for_spec(spec: Any, topology: Optional[Path] = None, cache_dir: Optional[Path] = None,
                        progress: bool = True) -> MDOptions:
    """The MDOptions that read a trajectory the way a checkpoint's DataSpec was trained on.

    Jump and stride come from ``extra["jump"]``/``extra["stride"]``; specs without them count
    ``frame_stride`` as the jump with stride 1 (same frames of the file).
    """
    extra = spec.extra
    stride = int(extra.get("stride", 1))
    jump = int(extra.get("jump", max(int(spec.frame_stride) // stride, 1)))
    return MDOptions(
        topology=topology,
        selection=spec.selection or "backbone",
        jump=jump,
        stride=stride,
        velocity_convention=spec.velocity_convention,
        cutoff=spec.cutoff,
        cache_dir=cache_dir,
        progress=progress,
    )


def open_for_checkpoint(
    path: Union[str, Path],
    spec: Any,
    topology: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
    progress: bool = True,
) -> Dataset:
    """Open data to evaluate a checkpoint whose DataSpec is ``spec``, read as it was trained.

    N-body: the directory with the spec's frames. MD: the trajectory with the spec's selection,
    jump, stride, velocity convention and cutoff. Raises DataError (one line) when the data are
    of the other kind, when the jump spans another time than the checkpoint learned, or when
    the node attributes come from another source (charges vs masses); CheckpointError when the
    node count or attribute width differ.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory or trajectory file")
    md = is_md_spec(spec)
    if path.is_dir():
        if md:
            raise DataError(f"{path}: is a directory, but the checkpoint was trained on an MD trajectory; give a trajectory file")
        return open_dataset(path, frame_in=spec.extra.get("frame_in", 30), frame_out=spec.extra.get("frame_out", 40))
    if not md:
        fmt = spec.extra.get("dataset_format", "dataset directory")
        raise DataError(f"{path}: is a file, but the checkpoint was trained on a {fmt} dataset directory")
    options = md_options_for_spec(spec, topology, cache_dir, progress)
    dataset = open_md_trajectory(path, options)
    fields = dataset.spec_fields
    if not math.isclose(fields["dt"], spec.dt, rel_tol=1e-3):
        frames = options.jump * options.stride
        raise DataError(
            f"{path}: a jump of {frames} frames spans {fields['dt']:g} {fields['units']['time']} here, "
            f"but the checkpoint learned jumps of {spec.dt:g} {spec.units.get('time', '')}"
        )
    source, trained = fields["extra"].get("node_attr_source"), spec.extra.get("node_attr_source")
    if trained is not None and source != trained:
        raise DataError(
            f"{path}: node attributes come from atom {source}s here (topology "
            f"{fields['extra']['topology']}) but the checkpoint was trained on {trained}s; "
            "pass --topology with the same kind of topology"
        )
    spec.check_fits(fields["num_node_attrs"], fields["num_nodes"], where=str(path))
    return dataset
