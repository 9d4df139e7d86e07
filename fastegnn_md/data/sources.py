"""Datasets on disk -> FramePairs plus the data spec a checkpoint records.

`open_dataset` takes either

* a **dataset directory** holding a ``metadata.json`` whose ``format`` key names its reader.
  Today: ``fastegnn-md nbody`` (see `fastegnn_md.data.nbody` and docs/data-formats.md); or
* an **SPH dataset directory** (Water-3D style: ``metadata.json`` without a ``format`` key and
  ``{split}.h5`` or ``{split}.tfrecord``), read with the SPH adapter (`fastegnn_md.adapters.sph`,
  imported only then); format name ``SPH_FORMAT``, reading options `SPHOptions`; or
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
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import DataError
from ..graph import FramePair

NBODY_FORMAT = "fastegnn-md nbody"
MD_FORMAT = "fastegnn-md md trajectory"
SPH_FORMAT = "fastegnn-md sph"
#: `SPHOptions.gravity_axis` value meaning "what the dataset's metadata records, else −y".
GRAVITY_FROM_METADATA = "metadata"
#: Water-3D's convention (and `fastegnn-md sph generate`'s): gravity along −y.
DEFAULT_GRAVITY_AXIS = (0.0, -1.0, 0.0)
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
class SPHOptions:
    """How to read an SPH dataset directory (`open_sph_directory`); the defaults are the CLI's.

    jump : frames between input and target. Default 15, the jump our notes attribute to the
        paper's text (the paper states Δt = 15 frames only for protein MD; the authors' Water-3D
        script uses 20: pass 20 to match it).
    velocity_convention : input velocity (`fastegnn_md.adapters.sph.frame_pairs`):
        "backward" (default) = (x_t − x_{t−jump}) / dt, which `fastegnn-md rollout` computes
        from its own outputs; "forward" (alias "paper") = (x_{t+1} − x_t) / frame_dt, the
        authors' one-shot convention (peeks one frame ahead: never for rollouts).
    num_starts, start_window : input frames per trajectory, drawn at random without
        replacement among the first ``start_window`` frames that have a pair (the authors':
        15 among the first 250); all of them when fewer exist.
    seed : the starts of trajectory k of split s are drawn with ``default_rng([seed, s, k])``
        (s = 0, 1, 2 for train, valid, test), so they do not depend on other trajectories.
    cutoff : radius-graph cutoff in dataset length units; None = ``metadata
        ["default_connectivity_radius"]`` (Water-3D: 0.035).
    gravity_axis : `GRAVITY_FROM_METADATA` (default) = ``metadata["gravity_axis"]`` or
        ``metadata["generator"]["gravity_axis"]`` when recorded, else −y (Water-3D); a 3-vector;
        or None for no gravity term.
    """

    jump: int = 15
    velocity_convention: str = "backward"
    num_starts: int = 15
    start_window: int = 250
    seed: int = 0
    cutoff: Optional[float] = None
    gravity_axis: Union[str, Sequence[float], None] = GRAVITY_FROM_METADATA


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
        if self.format == SPH_FORMAT:
            return load_sph_pairs(self.path, split, self.spec_fields, max_items)
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
    path: Union[str, Path],
    frame_in: int = 30,
    frame_out: int = 40,
    md: Optional[MDOptions] = None,
    sph: Optional[SPHOptions] = None,
) -> Dataset:
    """Open a dataset directory (N-body or SPH) or an MD trajectory file.

    ``frame_in``/``frame_out`` select the jump of N-body data; ``md`` (default `MDOptions()`)
    says how to read a trajectory, ``sph`` (default `SPHOptions()`) an SPH directory. Raises
    DataError (one line) for a missing path, unreadable files, no topology found, a selection
    matching nothing, a trajectory too short, ...
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
    if fmt is None and is_sph_directory(path):
        return open_sph_directory(path, sph or SPHOptions())
    if fmt is None:
        raise DataError(
            f"{path}: neither an N-body dataset (metadata.json has no 'format') nor an SPH dataset "
            "(no train/valid/test .h5 or .tfrecord file)"
        )
    raise DataError(f"{path / 'metadata.json'}: unknown dataset format {fmt!r}")


# --------------------------------------------------------------------------------------------
# SPH particle datasets (SPH adapter)
# --------------------------------------------------------------------------------------------


def is_sph_directory(path: Union[str, Path]) -> bool:
    """True if ``path`` is a directory with a ``{split}.h5`` or ``{split}.tfrecord`` file."""
    path = Path(path)
    return path.is_dir() and any((path / f"{split}.{ext}").is_file() for split in SPLITS for ext in ("h5", "tfrecord"))


def is_sph_spec(spec: Any) -> bool:
    """True if a DataSpec describes SPH dataset data."""
    return spec.extra.get("dataset_format") == SPH_FORMAT


def _import_sph() -> Any:
    try:
        from ..adapters import sph
    except ImportError as exc:
        raise DataError(f"reading SPH datasets needs h5py and google-crc32c ({exc})") from None
    return sph


def parse_gravity_axis(value: Any, where: str) -> list[float]:
    """A gravity axis from metadata or the command line: "x", "-y", "+z", ... or a 3-vector.

    Letters name the direction gravity points to ("-y": down the y axis; a bare "y" means −y,
    Water-3D's convention; the sign does not matter to the models, whose phi_g is signed).
    Returns a unit vector; DataError naming ``where`` otherwise.
    """
    from ..models.base import unit_gravity_axis

    if isinstance(value, str):
        text = value.strip().lower()
        letter = text.lstrip("+-")
        if letter not in ("x", "y", "z") or len(text) - len(letter) > 1:
            raise DataError(f"{where}: gravity axis must be x, y, z (optionally signed) or a 3-vector, got {value!r}")
        axis = [0.0, 0.0, 0.0]
        axis["xyz".index(letter)] = 1.0 if text.startswith("+") else -1.0  # bare "y" = −y
        return axis
    try:
        return unit_gravity_axis(value)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None


def metadata_gravity_axis(metadata: dict[str, Any], where: str) -> list[float]:
    """The gravity axis an SPH dataset's metadata records (``gravity_axis``, or the generator's),
    else `DEFAULT_GRAVITY_AXIS` (−y, Water-3D's)."""
    generator = metadata.get("generator")
    for value in (metadata.get("gravity_axis"), generator.get("gravity_axis") if isinstance(generator, dict) else None):
        if value is not None:
            return parse_gravity_axis(value, where)
    return list(DEFAULT_GRAVITY_AXIS)


def _sph_convention(sph: Any, path: Path, metadata: dict[str, Any]) -> str:
    """The particle-type convention of the whole dataset: the metadata's, DeepMind's for TFRecord
    files, else inferred from the first trajectory found (then used for every trajectory, so
    the one-hot width cannot change between them)."""
    declared = metadata.get("particle_type_convention")
    if declared is not None:
        if declared not in sph.PARTICLE_TYPE_VOCABULARIES:
            raise DataError(
                f"{path / 'metadata.json'}: particle_type_convention must be one of "
                f"{sorted(sph.PARTICLE_TYPE_VOCABULARIES)}, got {declared!r}"
            )
        return str(declared)
    for split in SPLITS:
        for ext in ("h5", "tfrecord"):
            if (path / f"{split}.{ext}").is_file():
                if ext == "tfrecord":
                    return "deepmind"
                _, trajectories = sph.open_sph_dataset(path, split)
                for trajectory in trajectories:
                    return sph.trajectory_convention(trajectory)
    raise DataError(f"{path}: holds no SPH trajectory")


def open_sph_directory(path: Union[str, Path], options: Optional[SPHOptions] = None) -> Dataset:
    """An SPH dataset directory as a `Dataset` whose splits are read on `Dataset.load`.

    Units: lengths as stored (dimensionless, the domain is ``metadata["bounds"]``); time in
    the unit of ``metadata["dt"]`` (the time between stored frames: seconds for `fastegnn-md sph
    generate` datasets, whose metadata says so, recorded as "s"; "dimensionless" when the
    metadata does not say). Velocities are length per that time unit and the spec's ``dt`` is
    ``jump × metadata["dt"]``.

    Node attributes are the one-hot particle types; walls and other kinematic particles are
    not moving (graph inputs only), and the spec's ``extra["kinematic_attr_columns"]`` lets a
    Predictor find them again. Raises DataError (one line, naming the file or option).
    """
    path = Path(path)
    options = options or SPHOptions()
    sph = _import_sph()
    metadata = sph.read_metadata(path)
    where = str(path / "metadata.json")
    jump = options.jump
    if isinstance(jump, bool) or not isinstance(jump, (int, np.integer)) or jump < 1:
        raise DataError(f"jump: must be a positive number of frames, got {jump!r}")
    velocity = "forward" if options.velocity_convention in ("forward", "paper") else options.velocity_convention
    if velocity not in ("forward", "backward"):
        raise DataError(
            f"velocity: SPH data have forward (paper) or backward velocities, got {options.velocity_convention!r}"
        )
    for name in ("num_starts", "start_window"):
        if getattr(options, name) < 1:
            raise DataError(f"{name}: must be >= 1, got {getattr(options, name)}")
    try:
        frame_dt = float(metadata["dt"])
        radius = float(metadata["default_connectivity_radius"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: dt and default_connectivity_radius must be numbers") from None
    if not (math.isfinite(frame_dt) and frame_dt > 0):
        raise DataError(f"{where}: dt must be a positive time between frames, got {metadata['dt']!r}")
    cutoff = radius if options.cutoff is None else float(options.cutoff)
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise DataError(f"cutoff: must be a positive length, got {cutoff}")
    if options.gravity_axis is None:
        gravity = None
    elif isinstance(options.gravity_axis, str) and options.gravity_axis == GRAVITY_FROM_METADATA:
        gravity = metadata_gravity_axis(metadata, where)
    else:
        gravity = parse_gravity_axis(options.gravity_axis, "gravity_axis")
    convention = _sph_convention(sph, path, metadata)
    vocabulary = sph.PARTICLE_TYPE_VOCABULARIES[convention]
    kinematic = [column for column, kind in enumerate(vocabulary) if kind in sph.KINEMATIC_TYPES[convention]]
    generator = metadata.get("generator") if isinstance(metadata.get("generator"), dict) else {}
    time_unit = str(generator.get("time_unit", "dimensionless"))
    spec = {
        "units": {"length": "dimensionless", "time": time_unit},
        "dt": jump * frame_dt,
        "frame_stride": int(jump),
        "velocity_convention": velocity,
        "cutoff": cutoff,
        "num_node_attrs": len(vocabulary),
        "num_nodes": None,
        "gravity_axis": gravity,
        "extra": {
            "dataset_format": SPH_FORMAT,
            "jump": int(jump),
            "frame_dt": frame_dt,
            "num_starts": int(options.num_starts),
            "start_window": int(options.start_window),
            "seed": int(options.seed),
            "particle_type_convention": convention,
            "kinematic_attr_columns": kinematic,
            "bounds": metadata.get("bounds"),
            "default_connectivity_radius": radius,
        },
    }
    return Dataset(path, SPH_FORMAT, spec)


def load_sph_pairs(
    path: Union[str, Path], split: str, spec_fields: dict[str, Any], max_items: Optional[int] = None
) -> list[FramePair]:
    """The FramePairs of one split of an SPH dataset, as `open_sph_directory`'s spec describes.

    Trajectory k of split s contributes its random starts (`SPHOptions`); the first
    ``max_items`` pairs are returned if given (reading stops there). Positions, velocities and
    targets are kept as float32 (the files hold float32 positions): a Water-3D split of 15,000
    pairs × 7.8k particles then takes ~4 GB in memory.
    """
    sph = _import_sph()
    if split not in SPLITS:
        raise DataError(f"{path}: no split {split!r} (splits: {', '.join(SPLITS)})")
    extra = spec_fields["extra"]
    jump, frame_dt = int(extra["jump"]), float(extra["frame_dt"])
    velocity = spec_fields["velocity_convention"]
    convention = extra["particle_type_convention"]
    _, trajectories = sph.open_sph_dataset(path, split)
    pairs: list[FramePair] = []
    for index, trajectory in enumerate(trajectories):
        if max_items is not None and len(pairs) >= max_items:
            break
        rng = np.random.default_rng([int(extra["seed"]), SPLITS.index(split), index])
        starts = sph.paper_starts(
            trajectory.num_frames, jump, velocity, rng, int(extra["num_starts"]), int(extra["start_window"])
        )
        try:
            made = sph.frame_pairs(
                trajectory, jump, starts=starts, velocity=velocity, frame_dt=frame_dt, convention=convention
            )
        except DataError as exc:
            raise DataError(f"{path}: {split}: {exc}") from None
        for pair in made:
            pair.positions = pair.positions.astype(np.float32)
            pair.velocities = pair.velocities.astype(np.float32)
            pair.target_positions = pair.target_positions.astype(np.float32)
            if pair.target_velocities is not None:
                pair.target_velocities = pair.target_velocities.astype(np.float32)
        pairs.extend(made)
    if not pairs:
        raise DataError(
            f"{path}: split {split!r} has no input frame with a pair (jump {jump}, {velocity} velocities, "
            f"first {extra['start_window']} frames)"
        )
    return pairs if max_items is None else pairs[:max_items]


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

    N-body: the directory with the spec's frames. SPH: the directory with the spec's jump,
    velocity convention, start sampling (count, window, seed), cutoff and gravity axis. MD: the
    trajectory with the spec's selection, jump, stride, velocity convention and cutoff. Raises
    DataError (one line) when the data are of another kind, when the jump spans another time
    than the checkpoint learned, or when the node attributes come from another source (charges
    vs masses, another particle-type convention); CheckpointError when the node count or
    attribute width differ.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory or trajectory file")
    md = is_md_spec(spec)
    if path.is_dir():
        if md:
            raise DataError(f"{path}: is a directory, but the checkpoint was trained on an MD trajectory; give a trajectory file")
        if is_sph_spec(spec):
            return _open_sph_for_checkpoint(path, spec)
        if is_sph_directory(path) and "format" not in read_metadata(path):
            fmt = spec.extra.get("dataset_format", "non-SPH")
            raise DataError(f"{path}: is an SPH dataset, but the checkpoint was trained on {fmt} data")
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


def sph_options_for_spec(spec: Any) -> SPHOptions:
    """The SPHOptions that read an SPH dataset the way a checkpoint's DataSpec was trained on."""
    extra = spec.extra
    return SPHOptions(
        jump=int(extra["jump"]),
        velocity_convention=spec.velocity_convention,
        num_starts=int(extra.get("num_starts", 15)),
        start_window=int(extra.get("start_window", 250)),
        seed=int(extra.get("seed", 0)),
        cutoff=spec.cutoff,
        gravity_axis=spec.gravity_axis,
    )


def _open_sph_for_checkpoint(path: Path, spec: Any) -> Dataset:
    if not is_sph_directory(path):
        raise DataError(
            f"{path}: the checkpoint was trained on an SPH dataset, but this directory holds no .h5/.tfrecord split"
        )
    dataset = open_sph_directory(path, sph_options_for_spec(spec))
    fields = dataset.spec_fields
    if not math.isclose(fields["dt"], spec.dt, rel_tol=1e-6):
        raise DataError(
            f"{path}: a jump of {spec.extra['jump']} frames spans {fields['dt']:g} {fields['units']['time']} here "
            f"(metadata dt {fields['extra']['frame_dt']:g}), but the checkpoint learned jumps of {spec.dt:g} "
            f"{spec.units.get('time', '')}"
        )
    here, trained = fields["extra"]["particle_type_convention"], spec.extra.get("particle_type_convention")
    if trained is not None and here != trained:
        raise DataError(
            f"{path}: particle types follow the {here} convention here, "
            f"but the checkpoint was trained on {trained} types"
        )
    spec.check_fits(fields["num_node_attrs"], None, where=str(path))
    return dataset
