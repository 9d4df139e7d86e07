"""DeepMind "Learning to simulate" files: ``{split}.tfrecord``, one ``tf.train.SequenceExample``
per trajectory (context ``key`` and ``particle_type``, sequence feature ``position``).
Units: the dataset's own."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Union

import numpy as np

from ...errors import DataError
from ...io import write_atomically
from .trajectory import PathLike
from .protobuf import Feature, MalformedMessage, decode_sequence_example, encode_sequence_example
from .tfrecord import frame_tfrecord, tfrecord_records
from .trajectory import SPHTrajectory


def read_deepmind(path: PathLike, dim: int = 3) -> Iterator[SPHTrajectory]:
    """The trajectories of a DeepMind ``{split}.tfrecord`` file, one per record, in file order.

    Parameters
    ----------
    path : the TFRecord file.
    dim : spatial dimension (``metadata["dim"]``); each position frame is reshaped to (N, dim).

    Yields
    ------
    SPHTrajectory with positions (T, N, dim) float32 (T = sequence_length + 1 frames),
    particle_type (N,) int64, ``key`` = the context ``key`` (the record index if absent) and
    convention ``"deepmind"``. Other context or sequence features are ignored.

    Raises
    ------
    DataError
        ``"<file>: record <i>: <what>"`` for framing errors (`tfrecord_records`), malformed
        protobuf, a missing or mistyped ``particle_type``/``position`` feature, or frames whose
        sizes do not fit N particles in ``dim`` dimensions.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    records = tfrecord_records(path)  # raises for a missing file now, not on first next()
    return _iter_deepmind(Path(path), records, dim)


def _iter_deepmind(path: Path, records: Iterator[bytes], dim: int) -> Iterator[SPHTrajectory]:
    for index, data in enumerate(records):
        where = f"{path}: record {index}"
        try:
            context, lists = decode_sequence_example(data)
        except MalformedMessage as exc:
            raise DataError(f"{where}: malformed SequenceExample ({exc})") from None
        yield _trajectory_from_example(where, index, context, lists, dim)


def _trajectory_from_example(
    where: str, index: int, context: dict[str, Feature], lists: dict[str, list[Feature]], dim: int
) -> SPHTrajectory:
    types_feature = context.get("particle_type")
    if types_feature is None:
        raise DataError(f"{where}: no context feature 'particle_type'")
    if types_feature.kind != "bytes" or len(types_feature.values) != 1:
        raise DataError(f"{where}: context 'particle_type' must be one bytes value")
    raw_types = types_feature.values[0]
    if len(raw_types) % 8:
        raise DataError(f"{where}: 'particle_type' has {len(raw_types)} bytes, not a multiple of 8 (int64)")
    types = np.frombuffer(raw_types, dtype="<i8").astype(np.int64)

    key: Union[int, str] = index
    key_feature = context.get("key")
    if key_feature is not None:
        if key_feature.kind != "int64" or len(key_feature.values) != 1:
            raise DataError(f"{where}: context 'key' must be one int64 value")
        key = int(key_feature.values[0])

    frames = lists.get("position")
    if frames is None:
        raise DataError(f"{where}: no sequence feature 'position'")
    if not frames:
        raise DataError(f"{where}: sequence feature 'position' has no frames")
    frame_bytes = types.size * dim * 4
    positions = np.empty((len(frames), types.size, dim), dtype=np.float32)
    for t, frame in enumerate(frames):
        if frame.kind != "bytes" or len(frame.values) != 1:
            raise DataError(f"{where}: 'position' frame {t} must be one bytes value")
        raw = frame.values[0]
        if len(raw) != frame_bytes:
            raise DataError(
                f"{where}: 'position' frame {t} has {len(raw)} bytes; {types.size} particles in "
                f"{dim}-D need {frame_bytes} (float32)"
            )
        positions[t] = np.frombuffer(raw, dtype="<f4").reshape(types.size, dim)
    return SPHTrajectory(positions=positions, particle_type=types, key=key, convention="deepmind")


def write_deepmind(path: PathLike, trajectories: Iterable[SPHTrajectory]) -> Path:
    """Write a DeepMind ``{split}.tfrecord`` file atomically, one SequenceExample per trajectory.

    Layout as `encode_sequence_example`. The context ``key`` is the trajectory's key when it is
    an int or a string of digits (``"00003"`` -> 3), else the trajectory's index in
    ``trajectories``.
    """

    def write(handle: BinaryIO) -> None:
        for index, trajectory in enumerate(trajectories):
            handle.write(frame_tfrecord(encode_sequence_example(trajectory, _int_key(trajectory.key, index))))

    return write_atomically(path, write)


def _int_key(key: Union[str, int], index: int) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return index

