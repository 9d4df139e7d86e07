"""MDAnalysis adapter: any topology + trajectory MDAnalysis reads -> FramePairs, and trajectory writers.

Installed as `fastegnn_md.adapters.mdanalysis`. Units: MDAnalysis hands out Å, ps, Å/ps, amu and
e (its base units), which are fastegnn-md's MD units, so nothing here converts units.

========================  ==========================================================================
module                    job
========================  ==========================================================================
`.reading`                topology discovery, opening files (one-line errors), atom selection, node
                          attributes, reading frames
`.whole`                  molecules made whole across periodic boundaries
`.pairs`                  FramePairs from frames (conventions and splits from `fastegnn_md.conventions`)
`.dataset`                `load_md_pairs`: a whole trajectory as train/valid/test pairs, with a cache
`.writers`                streamed trajectories, PDB topologies, virtual-node pseudo-atoms
`.kind`                   the ``md`` data kind (`MDOptions`, opening for a checkpoint)
========================  ==========================================================================

Every name this adapter offered as a single module is importable from here.
"""

from ...conventions import PAPER_ADK_RATIOS, SPLITS, contiguous_splits, valid_input_frames
from .dataset import CACHE_FORMAT_VERSION, MDDataset, cache_key, load_md_pairs
from .kind import MOLECULAR_LENGTH_SCALE, MDOptions, MDTrajectoryKind, md_options_for_spec, open_md_trajectory
from .pairs import frame_pairs
from .reading import (
    CARBON_MASS,
    MAX_MESSAGE,
    MAX_TOPOLOGY_PDB_ATOMS,
    TOPOLOGY_EXTENSIONS,
    UNITS,
    atom_masses,
    carries_topology,
    find_topology,
    load_trajectory,
    node_attributes,
    open_universe,
    resolve_md_files,
    select_atoms,
    topology_name,
    topology_pdb_text,
    trajectory_frames,
    trajectory_name,
)
from .whole import (
    MAKE_WHOLE_POLICY,
    WHOLE_CHAIN,
    WHOLE_NONE,
    WHOLE_UNWRAP,
    MinimumImageChain,
    chain_runs,
    make_whole,
    whole_method,
)
from .writers import (
    StreamingTrajectoryWriter,
    standalone_universe,
    virtual_node_universe,
    write_pdb,
    writer_extension,
)

__all__ = [
    "PAPER_ADK_RATIOS", "SPLITS", "contiguous_splits", "valid_input_frames",
    "CACHE_FORMAT_VERSION", "MDDataset", "cache_key", "load_md_pairs",
    "MOLECULAR_LENGTH_SCALE", "MDOptions", "MDTrajectoryKind", "md_options_for_spec", "open_md_trajectory",
    "frame_pairs",
    "CARBON_MASS", "MAX_MESSAGE", "MAX_TOPOLOGY_PDB_ATOMS", "TOPOLOGY_EXTENSIONS", "UNITS", "atom_masses",
    "carries_topology", "find_topology", "load_trajectory", "node_attributes", "open_universe",
    "resolve_md_files", "select_atoms", "topology_name", "topology_pdb_text", "trajectory_frames",
    "trajectory_name",
    "MAKE_WHOLE_POLICY", "WHOLE_CHAIN", "WHOLE_NONE", "WHOLE_UNWRAP", "MinimumImageChain", "chain_runs",
    "make_whole", "whole_method",
    "StreamingTrajectoryWriter", "standalone_universe", "virtual_node_universe", "write_pdb", "writer_extension",
]
