"""Structure and System: the settings of a run, force fields, structure preparation, the Simulation.

`SimulationSettings` (everything that defines a reference run), `FORCE_FIELDS` (force-field files
per force field and solvent), `rename_charmm_to_amber` and `prepare_structure` (CHARMM -> Amber
names, pdbfixer: missing heavy atoms, hydrogens), `build_system` (force field + implicit solvent
or vacuum), `make_simulation` (Langevin, CPU platform) and `minimise_and_equilibrate`. Also the
helpers the other submodules share: `select_atoms` (an MDAnalysis selection of the prepared
structure), `quiet_mdanalysis` and `step_with_bar`.

Units: OpenMM's nm, ps, kJ/mol; every argument says its unit (``*_nm``, ``*_ps``, ``*_fs``,
``temperature_k``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import MDAnalysis
from pdbfixer import PDBFixer
from tqdm.auto import tqdm

from ...errors import DataError
from .units import app, openmm, unit

PathLike = Union[str, os.PathLike]

#: Force-field files per (force field, solvent). "obc" uses OpenMM's native GBSAOBCForce (fast on
#: CPU); "gbn2"/"obc2" for amber14 use CustomGBForce, 2-10x slower here (docs/data-formats.md).
FORCE_FIELDS: dict[str, dict[str, list[str]]] = {
    "amber99sb": {"vacuum": ["amber99sb.xml"], "obc": ["amber99sb.xml", "amber99_obc.xml"]},
    "amber14": {
        "vacuum": ["amber14-all.xml"],
        "obc2": ["amber14-all.xml", "implicit/obc2.xml"],
        "gbn2": ["amber14-all.xml", "implicit/gbn2.xml"],
    },
    "charmm36": {"vacuum": ["charmm36.xml"]},
}

#: CHARMM residue/atom names that Amber templates spell differently (MDAnalysisTests' AdK PDBs
#: and most CHARMM-prepared structures use them).
CHARMM_RESIDUE_RENAMES = {"HSD": "HIS", "HSE": "HIS", "HSP": "HIS"}
CHARMM_ATOM_RENAMES = {("ILE", "CD"): "CD1", (None, "OT1"): "O", (None, "OT2"): "OXT"}


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that defines a reference run (recorded beside the output, part of the resume key).

    forcefield, solvent : keys of `FORCE_FIELDS`.
    cutoff_nm : nonbonded cutoff in nm (CutoffNonPeriodic), None for no cutoff.
    temperature_k : Langevin thermostat temperature (K); friction_per_ps its collision rate (1/ps).
    timestep_fs : integration step (fs); hydrogen_mass_amu repartitions mass onto hydrogens
        (None keeps the force field's masses). Bonds to hydrogen are constrained.
    frame_interval_ps, length_ps, equilibration_ps : output frame spacing, production length and
        unrecorded equilibration after minimisation (ps).
    minimise_iterations : L-BFGS iterations (0 skips minimisation).
    selection : MDAnalysis selection of the atoms written to the trajectory.
    seed : seed of the initial velocities and of the Langevin integrator.
    ph : protonation pH for pdbfixer's hydrogens.
    """

    forcefield: str = "amber99sb"
    solvent: str = "obc"
    cutoff_nm: Optional[float] = 1.6
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    timestep_fs: float = 4.0
    hydrogen_mass_amu: Optional[float] = 1.5
    frame_interval_ps: float = 0.5
    length_ps: float = 100.0
    equilibration_ps: float = 10.0
    minimise_iterations: int = 500
    selection: str = "protein"
    seed: int = 0
    ph: float = 7.0

    def __post_init__(self) -> None:
        if self.forcefield not in FORCE_FIELDS:
            raise DataError(f"forcefield: unknown {self.forcefield!r}; choose from {', '.join(FORCE_FIELDS)}")
        if self.solvent not in FORCE_FIELDS[self.forcefield]:
            choices = ", ".join(FORCE_FIELDS[self.forcefield])
            raise DataError(f"solvent: {self.solvent!r} is not available with {self.forcefield} (choose {choices})")
        for name in ("temperature_k", "timestep_fs", "frame_interval_ps", "length_ps"):
            if not getattr(self, name) > 0:
                raise DataError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.cutoff_nm is not None and not self.cutoff_nm > 0:
            raise DataError(f"cutoff_nm: must be positive or None, got {self.cutoff_nm}")
        if self.equilibration_ps < 0 or self.minimise_iterations < 0 or self.friction_per_ps < 0:
            raise DataError("equilibration_ps, minimise_iterations and friction_per_ps must not be negative")
        if self.steps_per_frame < 1:
            raise DataError(
                f"frame_interval_ps: {self.frame_interval_ps} ps is shorter than one {self.timestep_fs} fs step"
            )
        if abs(self.steps_per_frame * self.timestep_fs - self.frame_interval_ps * 1000.0) > 1e-6 * self.timestep_fs:
            raise DataError(  # frame times are written as i * frame_interval_ps: they must be exact
                f"frame_interval_ps: {self.frame_interval_ps} ps is not a whole number of {self.timestep_fs} fs steps"
            )

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.frame_interval_ps * 1000.0 / self.timestep_fs))

    @property
    def num_frames(self) -> int:
        """Frames written: the start of production plus one per interval."""
        return int(round(self.length_ps / self.frame_interval_ps)) + 1

    @property
    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_ps * 1000.0 / self.timestep_fs))

    @property
    def force_field_files(self) -> list[str]:
        return FORCE_FIELDS[self.forcefield][self.solvent]


# --------------------------------------------------------------------------------------------
# Structure and system
# --------------------------------------------------------------------------------------------


def rename_charmm_to_amber(topology: "app.Topology") -> int:
    """Rename CHARMM residue/atom names in place to the Amber templates' names; returns the count."""
    renamed = 0
    for residue in topology.residues():
        if residue.name in CHARMM_RESIDUE_RENAMES:
            residue.name = CHARMM_RESIDUE_RENAMES[residue.name]
            renamed += 1
        for atom in residue.atoms():
            new = CHARMM_ATOM_RENAMES.get((residue.name, atom.name)) or CHARMM_ATOM_RENAMES.get((None, atom.name))
            if new is not None:
                atom.name = new
                renamed += 1
    return renamed


def prepare_structure(path: PathLike, ph: float = 7.0) -> tuple["app.Topology", Any]:
    """Structure file (PDB or PDBx/mmCIF) -> (topology, positions) ready for an Amber force field.

    CHARMM names are renamed, heterogens and water removed (the solvent is implicit or absent),
    missing heavy atoms and hydrogens added by pdbfixer at ``ph``, and any periodic box dropped
    (the MDAnalysis PDB writer invents a CRYST1 record even for non-periodic systems).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such structure file")
    mmcif = path.suffix.lower() in (".cif", ".pdbx")
    if not mmcif and not _has_pdb_atoms(path):
        raise DataError(f"{path}: not a PDB structure (no ATOM or HETATM records); give a PDB or PDBx/mmCIF file")
    try:
        structure = app.PDBxFile(str(path)) if mmcif else app.PDBFile(str(path))
    except Exception as exc:  # OpenMM raises ValueError/KeyError/IndexError on malformed files
        kind = "PDBx/mmCIF" if mmcif else "PDB"
        raise DataError(f"{path}: cannot read as a {kind} structure ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    topology = structure.topology
    if topology.getNumAtoms() == 0:
        raise DataError(f"{path}: the structure has no atoms")
    rename_charmm_to_amber(topology)
    topology.setPeriodicBoxVectors(None)
    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, structure.positions, buffer, keepIds=True)
    buffer.seek(0)
    fixer = PDBFixer(pdbfile=buffer)
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # never invent loops or termini: the structure is what the user gave
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(ph)
    fixer.topology.setPeriodicBoxVectors(None)
    return fixer.topology, fixer.positions


def _has_pdb_atoms(path: Path) -> bool:
    """True if a PDB file has at least one ATOM or HETATM record (a cheap check before OpenMM,
    whose parser fails on other text with a bare IndexError)."""
    with open(path, "rb") as handle:
        return any(line.startswith((b"ATOM  ", b"HETATM")) for line in handle)


def build_system(topology: "app.Topology", settings: SimulationSettings) -> "openmm.System":
    """OpenMM System for ``topology`` with the settings' force field, solvent and cutoff."""
    forcefield = app.ForceField(*settings.force_field_files)
    kwargs: dict[str, Any] = {"constraints": app.HBonds}
    if settings.cutoff_nm is None:
        kwargs["nonbondedMethod"] = app.NoCutoff
    else:
        kwargs["nonbondedMethod"] = app.CutoffNonPeriodic
        kwargs["nonbondedCutoff"] = settings.cutoff_nm * unit.nanometer
    if settings.hydrogen_mass_amu is not None:
        kwargs["hydrogenMass"] = settings.hydrogen_mass_amu * unit.amu
    try:
        return forcefield.createSystem(topology, **kwargs)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{settings.forcefield}/{settings.solvent}: cannot parametrise the structure: {first}") from None


def make_simulation(
    topology: "app.Topology", system: "openmm.System", settings: SimulationSettings, threads: Optional[int] = None
) -> "app.Simulation":
    """Simulation with a LangevinMiddleIntegrator on the CPU platform (Reference if CPU is absent)."""
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature_k * unit.kelvin,
        settings.friction_per_ps / unit.picosecond,
        settings.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(settings.seed)
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "CPU" in names:
        platform = openmm.Platform.getPlatformByName("CPU")
        properties = {"Threads": str(threads)} if threads else {}
    else:  # pragma: no cover - every OpenMM wheel ships the CPU platform
        platform, properties = openmm.Platform.getPlatformByName("Reference"), {}
    return app.Simulation(topology, system, integrator, platform, properties)


# --------------------------------------------------------------------------------------------
# Minimisation and equilibration
# --------------------------------------------------------------------------------------------


def minimise_and_equilibrate(
    simulation: "app.Simulation", positions: Any, settings: SimulationSettings, progress: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """Set ``positions``, minimise (``settings.minimise_iterations``), draw Maxwell-Boltzmann
    velocities at the settings' temperature and seed, run ``settings.equilibration_steps``."""
    simulation.context.setPositions(positions)
    if settings.minimise_iterations:
        log(f"minimising ({settings.minimise_iterations} iterations at most)")
        simulation.minimizeEnergy(maxIterations=settings.minimise_iterations)
    simulation.context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed)
    if settings.equilibration_steps:
        step_with_bar(simulation, settings.equilibration_steps, "equilibrating", progress)


def step_with_bar(simulation: "app.Simulation", steps: int, desc: str, progress: bool, chunk: int = 250) -> None:
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            simulation.step(n)
            done += n
            bar.update(n)


# --------------------------------------------------------------------------------------------
# Selection of the prepared structure (MDAnalysis)
# --------------------------------------------------------------------------------------------


def select_atoms(pdb_text: str, selection: str) -> Any:
    """The atoms (AtomGroup) of the prepared structure that ``selection`` picks (MDAnalysis syntax)."""
    with quiet_mdanalysis():
        universe = MDAnalysis.Universe(io.StringIO(pdb_text), format="PDB")
    try:
        atoms = universe.select_atoms(selection)
    except Exception as exc:  # MDAnalysis raises SelectionError/ValueError on bad syntax
        raise DataError(f"selection: {selection!r} is not a valid selection ({exc})") from None
    if len(atoms) == 0:
        raise DataError(f"selection: {selection!r} matches no atom of the prepared structure")
    return atoms


@contextlib.contextmanager
def quiet_mdanalysis() -> Iterator[None]:
    """Hide MDAnalysis' UserWarnings about PDB fields we do not use (charges, chainIDs, box)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"MDAnalysis\.")
        yield
