"""The N-body data kind: a directory written by `fastegnn-md nbody generate` (`fastegnn_md.data.nbody`).

Units: dimensionless (the simulator's). A pair is frame ``frame_in`` -> ``frame_out`` of every
system, with the simulator's physical velocities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import spec_keys as keys
from ..conventions import PHYSICAL
from ..errors import DataError
from .kinds import DataKind, Dataset, PathLike
from .nbody import load_nbody


@dataclass
class NBodyOptions:
    """Which stored frames make a pair: ``frame_in`` -> ``frame_out`` (the paper's 30 -> 40)."""

    frame_in: int = 30
    frame_out: int = 40


def read_directory_metadata(path: Path) -> dict[str, Any]:
    """``path/metadata.json`` as a dict; one-line DataError when it is missing or not a JSON object."""
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


class NBodyKind(DataKind):
    name = "nbody"
    order = 30
    format = keys.NBODY_FORMAT
    description = "an N-body dataset directory"
    options_class = NBodyOptions
    plural = "N-body dataset directories"
    data_name = "an N-body dataset"
    train_flags = {"--frames": "frames"}

    def recognises(self, path: Path) -> bool:
        # Last in lookup order: any directory no other kind claims is read as an N-body dataset
        # directory, whose reader then says what is missing (metadata.json, its format, ...).
        return path.is_dir()

    def owns_spec(self, spec: Any) -> bool:
        # Checkpoints trained through the Python API on `load_nbody` pairs carry no format, but
        # do carry the frames; MD specs carry their topology.
        fmt = spec.extra.get(keys.DATASET_FORMAT)
        return fmt == self.format or (fmt is None and keys.FRAME_IN in spec.extra and keys.TOPOLOGY not in spec.extra)

    def make_options(self, values: dict[str, Any], where: str) -> NBodyOptions:
        frames = values.get("frames")
        return NBodyOptions() if frames is None else NBodyOptions(*(int(f) for f in frames))

    def open(self, path: PathLike, options: Any = None) -> Dataset:
        path = Path(path)
        options = options or NBodyOptions()
        meta = read_directory_metadata(path)
        num_frames = int(meta.get("num_frames", 0))
        frame_in, frame_out = options.frame_in, options.frame_out
        if not 0 <= frame_in < frame_out < num_frames:
            raise DataError(f"{path}: frames {frame_in} -> {frame_out} do not fit a dataset of {num_frames} frames")
        frame_dt = float(meta["frame_dt"])
        spec = {
            "units": {"length": "dimensionless", "time": "dimensionless"},
            "dt": (frame_out - frame_in) * frame_dt,
            "frame_stride": frame_out - frame_in,
            "velocity_convention": PHYSICAL,
            "cutoff": None,
            "num_node_attrs": 1,
            "extra": {keys.FRAME_IN: frame_in, keys.FRAME_OUT: frame_out, keys.DATASET_FORMAT: self.format},
        }

        def read_split(split: str, max_items: Any) -> list:
            return load_nbody(path, split, frame_in, frame_out, max_systems=max_items)

        return Dataset(path, self.format, spec, read_split=read_split)

    def options_for_spec(self, spec: Any, **reading: Any) -> NBodyOptions:
        return NBodyOptions(int(spec.extra.get(keys.FRAME_IN, 30)), int(spec.extra.get(keys.FRAME_OUT, 40)))

    def check_fits_spec(self, dataset: Dataset, spec: Any) -> None:
        pass  # the frames are the spec's; N-body graphs always have one attribute (the charge)
