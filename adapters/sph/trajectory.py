"""One SPH trajectory and what its particle types mean (node attributes, walls).

Units: the dataset's own (lengths as stored; frame t is t * ``metadata["dt"]`` after frame 0).

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

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from ...errors import DataError

PathLike = Union[str, os.PathLike]
#: The dataset's own dimensionless units (time in frames unless a frame_dt is given).
UNITS = {"length": "dimensionless", "time": "dimensionless"}

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

