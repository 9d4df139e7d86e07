"""TFRecord framing, read and written without TensorFlow, with both CRC-32C checks of every record.

Record layout: uint64 little-endian length, uint32 masked CRC32C of those 8 bytes, the payload,
uint32 masked CRC32C of the payload."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import google_crc32c

from ...errors import DataError
from .trajectory import PathLike

_TFRECORD_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_CRC_MASK_DELTA = 0xA282EAD8


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
