"""``metadata.json`` of an SPH dataset directory: reading it and the keys each file format needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from ...errors import DataError
from .trajectory import PathLike

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

