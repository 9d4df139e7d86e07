"""The SPH data kind: a Water-3D-style dataset directory (``metadata.json`` + ``{split}.h5`` or
``{split}.tfrecord``), read with the FastEGNN authors' random start frames.

Units: lengths as stored (dimensionless, the domain is ``metadata["bounds"]``); time in the unit
of ``metadata["dt"]`` (the time between stored frames: seconds for `fastegnn-md sph generate`
datasets, whose metadata says so, recorded as "s"; "dimensionless" when the metadata does not
say). Velocities are length per that time unit and the spec's ``dt`` is ``jump × metadata["dt"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ... import spec_keys as keys
from ...conventions import BACKWARD, PHYSICAL, SPLITS, canonical_convention
from ...data.kinds import DataKind, Dataset, PathLike, TrainingDefaults
from ...errors import DataError
from ...graph import FramePair
from ...geometry import unit_gravity_axis
from .dataset import open_sph_dataset
from .metadata import FORMATS, read_metadata
from .pairs import SPH_VELOCITY_CONVENTIONS, frame_pairs, paper_starts
from .trajectory import KINEMATIC_TYPES, PARTICLE_TYPE_VOCABULARIES, trajectory_convention

#: `SPHOptions.gravity_axis` value meaning "what the dataset's metadata records, else −y".
GRAVITY_FROM_METADATA = "metadata"
#: Water-3D's convention (and `fastegnn-md sph generate`'s): gravity along −y.
DEFAULT_GRAVITY_AXIS = (0.0, -1.0, 0.0)
#: The paper's Water-3D λ (Table 5) and the authors' batch of 20 large graphs.
# time_scale "jump": SPH velocities are box units per second and a jump is ~0.075 s, so with T = 1 the
# velocity term would start ~50x too strong (issue 16); with T = Δt it starts at constant velocity's size.
SPH_TRAINING = TrainingDefaults(mmd_weight=0.01, batch_size=20, time_scale="jump")


@dataclass
class SPHOptions:
    """How to read an SPH dataset directory (`open_sph_directory`); the defaults are the CLI's.

    jump : frames between input and target. Default 15, the jump our notes attribute to the
        paper's text (the paper states Δt = 15 frames only for protein MD; the authors' Water-3D
        script uses 20: pass 20 to match it).
    velocity_convention : input velocity (`fastegnn_md.adapters.sph.frame_pairs`):
        "backward" (default) = (x_t − x_{t−jump}) / dt, which `fastegnn-md rollout` computes
        from its own outputs; "forward" (deprecated name "paper") = (x_{t+1} − x_t) / frame_dt,
        the authors' one-shot convention (peeks one frame ahead: never for rollouts).
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
    velocity_convention: str = BACKWARD
    num_starts: int = 15
    start_window: int = 250
    seed: int = 0
    cutoff: Optional[float] = None
    gravity_axis: Union[str, Sequence[float], None] = GRAVITY_FROM_METADATA


def is_sph_directory(path: PathLike) -> bool:
    """True if ``path`` is a directory with a ``{split}.h5`` or ``{split}.tfrecord`` file."""
    path = Path(path)
    return path.is_dir() and any((path / f"{split}.{ext}").is_file() for split in SPLITS for ext in FORMATS)


def parse_gravity_axis(value: Any, where: str) -> list[float]:
    """A gravity axis from metadata or the command line: "x", "-y", "+z", ... or a 3-vector.

    Letters name the direction gravity points to ("-y": down the y axis; a bare "y" means −y,
    Water-3D's convention; the sign does not matter to the models, whose phi_g is signed).
    Returns a unit vector; DataError naming ``where`` otherwise.
    """
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


def dataset_convention(path: Path, metadata: dict[str, Any]) -> str:
    """The particle-type convention of the whole dataset: the metadata's, DeepMind's for TFRecord
    files, else inferred from the first trajectory found (then used for every trajectory, so
    the one-hot width cannot change between them)."""
    declared = metadata.get(keys.PARTICLE_TYPE_CONVENTION)
    if declared is not None:
        if declared not in PARTICLE_TYPE_VOCABULARIES:
            raise DataError(
                f"{path / 'metadata.json'}: particle_type_convention must be one of "
                f"{sorted(PARTICLE_TYPE_VOCABULARIES)}, got {declared!r}"
            )
        return str(declared)
    for split in SPLITS:
        for ext in FORMATS:
            if (path / f"{split}.{ext}").is_file():
                if ext == "tfrecord":
                    return "deepmind"
                _, trajectories = open_sph_dataset(path, split)
                for trajectory in trajectories:
                    return trajectory_convention(trajectory)
    raise DataError(f"{path}: holds no SPH trajectory")


def open_sph_directory(path: PathLike, options: Optional[SPHOptions] = None) -> Dataset:
    """An SPH dataset directory as a `Dataset` whose splits are read on `Dataset.load`.

    Node attributes are the one-hot particle types; walls and other kinematic particles are
    not moving (graph inputs only), and the spec's ``extra["kinematic_attr_columns"]`` lets a
    Predictor find them again. Units: see the module docstring. Raises DataError (one line,
    naming the file or option).
    """
    path = Path(path)
    options = options or SPHOptions()
    metadata = read_metadata(path)
    where = str(path / "metadata.json")
    jump = options.jump
    if isinstance(jump, bool) or not isinstance(jump, (int, np.integer)) or jump < 1:
        raise DataError(f"jump: must be a positive number of frames, got {jump!r}")
    try:
        velocity = canonical_convention(options.velocity_convention, "velocity", allowed=SPH_VELOCITY_CONVENTIONS)
    except ValueError:
        raise DataError(
            f"velocity: SPH data have forward (paper) or backward velocities, got {options.velocity_convention!r}"
        ) from None
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
    convention = dataset_convention(path, metadata)
    vocabulary = PARTICLE_TYPE_VOCABULARIES[convention]
    kinematic = [column for column, kind in enumerate(vocabulary) if kind in KINEMATIC_TYPES[convention]]
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
            keys.DATASET_FORMAT: keys.SPH_FORMAT,
            keys.JUMP: int(jump),
            keys.FRAME_DT: frame_dt,
            keys.NUM_STARTS: int(options.num_starts),
            keys.START_WINDOW: int(options.start_window),
            keys.SEED: int(options.seed),
            keys.PARTICLE_TYPE_CONVENTION: convention,
            keys.KINEMATIC_ATTR_COLUMNS: kinematic,
            keys.BOUNDS: metadata.get("bounds"),
            keys.CONNECTIVITY_RADIUS: radius,
        },
    }

    def read_split(split: str, max_items: Optional[int]) -> list[FramePair]:
        return load_sph_pairs(path, split, spec, max_items)

    return Dataset(path, keys.SPH_FORMAT, spec, read_split=read_split)


def load_sph_pairs(
    path: PathLike, split: str, spec_fields: dict[str, Any], max_items: Optional[int] = None
) -> list[FramePair]:
    """The FramePairs of one split of an SPH dataset, as `open_sph_directory`'s spec describes.

    Trajectory k of split s contributes its random starts (`SPHOptions`); the first
    ``max_items`` pairs are returned if given (reading stops there). Positions, velocities and
    targets are kept as float32 (the files hold float32 positions): a Water-3D split of 15,000
    pairs × 7.8k particles then takes ~4 GB in memory.
    """
    if split not in SPLITS:
        raise DataError(f"{path}: no split {split!r} (splits: {', '.join(SPLITS)})")
    extra = spec_fields["extra"]
    jump, frame_dt = int(extra[keys.JUMP]), float(extra[keys.FRAME_DT])
    velocity = spec_fields["velocity_convention"]
    convention = extra[keys.PARTICLE_TYPE_CONVENTION]
    _, trajectories = open_sph_dataset(path, split)
    pairs: list[FramePair] = []
    for index, trajectory in enumerate(trajectories):
        if max_items is not None and len(pairs) >= max_items:
            break
        rng = np.random.default_rng([int(extra[keys.SEED]), SPLITS.index(split), index])
        starts = paper_starts(
            trajectory.num_frames, jump, velocity, rng, int(extra[keys.NUM_STARTS]), int(extra[keys.START_WINDOW])
        )
        try:
            made = frame_pairs(trajectory, jump, starts=starts, velocity=velocity, frame_dt=frame_dt, convention=convention)
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
            f"first {extra[keys.START_WINDOW]} frames)"
        )
    return pairs if max_items is None else pairs[:max_items]


def sph_options_for_spec(spec: Any) -> SPHOptions:
    """The SPHOptions that read an SPH dataset the way a checkpoint's DataSpec was trained on."""
    extra = spec.extra
    return SPHOptions(
        jump=int(extra[keys.JUMP]),
        velocity_convention=spec.velocity_convention,
        num_starts=int(extra.get(keys.NUM_STARTS, 15)),
        start_window=int(extra.get(keys.START_WINDOW, 250)),
        seed=int(extra.get(keys.SEED, 0)),
        cutoff=spec.cutoff,
        gravity_axis=spec.gravity_axis,
    )


class SPHDatasetKind(DataKind):
    name = "sph"
    order = 20
    format = keys.SPH_FORMAT
    description = "an SPH dataset directory"
    options_class = SPHOptions
    plural = "SPH dataset directories"
    data_name = "an SPH dataset"
    training = SPH_TRAINING
    train_flags = {"--jump": "jump", "--velocity": "velocity_convention", "--gravity-axis": "gravity_axis",
                   "--starts": "num_starts", "--start-window": "start_window"}
    rollout_flags = {"--split": "split", "--trajectory": "trajectory", "--sinkhorn-particles": "sinkhorn_particles",
                     "--keep-in-box": "keep_in_box", "--keep-density": "keep_density",
                     "--particle-radius": "particle_radius"}
    flag_hints = {"--frames": "use --jump"}

    def recognises(self, path: Path) -> bool:
        if not is_sph_directory(path):
            return False
        try:  # a directory of another kind (its metadata names a format) is not SPH data
            return "format" not in read_metadata(path)
        except DataError:
            return True  # SPH split files with bad metadata: SPH's reader says what is wrong

    def option_value(self, name: str, value: Any, where: str) -> Any:
        if name == "velocity_convention":
            if value == PHYSICAL:
                raise DataError(f"--velocity: SPH dataset {where} stores no velocities; use backward or forward")
            return canonical_convention(value, "--velocity", allowed=SPH_VELOCITY_CONVENTIONS)
        if name == "gravity_axis" and value == "none":
            return None
        return value

    def open(self, path: PathLike, options: Any = None) -> Dataset:
        return open_sph_directory(path, options)

    def options_for_spec(self, spec: Any, **reading: Any) -> SPHOptions:
        return sph_options_for_spec(spec)

    def check_fits_spec(self, dataset: Dataset, spec: Any) -> None:
        fields, path = dataset.spec_fields, dataset.path
        if not math.isclose(fields["dt"], spec.dt, rel_tol=1e-6):
            raise DataError(
                f"{path}: a jump of {spec.extra[keys.JUMP]} frames spans {fields['dt']:g} {fields['units']['time']} "
                f"here (metadata dt {fields['extra'][keys.FRAME_DT]:g}), but the checkpoint learned jumps of "
                f"{spec.dt:g} {spec.units.get('time', '')}"
            )
        here, trained = fields["extra"][keys.PARTICLE_TYPE_CONVENTION], spec.extra.get(keys.PARTICLE_TYPE_CONVENTION)
        if trained is not None and here != trained:
            raise DataError(
                f"{path}: particle types follow the {here} convention here, "
                f"but the checkpoint was trained on {trained} types"
            )
        spec.check_fits(fields["num_node_attrs"], None, where=str(path))
