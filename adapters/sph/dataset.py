"""SPH dataset directories: which file holds a split, reading a split, writing a whole dataset,
and DeepMind's normalisation statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ...errors import DataError
from ...io import write_atomically
from .deepmind import read_deepmind, write_deepmind
from .lagrangebench import read_lagrangebench, write_lagrangebench
from .metadata import FORMATS, read_metadata
from .trajectory import PARTICLE_TYPE_VOCABULARIES, PathLike, SPHTrajectory, particle_types_to_attrs, trajectory_convention


def split_file(directory: PathLike, split: str) -> tuple[Path, str]:
    """The file holding ``split`` and its format: ``{split}.h5`` (preferred) or ``{split}.tfrecord``.

    Raises
    ------
    DataError
        If the directory is missing or holds neither file; the message lists what it holds.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such dataset directory")
    for fmt in FORMATS:
        candidate = directory / f"{split}.{fmt}"
        if candidate.is_file():
            return candidate, fmt
    found = sorted(entry.name for entry in directory.iterdir() if not entry.name.startswith("."))
    listing = ", ".join(found[:20]) + (", ..." if len(found) > 20 else "") if found else "nothing"
    raise DataError(f"{directory}: no {split}.h5 or {split}.tfrecord for split {split!r} (found: {listing})")


def open_sph_dataset(directory: PathLike, split: str) -> tuple[dict[str, Any], Iterator[SPHTrajectory]]:
    """Metadata and the trajectories of one split of an SPH dataset directory.

    ``{split}.h5`` is read if present (LagrangeBench), else ``{split}.tfrecord`` (DeepMind).
    The metadata is read and checked for the chosen format (`read_metadata`) before anything
    else. Trajectories are read lazily; each gets ``metadata`` (the same dict, not a copy) and
    its particle-type convention (``"deepmind"`` for TFRecord; for HDF5
    ``metadata["particle_type_convention"]`` when present, else `infer_convention`).

    Raises
    ------
    DataError
        Missing directory, split file or metadata, or any error of the readers.
    """
    path, fmt = split_file(directory, split)
    metadata = read_metadata(directory, fmt)
    if fmt == "h5":
        convention = metadata.get("particle_type_convention")
        if convention is not None and convention not in PARTICLE_TYPE_VOCABULARIES:
            raise DataError(
                f"{Path(directory) / 'metadata.json'}: particle_type_convention must be one of "
                f"{sorted(PARTICLE_TYPE_VOCABULARIES)}, got {convention!r}"
            )
        trajectories = read_lagrangebench(path, convention)
    else:
        trajectories = read_deepmind(path, int(metadata["dim"]))
    return metadata, _with_metadata(trajectories, metadata)


def _with_metadata(trajectories: Iterator[SPHTrajectory], metadata: dict[str, Any]) -> Iterator[SPHTrajectory]:
    for trajectory in trajectories:
        trajectory.metadata = metadata
        yield trajectory


def write_dataset(
    directory: PathLike,
    splits: dict[str, Sequence[SPHTrajectory]],
    metadata: dict[str, Any],
    formats: Sequence[str] = FORMATS,
) -> dict[str, Any]:
    """Write an SPH dataset directory: every split in every format, then ``metadata.json``.

    Parameters
    ----------
    directory : created if needed.
    splits : split name -> trajectories (all of one spatial dimension).
    metadata : must hold ``bounds`` ([[lo, hi]] per dimension), ``dt`` (time between frames)
        and ``default_connectivity_radius`` (length unit). Everything passed is written. Filled
        in when absent: ``dim`` (from the positions), ``sequence_length`` (frames - 1, when all
        trajectories have the same length), ``vel_mean/vel_std/acc_mean/acc_std``
        (`trajectory_statistics` of the ``train`` split, or of all trajectories without one),
        ``particle_type_convention`` (when all trajectories declare the same), and for HDF5
        LagrangeBench's ``num_particles_max`` and ``periodic_boundary_conditions`` (all False).
    formats : any of ``"h5"`` (``{split}.h5``, `write_lagrangebench`) and ``"tfrecord"``
        (``{split}.tfrecord``, `write_deepmind`).

    Every file is written atomically and ``metadata.json`` last, so a directory with
    ``metadata.json`` is complete. Returns the metadata written.

    Raises
    ------
    ValueError
        For a missing required metadata key, an unknown format, no trajectories, mixed
        dimensions, or a ``dim``/``sequence_length`` that contradicts the data.
    """
    formats = tuple(formats)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    splits = {name: list(trajectories) for name, trajectories in splits.items()}
    everything = [trajectory for trajectories in splits.values() for trajectory in trajectories]
    if not everything:
        raise ValueError("write_dataset needs at least one trajectory")
    missing = [key for key in ("bounds", "dt", "default_connectivity_radius") if key not in metadata]
    if missing:
        raise ValueError(f"metadata lacks required key(s) {', '.join(missing)}")

    meta = dict(metadata)
    dims = {trajectory.dim for trajectory in everything}
    if len(dims) != 1:
        raise ValueError(f"trajectories have different spatial dimensions: {sorted(dims)}")
    dim = dims.pop()
    if meta.setdefault("dim", dim) != dim:
        raise ValueError(f"metadata dim {meta['dim']} does not match the positions' {dim}")
    lengths = {trajectory.num_frames - 1 for trajectory in everything}
    if "sequence_length" not in meta:
        if len(lengths) != 1:
            raise ValueError("trajectories have different lengths; pass metadata['sequence_length']")
        meta["sequence_length"] = lengths.pop()
    stats_keys = ("vel_mean", "vel_std", "acc_mean", "acc_std")
    if any(key not in meta for key in stats_keys):
        stats = trajectory_statistics(splits.get("train") or everything)
        for key in stats_keys:
            meta.setdefault(key, stats[key])
    conventions = {trajectory.convention for trajectory in everything}
    if len(conventions) == 1 and None not in conventions:
        meta.setdefault("particle_type_convention", conventions.pop())
    if "h5" in formats:
        meta.setdefault("num_particles_max", max(trajectory.num_particles for trajectory in everything))
        meta.setdefault("periodic_boundary_conditions", [False] * dim)

    directory = Path(directory)
    for name, trajectories in splits.items():
        if "h5" in formats:
            write_lagrangebench(directory / f"{name}.h5", trajectories)
        if "tfrecord" in formats:
            write_deepmind(directory / f"{name}.tfrecord", trajectories)
    text = json.dumps(_jsonable(meta), indent=2) + "\n"
    write_atomically(directory / "metadata.json", lambda handle: handle.write(text.encode("utf-8")))
    return meta


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def trajectory_statistics(trajectories: Iterable[SPHTrajectory], dt_frames: int = 1) -> dict[str, list[float]]:
    """Per-dimension mean and standard deviation of velocities and accelerations (DeepMind's
    normalisation statistics), over the non-kinematic particles of all trajectories.

    With k = ``dt_frames``: velocity v_t = x_t - x_{t-k} (length per k frames, not divided by
    a time step) and acceleration a_t = v_t - v_{t-k} = x_t - 2 x_{t-k} + x_{t-2k}, for every
    frame where they exist. Standard deviations are population ones (ddof 0). Kinematic
    particles (walls; `particle_types_to_attrs`) are excluded. Computed in float64.

    Returns
    -------
    ``{"vel_mean", "vel_std", "acc_mean", "acc_std"}``, each a list of ``dim`` floats.

    Raises
    ------
    ValueError
        If no trajectory has 2k + 1 frames and a non-kinematic particle.
    """
    k = int(dt_frames)
    if k < 1:
        raise ValueError(f"dt_frames must be a positive integer, got {dt_frames!r}")
    vel, acc = _Moments(), _Moments()
    for trajectory in trajectories:
        _, moving = particle_types_to_attrs(trajectory.particle_type, trajectory_convention(trajectory))
        x = trajectory.positions[:, moving].astype(np.float64)
        if x.shape[0] < 2 * k + 1 or x.shape[1] == 0:
            continue
        v = x[k:] - x[:-k]
        vel.add(v.reshape(-1, x.shape[2]))
        acc.add((v[k:] - v[:-k]).reshape(-1, x.shape[2]))
    if acc.count == 0:
        raise ValueError(
            f"no trajectory has {2 * k + 1} frames and a non-kinematic particle to compute statistics from"
        )
    return {
        "vel_mean": vel.mean.tolist(), "vel_std": vel.std.tolist(),
        "acc_mean": acc.mean.tolist(), "acc_std": acc.std.tolist(),
    }


class _Moments:
    """Running per-column mean and sum of squared deviations (Chan et al.'s pairwise merge:
    stable where summing x and x² over millions of samples is not)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray = np.zeros(0)
        self.m2: np.ndarray = np.zeros(0)

    def add(self, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if n == 0:
            return
        mean = samples.mean(axis=0)
        m2 = ((samples - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)

