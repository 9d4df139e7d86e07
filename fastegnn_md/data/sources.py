"""Moved: opening datasets now goes through the registry of data kinds.

`fastegnn_md.datasets` (`open_dataset`, `open_for_checkpoint`), `fastegnn_md.data.kinds` (the
registry, `Dataset`), and each kind's module: `fastegnn_md.data.nbody_kind`,
`fastegnn_md.adapters.mdanalysis.kind` (`MDOptions`), `fastegnn_md.adapters.sph.kind`
(`SPHOptions`). This module keeps the old names importable; it is application code (it imports
adapters), although it lives in the core's ``data`` package.
"""

from ..adapters.mdanalysis.kind import MDOptions, md_options_for_spec, open_md_trajectory
from ..adapters.mdanalysis.reading import TOPOLOGY_EXTENSIONS, find_topology, resolve_md_files
from ..adapters.sph.kind import (
    DEFAULT_GRAVITY_AXIS,
    GRAVITY_FROM_METADATA,
    SPHOptions,
    is_sph_directory,
    load_sph_pairs,
    metadata_gravity_axis,
    open_sph_directory,
    parse_gravity_axis,
    sph_options_for_spec,
)
from ..conventions import SPLITS
from ..datasets import open_dataset, open_for_checkpoint
from ..spec_keys import MD_FORMAT, NBODY_FORMAT, SPH_FORMAT
from .kinds import Dataset
from .nbody_kind import read_directory_metadata as read_metadata

__all__ = [
    "MDOptions", "md_options_for_spec", "open_md_trajectory", "TOPOLOGY_EXTENSIONS", "find_topology",
    "resolve_md_files", "DEFAULT_GRAVITY_AXIS", "GRAVITY_FROM_METADATA", "SPHOptions", "is_sph_directory",
    "load_sph_pairs", "metadata_gravity_axis", "open_sph_directory", "parse_gravity_axis", "sph_options_for_spec",
    "SPLITS", "open_dataset", "open_for_checkpoint", "MD_FORMAT", "NBODY_FORMAT", "SPH_FORMAT", "Dataset",
    "read_metadata",
]
