"""SPH particle datasets (Water-3D style) -> FramePairs, without TensorFlow or JAX.

Two on-disk layouts of the same data are read and written (docs/data-formats.md):

* **DeepMind "Learning to simulate"**: ``metadata.json`` + ``{split}.tfrecord``, one
  ``tf.train.SequenceExample`` per trajectory. The TFRecord framing (with its CRC32C checks)
  and the protobuf wire format are decoded here by hand.
* **LagrangeBench**: ``metadata.json`` + ``{split}.h5``, one HDF5 group per trajectory
  (``"00000"``, ...) with ``position`` and ``particle_type``.

Units
-----
Everything is in the dataset's own dimensionless units: lengths as stored (the domain is
``metadata["bounds"]``), and time in frames unless a ``frame_dt`` is given (the dataset's
``metadata["dt"]`` is the physical time between stored frames). Nothing is converted.

Pipeline::

    open_sph_dataset(dir, split) -> SPHTrajectory ... -> frame_pairs(trajectory, jump) -> FramePair
                                                          (particle_types_to_attrs: node_attrs, moving)

Particle types
--------------
The two conventions number particle types differently (``PARTICLE_TYPE_VOCABULARIES``):

* ``"deepmind"``: types 0..8 (DeepMind's nine-type embedding). 3 = kinematic/boundary
  (walls, obstacles: inputs only), 5 = water; Water-3D uses only these two. The other numbers
  (other materials in DeepMind's other datasets) are kept in the vocabulary so the one-hot
  width is the same for every DeepMind dataset.
* ``"lagrangebench"``: 0 = fluid, 1 = solid wall, 2 = moving wall (both kinematic),
  3 = rigid body (predicted, as in LagrangeBench's ``NodeType``); -1 = padding, dropped on read.

A file does not say which convention it uses (LagrangeBench's converter keeps DeepMind's
numbers in ``.h5`` files), so: TFRecord files are ``"deepmind"``; HDF5 files follow
``metadata["particle_type_convention"]`` when present, else `infer_convention`.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, Sequence, Union

import google_crc32c
import h5py
import numpy as np

from ..errors import DataError
from ..graph import FramePair
from ..io import _default_mode, write_atomically

PathLike = Union[str, os.PathLike]

#: The dataset's own dimensionless units (see the module docstring).
UNITS = {"length": "dimensionless", "time": "dimensionless"}

SPLITS = ("train", "valid", "test")
FORMATS = ("h5", "tfrecord")

#: Keys of a DeepMind ``metadata.json`` (all required to read a ``.tfrecord`` split).
DEEPMIND_METADATA_KEYS = (
    "bounds", "sequence_length", "default_connectivity_radius", "dim", "dt",
    "vel_mean", "vel_std", "acc_mean", "acc_std",
)
#: Keys required to read an ``.h5`` split (LagrangeBench files carry more, with other names
#: for the sequence lengths, so only what every SPH consumer needs is required).
LAGRANGEBENCH_METADATA_KEYS = ("bounds", "default_connectivity_radius", "dim", "dt")
REQUIRED_METADATA_KEYS = {"tfrecord": DEEPMIND_METADATA_KEYS, "h5": LAGRANGEBENCH_METADATA_KEYS}

#: Type numbers each convention one-hot encodes, in node-attribute column order.
PARTICLE_TYPE_VOCABULARIES: dict[str, tuple[int, ...]] = {
    "deepmind": tuple(range(9)),
    "lagrangebench": (0, 1, 2, 3),
}
#: Types whose motion is prescribed (walls, obstacles): inputs only, ``moving`` = False.
KINEMATIC_TYPES: dict[str, tuple[int, ...]] = {"deepmind": (3,), "lagrangebench": (1, 2)}
DEEPMIND_KINEMATIC = 3
DEEPMIND_WATER = 5
LAGRANGEBENCH_FLUID = 0
#: LagrangeBench's padding type, for datasets whose trajectories have different particle counts.
PADDING_TYPE = -1

#: The FastEGNN authors' Water-3D sampling: this many random input frames per trajectory ...
PAPER_NUM_STARTS = 15
#: ... drawn from the first this many frames.
PAPER_START_WINDOW = 250
#: ``velocity`` choices of `frame_pairs` ("forward" is an alias of "paper").
SPH_VELOCITY_CONVENTIONS = ("paper", "backward")

_TFRECORD_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_CRC_MASK_DELTA = 0xA282EAD8


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SPHTrajectory:
    """One simulated trajectory of N particles.

    Attributes
    ----------
    positions : (T, N, dim) float32, dataset length unit; frame t is t * ``metadata["dt"]``
        after frame 0.
    particle_type : (N,) int64 type numbers (meaning: ``convention``; padding already dropped).
    key : the trajectory's name in its file: the HDF5 group name (str) or the TFRecord context
        ``key`` (int).
    metadata : the dataset's ``metadata.json`` dict (shared, not copied) when read through
        `open_sph_dataset`, else None.
    convention : ``"deepmind"`` or ``"lagrangebench"`` numbering of ``particle_type``, or None
        (unknown: `trajectory_convention` infers it).
    """

    positions: np.ndarray
    particle_type: np.ndarray
    key: Union[str, int]
    metadata: Optional[dict[str, Any]] = field(default=None, repr=False)
    convention: Optional[str] = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float32)
        self.particle_type = np.asarray(self.particle_type, dtype=np.int64)
        if self.positions.ndim != 3:
            raise ValueError(f"SPHTrajectory.positions must have shape (T, N, dim), got {self.positions.shape}")
        if self.particle_type.shape != (self.positions.shape[1],):
            raise ValueError(
                f"SPHTrajectory.particle_type must have shape ({self.positions.shape[1]},), "
                f"got {self.particle_type.shape}"
            )
        if self.convention is not None:
            _check_convention(self.convention)

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_particles(self) -> int:
        return int(self.positions.shape[1])

    @property
    def dim(self) -> int:
        return int(self.positions.shape[2])


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def read_metadata(directory: PathLike, fmt: Optional[str] = None) -> dict[str, Any]:
    """``directory/metadata.json`` as a dict.

    Parameters
    ----------
    directory : the dataset directory.
    fmt : ``"tfrecord"`` (requires `DEEPMIND_METADATA_KEYS`), ``"h5"`` (requires
        `LAGRANGEBENCH_METADATA_KEYS`) or None (requires the keys both need).

    Raises
    ------
    DataError
        If the file is missing, not valid JSON, not a JSON object, lacks a required key, or has
        a ``dim`` other than 2 or 3.
    """
    path = Path(directory) / "metadata.json"
    if not path.is_file():
        raise DataError(f"{path}: no such file (an SPH dataset directory needs metadata.json)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: must hold a JSON object, got {type(metadata).__name__}")
    if fmt is None:
        required: Sequence[str] = [k for k in LAGRANGEBENCH_METADATA_KEYS if k in DEEPMIND_METADATA_KEYS]
    elif fmt in REQUIRED_METADATA_KEYS:
        required = REQUIRED_METADATA_KEYS[fmt]
    else:
        raise ValueError(f"fmt must be one of {FORMATS} or None, got {fmt!r}")
    missing = [key for key in required if key not in metadata]
    if missing:
        kind = f" for {fmt} splits" if fmt else ""
        raise DataError(f"{path}: missing required key(s) {', '.join(missing)}{kind}")
    if "dim" in metadata and metadata["dim"] not in (2, 3):
        raise DataError(f"{path}: dim must be 2 or 3, got {metadata['dim']!r}")
    return metadata


# --------------------------------------------------------------------------------------------
# LagrangeBench HDF5
# --------------------------------------------------------------------------------------------


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

    return _write_path_atomically(Path(path), write)


def _write_path_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Like `fastegnn_md.io.write_atomically`, for libraries (h5py) that write to a path, not a handle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        with open(tmp, "rb+") as handle:  # h5py closes without fsync: flush to disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------
# TFRecord framing
# --------------------------------------------------------------------------------------------


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data`` (rotated right by 15 bits plus a constant, mod 2^32)."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord_records(path: PathLike) -> Iterator[bytes]:
    """The payloads of a TFRecord file, checking both CRCs of every record.

    Record layout: uint64 little-endian length, uint32 masked CRC32C of those 8 bytes, the
    payload, uint32 masked CRC32C of the payload.

    Raises
    ------
    DataError
        ``"<file>: record <i>: <what>"`` for a length or data CRC mismatch or a record cut short
        (header or payload shorter than declared).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return _iter_records(path)


def _iter_records(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        index = 0
        while True:
            header = handle.read(_TFRECORD_HEADER)
            if not header:
                return
            where = f"{path}: record {index}"
            if len(header) < _TFRECORD_HEADER:
                raise DataError(f"{where}: header has {len(header)} of 12 bytes (file truncated)")
            length_bytes = header[:8]
            (length_crc,) = struct.unpack("<I", header[8:])
            if masked_crc32c(length_bytes) != length_crc:
                raise DataError(f"{where}: length CRC mismatch (file corrupt)")
            (length,) = struct.unpack("<Q", length_bytes)
            remaining = size - handle.tell()
            if length + 4 > remaining:  # checked before reading: never allocate a bogus length
                raise DataError(
                    f"{where}: declares {length} data bytes + 4 CRC bytes but only {remaining} remain (file truncated)"
                )
            data = handle.read(length)
            (data_crc,) = struct.unpack("<I", handle.read(4))
            if masked_crc32c(data) != data_crc:
                raise DataError(f"{where}: data CRC mismatch (file corrupt)")
            yield data
            index += 1


def frame_tfrecord(data: bytes) -> bytes:
    """One TFRecord record holding ``data`` (header, payload and both CRCs)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# --------------------------------------------------------------------------------------------
# Protobuf wire format (only what tf.train.SequenceExample needs)
# --------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """Bad protobuf bytes; turned into a DataError naming the file and record."""


_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field; value is an int (varint) or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32, _BYTES):
            if wire == _BYTES:
                size, pos = _read_varint(buf, pos)
            else:
                size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise _Malformed(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        else:  # 3/4: deprecated groups, 6/7: invalid; none occur in tf.train messages
            raise _Malformed(f"field {number} has unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class _Feature:
    kind: str  # "bytes", "float", "int64" or "empty"
    values: list[Any]


def _decode_feature(buf: memoryview) -> _Feature:
    # Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    feature = _Feature("empty", [])
    for number, wire, value in _fields(buf):
        if number not in (1, 2, 3):
            continue
        if wire != _BYTES:
            raise _Malformed(f"Feature field {number} is not a message")
        if number == 1:
            feature = _Feature("bytes", _decode_bytes_list(value))
        elif number == 2:
            feature = _Feature("float", _decode_float_list(value))
        else:
            feature = _Feature("int64", _decode_int64_list(value))
    return feature


def _decode_bytes_list(buf: memoryview) -> list[memoryview]:
    values = []
    for number, wire, value in _fields(buf):
        if number == 1:
            if wire != _BYTES:
                raise _Malformed("BytesList value is not length-delimited")
            values.append(value)
    return values


def _decode_float_list(buf: memoryview) -> list[float]:
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _BYTES:  # packed (the default for repeated scalars)
            if len(value) % 4:
                raise _Malformed("packed FloatList length is not a multiple of 4")
            values.extend(np.frombuffer(value, dtype="<f4").tolist())
        elif wire == _FIXED32:
            values.append(struct.unpack("<f", value)[0])
        else:
            raise _Malformed(f"FloatList value has wire type {wire}")
    return values


def _decode_int64_list(buf: memoryview) -> list[int]:
    values: list[int] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _BYTES:  # packed
            pos = 0
            while pos < len(value):
                item, pos = _read_varint(value, pos)
                values.append(_signed64(item))
        elif wire == _VARINT:
            values.append(_signed64(value))
        else:
            raise _Malformed(f"Int64List value has wire type {wire}")
    return values


def _decode_map_entry(buf: memoryview, what: str) -> tuple[str, memoryview]:
    # map<string, V> entries are messages { string key = 1; V value = 2; }
    key, value = b"", memoryview(b"")
    for number, wire, item in _fields(buf):
        if number in (1, 2) and wire != _BYTES:
            raise _Malformed(f"{what} map entry field {number} is not length-delimited")
        if number == 1:
            key = bytes(item)
        elif number == 2:
            value = item
    try:
        return key.decode("utf-8"), value
    except UnicodeDecodeError:
        raise _Malformed(f"{what} key is not UTF-8") from None


def _decode_features(buf: memoryview, into: dict[str, _Feature]) -> None:
    # Features { map<string, Feature> feature = 1; }
    for number, wire, value in _fields(buf):
        if number == 1:
            if wire != _BYTES:
                raise _Malformed("Features entry is not length-delimited")
            key, feature = _decode_map_entry(value, "Features")
            into[key] = _decode_feature(feature)


def _decode_feature_lists(buf: memoryview, into: dict[str, list[_Feature]]) -> None:
    # FeatureLists { map<string, FeatureList> feature_list = 1; }  FeatureList { repeated Feature feature = 1; }
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire != _BYTES:
            raise _Malformed("FeatureLists entry is not length-delimited")
        key, feature_list = _decode_map_entry(value, "FeatureLists")
        features = []
        for inner_number, inner_wire, inner in _fields(feature_list):
            if inner_number == 1:
                if inner_wire != _BYTES:
                    raise _Malformed("FeatureList entry is not length-delimited")
                features.append(_decode_feature(inner))
        into[key] = features


def _decode_sequence_example(data: bytes) -> tuple[dict[str, _Feature], dict[str, list[_Feature]]]:
    # SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }; a message field
    # that occurs twice is merged, as protobuf parsers do.
    context: dict[str, _Feature] = {}
    lists: dict[str, list[_Feature]] = {}
    for number, wire, value in _fields(memoryview(data)):
        if number in (1, 2) and wire != _BYTES:
            raise _Malformed(f"SequenceExample field {number} is not a message")
        if number == 1:
            _decode_features(value, context)
        elif number == 2:
            _decode_feature_lists(value, lists)
    return context, lists


# Encoder (for write_deepmind)


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _message_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _BYTES) + _varint(len(payload)) + payload


def _bytes_feature(values: Sequence[bytes]) -> bytes:
    return _message_field(1, b"".join(_message_field(1, value) for value in values))


def _int64_feature(values: Sequence[int]) -> bytes:
    return _message_field(3, _message_field(1, b"".join(_varint(int(value)) for value in values)))


def _map_entry(key: str, value: bytes) -> bytes:
    return _message_field(1, key.encode("utf-8")) + _message_field(2, value)


def encode_sequence_example(trajectory: SPHTrajectory, key: int) -> bytes:
    """``tf.train.SequenceExample`` bytes of one trajectory in DeepMind's layout.

    Context: ``key`` (Int64List, one value), ``particle_type`` (BytesList, one value: the
    int64 little-endian bytes of the types). Feature list ``position``: one BytesList value
    per frame, the float32 little-endian bytes of that frame's (N, dim) positions.
    """
    types = np.ascontiguousarray(trajectory.particle_type, dtype="<i8").tobytes()
    context = b"".join(
        _message_field(1, _map_entry(name, feature))
        for name, feature in (("key", _int64_feature([key])), ("particle_type", _bytes_feature([types])))
    )
    positions = np.ascontiguousarray(trajectory.positions, dtype="<f4")
    frames = b"".join(_message_field(1, _bytes_feature([frame.tobytes()])) for frame in positions)
    lists = _message_field(1, _map_entry("position", frames))
    return _message_field(1, context) + _message_field(2, lists)


# --------------------------------------------------------------------------------------------
# DeepMind TFRecord
# --------------------------------------------------------------------------------------------


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
            context, lists = _decode_sequence_example(data)
        except _Malformed as exc:
            raise DataError(f"{where}: malformed SequenceExample ({exc})") from None
        yield _trajectory_from_example(where, index, context, lists, dim)


def _trajectory_from_example(
    where: str, index: int, context: dict[str, _Feature], lists: dict[str, list[_Feature]], dim: int
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


# --------------------------------------------------------------------------------------------
# Datasets: format detection, splits, writing
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Particle types -> node attributes, and FramePairs
# --------------------------------------------------------------------------------------------


def _check_convention(convention: str) -> None:
    if convention not in PARTICLE_TYPE_VOCABULARIES:
        raise ValueError(f"convention must be one of {sorted(PARTICLE_TYPE_VOCABULARIES)}, got {convention!r}")


def infer_convention(particle_type: np.ndarray) -> str:
    """Guess the numbering of ``particle_type``: ``"deepmind"`` if any type is 4..8 (DeepMind's
    water is 5), else ``"lagrangebench"``. Ambiguous data (e.g. only types 0 and 3) should name
    its convention in ``metadata["particle_type_convention"]`` instead."""
    types = np.asarray(particle_type)
    return "deepmind" if bool(np.any((types >= 4) & (types <= 8))) else "lagrangebench"


def trajectory_convention(trajectory: SPHTrajectory) -> str:
    """The trajectory's declared convention, else `infer_convention` of its types."""
    return trajectory.convention or infer_convention(trajectory.particle_type)


def particle_types_to_attrs(particle_type: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Node attributes and the moving mask of particles with these types.

    Parameters
    ----------
    particle_type : (N,) integer type numbers.
    convention : ``"deepmind"`` (vocabulary 0..8, K = 9; type 3 kinematic) or
        ``"lagrangebench"`` (vocabulary 0 fluid, 1 solid wall, 2 moving wall, 3 rigid body,
        K = 4; types 1 and 2 kinematic). See `PARTICLE_TYPE_VOCABULARIES`.

    Returns
    -------
    node_attrs : (N, K) float64 one-hot; column j is ``PARTICLE_TYPE_VOCABULARIES[convention][j]``.
    moving : (N,) bool, False for kinematic particles (walls), whose motion is prescribed:
        they are graph inputs only, never predicted or scored.

    Raises
    ------
    DataError
        If a type is outside the vocabulary (including LagrangeBench's padding -1, which the
        readers drop).
    """
    _check_convention(convention)
    types = np.asarray(particle_type)
    if types.ndim != 1:
        raise ValueError(f"particle_type must have shape (N,), got {types.shape}")
    vocabulary = np.asarray(PARTICLE_TYPE_VOCABULARIES[convention])
    column = np.searchsorted(vocabulary, types)
    known = (column < vocabulary.size) & (vocabulary[np.minimum(column, vocabulary.size - 1)] == types)
    if not known.all():
        bad = sorted({int(value) for value in types[~known]})
        raise DataError(
            f"particle types {bad} are not in the {convention} vocabulary {tuple(vocabulary.tolist())}"
        )
    attrs = np.zeros((types.size, vocabulary.size), dtype=np.float64)
    attrs[np.arange(types.size), column] = 1.0
    moving = ~np.isin(types, KINEMATIC_TYPES[convention])
    return attrs, moving


def valid_input_frames(num_frames: int, jump: int, velocity: str) -> range:
    """Input frames t with a pair t -> t + jump: all t < T - jump, and t >= jump for "backward"."""
    first = jump if _velocity_name(velocity) == "backward" else 0
    return range(first, max(num_frames - jump, first))


def paper_starts(
    num_frames: int,
    jump: int,
    velocity: str = "paper",
    rng: Union[np.random.Generator, int, None] = 0,
    num_starts: int = PAPER_NUM_STARTS,
    window: int = PAPER_START_WINDOW,
) -> list[int]:
    """The FastEGNN authors' Water-3D sampling: ``num_starts`` random input frames among the
    first ``window`` frames (only those with a valid pair, `valid_input_frames`), drawn without
    replacement and returned sorted; all of them when fewer exist. ``rng``: a Generator or a
    seed (the same seed gives the same frames)."""
    valid = valid_input_frames(num_frames, jump, velocity)
    candidates = np.arange(valid.start, min(valid.stop, window))
    if candidates.size == 0:
        return []
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    chosen = generator.choice(candidates, size=min(num_starts, candidates.size), replace=False)
    return sorted(int(t) for t in chosen)


def _velocity_name(velocity: str) -> str:
    if velocity == "forward":  # the name the MD adapter and checkpoints use for the same thing
        return "paper"
    if velocity not in SPH_VELOCITY_CONVENTIONS:
        raise ValueError(f"velocity must be one of {SPH_VELOCITY_CONVENTIONS} (or 'forward'), got {velocity!r}")
    return velocity


def frame_pairs(
    trajectory: SPHTrajectory,
    jump: int,
    starts: Optional[Iterable[int]] = None,
    velocity: str = "paper",
    frame_dt: float = 1.0,
    rng: Union[np.random.Generator, int, None] = 0,
    convention: Optional[str] = None,
) -> list[FramePair]:
    """One FramePair per input frame t: (x_t, v_t) -> x_{t+jump}, for a 3-D trajectory.

    Parameters
    ----------
    trajectory : positions (T, N, 3) in the dataset length unit.
    jump : frames between input and target (the authors' script uses 20, their paper 15).
    starts : input frames t. Default: `paper_starts` (the authors' sampling: 15 random frames
        among the first 250 that have a pair, drawn with ``rng``).
    velocity : input velocity convention:
        ``"paper"`` (alias ``"forward"``): v_t = (x_{t+1} - x_t) / frame_dt, the FastEGNN
        authors' Water-3D loader (with frame_dt = 1 exactly their x[t+1] - x[t]). It peeks one
        frame into the future: fine for one-shot numbers, unusable in a rollout.
        ``"backward"``: v_t = (x_t - x_{t-jump}) / (jump * frame_dt), computable by a rollout
        from its own outputs; needs t >= jump.
    frame_dt : time between stored frames (1.0: time in frames; ``metadata["dt"]`` for the
        simulation's time unit).
    rng : Generator or seed for the default ``starts``.
    convention : particle-type numbering (default `trajectory_convention`).

    Returns
    -------
    Pairs with float64 positions/velocities/targets (per-pair copies), ``node_attrs`` the
    one-hot types (N, K) and ``moving`` the non-kinematic particles (`particle_types_to_attrs`;
    both shared read-only arrays), ``target_velocities`` = (x_{t+jump} - x_t) / (jump *
    frame_dt) for "backward" (what a rollout feeds its next jump), None for "paper", and
    ``metadata``: ``dt`` = jump * frame_dt, ``frames`` = (t, t + jump), ``source`` (the
    trajectory key), ``velocity_convention`` (``"forward"`` or ``"backward"``, the checkpoint
    names), ``particle_type_convention``.

    Raises
    ------
    DataError
        For non-3-D positions, unknown particle types, a trajectory too short for one pair, or
        an explicit start without a pair.
    """
    name = _velocity_name(velocity)
    if isinstance(jump, bool) or not isinstance(jump, (int, np.integer)) or jump < 1:
        raise ValueError(f"jump must be a positive integer, got {jump!r}")
    jump = int(jump)
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    where = f"trajectory {trajectory.key}"
    if trajectory.dim != 3:
        raise DataError(f"{where}: positions are {trajectory.dim}-D; FramePair needs 3-D")
    convention = convention or trajectory_convention(trajectory)
    try:
        attrs, moving = particle_types_to_attrs(trajectory.particle_type, convention)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    attrs.flags.writeable = False  # shared by every pair: an in-place edit must fail, not leak
    moving.flags.writeable = False

    x = trajectory.positions
    valid = valid_input_frames(trajectory.num_frames, jump, name)
    if len(valid) == 0:
        need = 2 * jump + 1 if name == "backward" else jump + 1
        raise DataError(
            f"{where}: {trajectory.num_frames} frames are too few for jump {jump} with {name!r} "
            f"velocities (need at least {need})"
        )
    if starts is None:
        inputs = paper_starts(trajectory.num_frames, jump, name, rng)
    else:
        inputs = [int(t) for t in starts]
        bad = [t for t in inputs if t not in valid]
        if bad:
            raise DataError(
                f"{where}: input frame(s) {bad} have no pair for jump {jump} with {name!r} velocities "
                f"(valid input frames: {valid.start}..{valid.stop - 1})"
            )

    span = jump * frame_dt
    pairs = []
    for t in inputs:
        current = x[t].astype(np.float64)
        target = x[t + jump].astype(np.float64)
        if name == "backward":
            vel = (current - x[t - jump].astype(np.float64)) / span
            target_vel: Optional[np.ndarray] = (target - current) / span
        else:
            vel = (x[t + 1].astype(np.float64) - current) / frame_dt
            target_vel = None
        pairs.append(
            FramePair(
                positions=current,
                velocities=vel,
                target_positions=target,
                node_attrs=attrs,
                target_velocities=target_vel,
                moving=moving,
                metadata={
                    "dt": span,
                    "frames": (t, t + jump),
                    "source": str(trajectory.key),
                    "velocity_convention": "backward" if name == "backward" else "forward",
                    "particle_type_convention": convention,
                },
            )
        )
    return pairs


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
