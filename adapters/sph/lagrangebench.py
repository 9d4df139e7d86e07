"""LagrangeBench HDF5 files: ``{split}.h5``, one group per trajectory (``"00000"``, ...) with
``position`` float32 (T, N, dim) and ``particle_type`` int (N,). Units: the dataset's own."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import h5py
import numpy as np

from ...errors import DataError
from ...io import commit_partial, partial_path, write_path_atomically
from .trajectory import PADDING_TYPE, PathLike, SPHTrajectory, _check_convention, infer_convention


def read_lagrangebench(path: PathLike, convention: Optional[str] = None) -> Iterator[SPHTrajectory]:
    """The trajectories of a LagrangeBench ``{split}.h5`` file, in group-name order.

    Each group (``"00000"``, ...) holds ``position`` float32 (T, N_max, dim) and
    ``particle_type`` int (N_max,). Padding particles (type -1) are dropped, so ``N`` may
    differ between trajectories. ``convention`` sets `SPHTrajectory.convention` (None: inferred
    per trajectory, see `infer_convention`). The file stays open while the iterator is alive.

    Raises
    ------
    DataError
        ``"<file>: <what is wrong>"`` for a missing or non-HDF5 file, a member that is not a
        group, a missing dataset, or shapes that do not fit together.
    """
    path = Path(path)
    if convention is not None:
        _check_convention(convention)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not h5py.is_hdf5(path):  # checked now, not on the first next()
        raise DataError(f"{path}: not an HDF5 file")
    return _iter_lagrangebench(path, convention)


def _iter_lagrangebench(path: Path, convention: Optional[str]) -> Iterator[SPHTrajectory]:
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot read as HDF5 ({_one_line(exc)})") from None
    with handle:
        for name in sorted(handle.keys()):
            group = handle[name]
            if not isinstance(group, h5py.Group):
                raise DataError(f"{path}: member {name!r} is not a trajectory group")
            positions = _h5_dataset(path, group, name, "position")
            types = _h5_dataset(path, group, name, "particle_type")
            if positions.ndim != 3 or positions.shape[2] not in (2, 3):
                raise DataError(f"{path}: group {name}: position has shape {positions.shape}, expected (T, N, 2|3)")
            if types.ndim != 1 or types.shape[0] != positions.shape[1]:
                raise DataError(
                    f"{path}: group {name}: particle_type has shape {types.shape} but position "
                    f"holds {positions.shape[1]} particles"
                )
            if not np.issubdtype(types.dtype, np.integer):
                raise DataError(f"{path}: group {name}: particle_type has dtype {types.dtype}, expected integers")
            real = types != PADDING_TYPE
            if not real.all():
                positions, types = positions[:, real], types[real]
            yield SPHTrajectory(
                positions=positions.astype(np.float32, copy=False),
                particle_type=types.astype(np.int64, copy=False),
                key=name,
                convention=convention or infer_convention(types),
            )


def _h5_dataset(path: Path, group: h5py.Group, name: str, member: str) -> np.ndarray:
    if member not in group or not isinstance(group[member], h5py.Dataset):
        raise DataError(f"{path}: group {name} has no {member!r} dataset")
    try:
        return group[member][()]
    except OSError as exc:  # e.g. a corrupt gzip chunk
        raise DataError(f"{path}: group {name}: cannot read {member!r} ({_one_line(exc)})") from None


def write_lagrangebench(path: PathLike, trajectories: Iterable[SPHTrajectory]) -> Path:
    """Write a LagrangeBench ``{split}.h5`` file atomically.

    Trajectory i becomes group ``f"{i:05d}"`` with ``position`` float32 (T, N, dim) (gzip) and
    ``particle_type`` int64 (N,); type numbers are written as given (no padding is added).
    The file is built under a temporary name in the same directory and renamed, so readers
    never see a partial file.
    """

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            for index, trajectory in enumerate(trajectories):
                group = handle.create_group(f"{index:05d}")
                group.create_dataset(
                    "position", data=np.asarray(trajectory.positions, dtype=np.float32), compression="gzip"
                )
                group.create_dataset("particle_type", data=np.asarray(trajectory.particle_type, dtype=np.int64))

    return write_path_atomically(Path(path), write)


class StreamingLagrangeBenchWriter:
    """Append the frames of one trajectory to a LagrangeBench HDF5 file as they are made.

    The file holds one group ``"00000"``: ``particle_type`` int64 (N,) and ``position`` float32
    (T, N, dim), grown by one frame per `write` (chunks of one frame, gzip) and flushed, so the
    frames made so far are on disk. They go to ``<stem>.partial<ext>``; `commit` renames that
    file to ``path`` once the run is complete, so a run that is killed or fails keeps its frames
    under the partial name and a finished earlier ``path`` is untouched (as the MD writer does).
    Units: the dataset's own.
    """

    def __init__(self, path: PathLike, particle_type: np.ndarray, dim: int) -> None:
        self.path = Path(path)
        self.file = partial_path(self.path)
        types = np.asarray(particle_type, dtype=np.int64)
        self.frames = 0
        self.closed = False
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self._handle = h5py.File(self.file, "w")
        except OSError as exc:  # name the output the user gave, not the partial file
            raise DataError(f"{self.path}: cannot be written ({_one_line(exc)})") from None
        group = self._handle.create_group("00000")
        group.create_dataset("particle_type", data=types)
        self._positions = group.create_dataset(
            "position", shape=(0, len(types), int(dim)), maxshape=(None, len(types), int(dim)), dtype=np.float32,
            chunks=(1, len(types), int(dim)), compression="gzip")

    def write(self, positions: np.ndarray) -> None:
        """Append one frame: positions (N, dim) in the dataset's length unit."""
        self._positions.resize(self.frames + 1, axis=0)
        self._positions[self.frames] = np.asarray(positions, dtype=np.float32)
        self.frames += 1
        self._handle.flush()

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
            self.closed = True

    def commit(self) -> Path:
        """Close, flush to disk and rename the partial file to ``path``; returns ``path``."""
        self.close()
        return commit_partial(self.file, self.path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
