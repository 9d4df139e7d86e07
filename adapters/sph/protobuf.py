"""The protobuf wire format of ``tf.train.SequenceExample``: a decoder and an encoder for what
DeepMind's SPH records hold (no protobuf or TensorFlow dependency)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .trajectory import SPHTrajectory


class MalformedMessage(Exception):
    """Bad protobuf bytes; turned into a DataError naming the file and record."""


_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise MalformedMessage("varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedMessage("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field; value is an int (varint) or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32, _BYTES):
            if wire == _BYTES:
                size, pos = _read_varint(buf, pos)
            else:
                size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise MalformedMessage(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        else:  # 3/4: deprecated groups, 6/7: invalid; none occur in tf.train messages
            raise MalformedMessage(f"field {number} has unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class Feature:
    kind: str  # "bytes", "float", "int64" or "empty"
    values: list[Any]


def _decode_feature(buf: memoryview) -> Feature:
    # Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    feature = Feature("empty", [])
    for number, wire, value in _fields(buf):
        if number not in (1, 2, 3):
            continue
        if wire != _BYTES:
            raise MalformedMessage(f"Feature field {number} is not a message")
        if number == 1:
            feature = Feature("bytes", _decode_bytes_list(value))
        elif number == 2:
            feature = Feature("float", _decode_float_list(value))
        else:
            feature = Feature("int64", _decode_int64_list(value))
    return feature


def _decode_bytes_list(buf: memoryview) -> list[memoryview]:
    values = []
    for number, wire, value in _fields(buf):
        if number == 1:
            if wire != _BYTES:
                raise MalformedMessage("BytesList value is not length-delimited")
            values.append(value)
    return values


def _decode_float_list(buf: memoryview) -> list[float]:
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _BYTES:  # packed (the default for repeated scalars)
            if len(value) % 4:
                raise MalformedMessage("packed FloatList length is not a multiple of 4")
            values.extend(np.frombuffer(value, dtype="<f4").tolist())
        elif wire == _FIXED32:
            values.append(struct.unpack("<f", value)[0])
        else:
            raise MalformedMessage(f"FloatList value has wire type {wire}")
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
            raise MalformedMessage(f"Int64List value has wire type {wire}")
    return values


def _decode_map_entry(buf: memoryview, what: str) -> tuple[str, memoryview]:
    # map<string, V> entries are messages { string key = 1; V value = 2; }
    key, value = b"", memoryview(b"")
    for number, wire, item in _fields(buf):
        if number in (1, 2) and wire != _BYTES:
            raise MalformedMessage(f"{what} map entry field {number} is not length-delimited")
        if number == 1:
            key = bytes(item)
        elif number == 2:
            value = item
    try:
        return key.decode("utf-8"), value
    except UnicodeDecodeError:
        raise MalformedMessage(f"{what} key is not UTF-8") from None


def _decode_features(buf: memoryview, into: dict[str, Feature]) -> None:
    # Features { map<string, Feature> feature = 1; }
    for number, wire, value in _fields(buf):
        if number == 1:
            if wire != _BYTES:
                raise MalformedMessage("Features entry is not length-delimited")
            key, feature = _decode_map_entry(value, "Features")
            into[key] = _decode_feature(feature)


def _decode_feature_lists(buf: memoryview, into: dict[str, list[Feature]]) -> None:
    # FeatureLists { map<string, FeatureList> feature_list = 1; }  FeatureList { repeated Feature feature = 1; }
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire != _BYTES:
            raise MalformedMessage("FeatureLists entry is not length-delimited")
        key, feature_list = _decode_map_entry(value, "FeatureLists")
        features = []
        for inner_number, inner_wire, inner in _fields(feature_list):
            if inner_number == 1:
                if inner_wire != _BYTES:
                    raise MalformedMessage("FeatureList entry is not length-delimited")
                features.append(_decode_feature(inner))
        into[key] = features


def decode_sequence_example(data: bytes) -> tuple[dict[str, Feature], dict[str, list[Feature]]]:
    # SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }; a message field
    # that occurs twice is merged, as protobuf parsers do.
    context: dict[str, Feature] = {}
    lists: dict[str, list[Feature]] = {}
    for number, wire, value in _fields(memoryview(data)):
        if number in (1, 2) and wire != _BYTES:
            raise MalformedMessage(f"SequenceExample field {number} is not a message")
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

