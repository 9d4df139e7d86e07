"""OpenMM adapter: reference MD from a structure file (`simulate`) and learned jumps (`FastEGNNStepper`).

Units
-----
OpenMM works in nm, ps, kJ/mol; fastegnn-md works in Å, ps, amu. Conversion happens here, at the
boundary (`nm_to_angstrom`, `angstrom_to_nm`): trajectories are written through MDAnalysis writers
in Å and Å/ps (what every MDAnalysis reader returns), the stepper hands the model Å and Å/ps and
puts its prediction back in nm, and every public argument says its unit (``*_nm``, ``*_ps``,
``*_fs``, ``temperature_k``).

Submodules
----------
``units``
    the OpenMM imports (``openmm``, ``app``, ``unit``; one ImportError with the install hint) and
    the nm <-> Å conversions.
``system``
    `SimulationSettings`, the `FORCE_FIELDS` table, CHARMM -> Amber renames, `prepare_structure`
    (pdbfixer), `build_system`, `make_simulation`, `minimise_and_equilibrate`, and the shared
    helpers `select_atoms`, `quiet_mdanalysis`, `step_with_bar`.
``reference``
    the resumable reference run: `simulate`, `SimulationResult`, `write_trajectory`,
    `checkpoint_path`, `topology_path` and the checkpoint save/resume.
``stepper``
    `FastEGNNStepper` (learned jumps inside an ``app.Simulation``) with `place_unselected`,
    `kabsch_transform` and `capped_steepest_descent`.
``validate``
    ``fastegnn-md validate``: the stepper against ordinary MD of the same system (not imported
    here; ``fastegnn_md.adapters.openmm_validate`` re-exports it).

Everything public is re-exported here, so ``from fastegnn_md.adapters.openmm import ...`` works as
it did when this was one module. Code that monkeypatches a function must patch the submodule that
looks it up (e.g. ``reference.make_simulation`` for `simulate`).
"""

from __future__ import annotations

from .reference import (
    CHECKPOINT_VERSION,
    SimulationResult,
    _selected_state,
    checkpoint_path,
    simulate,
    topology_path,
    write_trajectory,
)
from .stepper import (
    ENERGY_TOLERANCE_PER_ATOM,
    RESTRAINT_K_PARAMETER,
    VELOCITY_POLICIES,
    FastEGNNStepper,
    capped_steepest_descent,
    kabsch_transform,
    place_unselected,
)
from .system import (
    CHARMM_ATOM_RENAMES,
    CHARMM_RESIDUE_RENAMES,
    FORCE_FIELDS,
    PathLike,
    SimulationSettings,
    build_system,
    make_simulation,
    minimise_and_equilibrate,
    prepare_structure,
    quiet_mdanalysis,
    rename_charmm_to_amber,
    select_atoms,
    step_with_bar,
)
from .units import NM_TO_ANGSTROM, angstrom_to_nm, app, nm_to_angstrom, openmm, unit

# The helpers' names from when this was one module (fastegnn_md.adapters.openmm._select, ...).
_select = select_atoms
_quiet_mdanalysis = quiet_mdanalysis
_step_with_bar = step_with_bar

__all__ = [
    "CHARMM_ATOM_RENAMES", "CHARMM_RESIDUE_RENAMES", "CHECKPOINT_VERSION", "ENERGY_TOLERANCE_PER_ATOM",
    "FORCE_FIELDS", "NM_TO_ANGSTROM", "RESTRAINT_K_PARAMETER", "VELOCITY_POLICIES", "FastEGNNStepper",
    "PathLike", "SimulationResult", "SimulationSettings", "angstrom_to_nm", "app", "build_system",
    "capped_steepest_descent", "checkpoint_path", "kabsch_transform", "make_simulation",
    "minimise_and_equilibrate", "nm_to_angstrom", "openmm", "place_unselected", "prepare_structure",
    "quiet_mdanalysis", "rename_charmm_to_amber", "select_atoms", "simulate", "step_with_bar",
    "topology_path", "unit", "write_trajectory",
]
