"""Datasets on disk -> FramePairs plus the data spec a checkpoint records.

A dataset directory holds a ``metadata.json`` whose ``format`` key names its reader. Today:
``fastegnn-md nbody`` (see `fastegnn_md.data.nbody` and docs/data-formats.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import DataError
from ..graph import FramePair

NBODY_FORMAT = "fastegnn-md nbody"


@dataclass
class Dataset:
    """The split(s) of one dataset and what a checkpoint must remember about it."""

    path: Path
    format: str
    spec_fields: dict[str, Any]

    def load(self, split: str, max_items: Optional[int] = None) -> list[FramePair]:
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


def open_dataset(path: Union[str, Path], frame_in: int = 30, frame_out: int = 40) -> Dataset:
    """Open a dataset directory; ``frame_in``/``frame_out`` select the jump of N-body data."""
    path = Path(path)
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
