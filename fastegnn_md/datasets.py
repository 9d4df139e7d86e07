"""Opening data of every kind, for the command line and the Python API (application layer).

Imports every shipped data kind, so the registry of `fastegnn_md.data.kinds` knows them (in
their ``order``: MD trajectory files, SPH dataset directories, then any other directory as
N-body data), and offers the
two ways in:

* `open_dataset`: a path and reading options -> `Dataset` (train/valid/test FramePairs and the
  data spec a checkpoint records);
* `open_for_checkpoint`: a path read the way a checkpoint's data were read in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .adapters.mdanalysis.kind import MDOptions, MDTrajectoryKind
from .adapters.sph.kind import SPHDatasetKind, SPHOptions
from .data.kinds import DataKind, Dataset, describe_path, kind_for_path, kind_for_spec, registered_kinds
from .data.nbody_kind import NBodyKind, NBodyOptions
from .errors import DataError

PathLike = Union[str, Path]

#: The shipped kinds, in lookup order (importing their modules above registered them).
SHIPPED_KINDS = (MDTrajectoryKind, SPHDatasetKind, NBodyKind)


def open_dataset(
    path: PathLike,
    frame_in: int = 30,
    frame_out: int = 40,
    md: Optional[MDOptions] = None,
    sph: Optional[SPHOptions] = None,
) -> Dataset:
    """Open a dataset directory (N-body or SPH) or an MD trajectory file.

    The options of the kind the path turns out to be are used: ``frame_in``/``frame_out`` for
    N-body data, ``md`` (default `MDOptions()`) for a trajectory, ``sph`` (default
    `SPHOptions()`) for an SPH directory. Raises DataError (one line) for a missing path,
    unreadable files, no topology found, a selection matching nothing, a trajectory too short, ...
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory or trajectory file")
    kind = kind_for_path(path)
    given = (NBodyOptions(frame_in, frame_out), md, sph)
    return kind.open(path, next((options for options in given if isinstance(options, kind.options_class)), None))


def open_for_checkpoint(
    path: PathLike,
    spec: Any,
    topology: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
    progress: bool = True,
) -> Dataset:
    """Open data to evaluate a checkpoint whose DataSpec is ``spec``, read as it was trained.

    The checkpoint's kind reads the path with the options its spec records (N-body frames; SPH
    jump, velocity convention, start sampling, cutoff and gravity axis; MD selection, jump,
    stride, velocity convention and cutoff) and checks that the data fit. Raises DataError (one
    line) when the path holds another kind of data, when the jump spans another time than the
    checkpoint learned, or when the node attributes come from another source (charges vs masses,
    another particle-type convention); CheckpointError when the node count or attribute width
    differ.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory or trajectory file")
    trained = kind_for_spec(spec)
    here = kind_for_path(path)
    if here is not trained:
        raise DataError(f"{path}: is {here.description}, but the checkpoint was trained on {trained.data_name}")
    return trained.open_for_checkpoint(path, spec, topology=topology, cache_dir=cache_dir, progress=progress)


__all__ = [
    "DataKind", "Dataset", "MDOptions", "NBodyOptions", "SHIPPED_KINDS", "SPHOptions", "describe_path",
    "kind_for_path", "kind_for_spec", "open_dataset", "open_for_checkpoint", "registered_kinds",
]
