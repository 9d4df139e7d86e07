"""OpenMM adapter: reference MD from a structure file (`simulate`).

Units
-----
OpenMM works in nm, ps, kJ/mol; fastegnn-md works in Å, ps, amu. Conversion happens here, at the
boundary: trajectories are written through MDAnalysis writers in Å and Å/ps (what every
MDAnalysis reader returns), and every public argument says its unit (``*_nm``, ``*_ps``, ``*_fs``,
``temperature_k``).

Pipeline (`simulate` does all of it)::

    prepare_structure (CHARMM -> Amber names, pdbfixer: missing heavy atoms, hydrogens)
      -> build_system (force field + implicit solvent or vacuum) -> minimise -> equilibrate
      -> production with Langevin dynamics, one frame every ``frame_interval_ps``
      -> trajectory (MDAnalysis writer, velocities when the format holds them) + topology PDB

Checkpoints: every ``checkpoint_seconds`` of wall time and at the end, the frames so far are
written to the trajectory (atomically) and the OpenMM checkpoint plus those frames to
``<out>.checkpoint.npz`` (atomically). Running the same command again resumes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..io import write_atomically

try:  # OpenMM is an optional dependency of the package but required by this module.
    import openmm
    import openmm.app as app
    import openmm.unit as unit
except ImportError as _exc:  # pragma: no cover - exercised only without openmm installed
    raise ImportError("fastegnn_md.adapters.openmm needs OpenMM: pip install openmm pdbfixer") from _exc

PathLike = Union[str, os.PathLike]

NM_TO_ANGSTROM = 10.0

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

CHECKPOINT_VERSION = 1


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
    from pdbfixer import PDBFixer

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such structure file")
    try:
        if path.suffix.lower() in (".cif", ".pdbx"):
            structure = app.PDBxFile(str(path))
        else:
            structure = app.PDBFile(str(path))
    except Exception as exc:  # OpenMM raises ValueError/KeyError/IndexError on malformed files
        raise DataError(f"{path}: cannot read structure ({type(exc).__name__}: {exc})") from None
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
# Reference run
# --------------------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """What `simulate` produced: files, frame count, and the measured speed."""

    trajectory: Path
    topology: Path
    num_frames: int
    num_atoms: int
    ns_per_day: float
    resumed_from_frame: int
    settings: SimulationSettings

    def summary(self) -> str:
        return (
            f"wrote {self.num_frames} frames of {self.num_atoms} atoms to {self.trajectory} "
            f"(topology {self.topology}); production ran at {self.ns_per_day:.2f} ns/day"
        )


def checkpoint_path(out: PathLike) -> Path:
    return Path(f"{out}.checkpoint.npz")


def topology_path(out: PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".pdb") if out.suffix.lower() != ".pdb" else out.with_name(out.stem + "-top.pdb")


def simulate(
    structure: PathLike,
    out: PathLike,
    settings: SimulationSettings = SimulationSettings(),
    threads: Optional[int] = None,
    checkpoint_seconds: float = 300.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SimulationResult:
    """Run reference MD of ``structure`` and write the selected atoms' trajectory to ``out``.

    The trajectory format follows ``out``'s extension (any MDAnalysis writer: .xtc, .trr, .dcd,
    .ncdf, ...); positions in Å, velocities in Å/ps where the format stores them (TRR, NetCDF).
    Frame i is at time i * frame_interval_ps after equilibration. ``<out stem>.pdb`` holds the
    topology of the written atoms (element column included) and ``<out>.json`` the settings.
    If ``<out>.checkpoint.npz`` from the same structure and settings exists, the run resumes
    from it (frames already written are kept); different settings are an error, not a restart.
    """
    import MDAnalysis

    from .mdanalysis import standalone_universe, write_pdb

    out, structure = Path(out), Path(structure)
    try:
        MDAnalysis.coordinates.core.get_writer_for(str(out))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{out}: no trajectory writer for this extension ({exc})") from None
    topology, positions = prepare_structure(structure, settings.ph)
    system = build_system(topology, settings)
    simulation = make_simulation(topology, system, settings, threads)

    top_file = topology_path(out)
    full_pdb = io.StringIO()
    app.PDBFile.writeFile(topology, positions, full_pdb, keepIds=True)
    key = _run_key(structure, settings)
    selected_atoms = _select(full_pdb.getvalue(), settings.selection)
    selected = selected_atoms.indices.copy()

    ckpt_file = checkpoint_path(out)
    frames_pos: list[np.ndarray] = []
    frames_vel: list[np.ndarray] = []
    resumed = 0
    if ckpt_file.exists():
        frames_pos, frames_vel = _resume(ckpt_file, key, simulation)
        resumed = len(frames_pos)
        log(f"resuming {out} from its checkpoint at frame {resumed} of {settings.num_frames}")
    else:
        minimise_and_equilibrate(simulation, positions, settings, progress, log)
        simulation.currentStep = 0
        simulation.context.setTime(0.0)
    # Written only once the checkpoint (if any) is known to match: never clobber another run's topology.
    with _quiet_mdanalysis():
        write_pdb(standalone_universe(selected_atoms), selected_atoms.positions, top_file)

    meta = {"format": "fastegnn-md openmm reference", "structure": str(structure), **asdict(settings),
            "force_field_files": settings.force_field_files, "topology": top_file.name}
    write_atomically(Path(f"{out}.json"), lambda h: h.write((json.dumps(meta, indent=2) + "\n").encode()))

    last_save = time.monotonic()
    production_seconds, production_steps = 0.0, 0
    bar = tqdm(total=settings.num_frames, initial=resumed, desc="simulating", unit="frame", disable=not progress)
    try:
        while len(frames_pos) < settings.num_frames:
            if frames_pos:  # frame 0 is the start of production
                start = time.perf_counter()
                simulation.step(settings.steps_per_frame)
                production_seconds += time.perf_counter() - start
                production_steps += settings.steps_per_frame
            pos, vel = _selected_state(simulation, selected)
            frames_pos.append(pos)
            frames_vel.append(vel)
            bar.update(1)
            if production_seconds:
                bar.set_postfix_str(f"{_ns_per_day(production_steps, production_seconds, settings):.2f} ns/day")
            if time.monotonic() - last_save > checkpoint_seconds:
                _save(out, ckpt_file, key, simulation, frames_pos, frames_vel, settings, top_file)
                last_save = time.monotonic()
    finally:
        bar.close()
    _save(out, ckpt_file, key, simulation, frames_pos, frames_vel, settings, top_file)
    speed = _ns_per_day(production_steps, production_seconds, settings) if production_seconds else float("nan")
    return SimulationResult(out, top_file, len(frames_pos), len(selected), speed, resumed, settings)


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
        _step_with_bar(simulation, settings.equilibration_steps, "equilibrating", progress)


def _ns_per_day(steps: int, seconds: float, settings: SimulationSettings) -> float:
    return steps * settings.timestep_fs * 1e-6 / (seconds / 86400.0)


def _step_with_bar(simulation: "app.Simulation", steps: int, desc: str, progress: bool, chunk: int = 250) -> None:
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            simulation.step(n)
            done += n
            bar.update(n)


def _run_key(structure: Path, settings: SimulationSettings) -> str:
    # length_ps is left out so that a finished run can be extended by asking for a longer one.
    fields = {k: v for k, v in asdict(settings).items() if k != "length_ps"}
    payload = {"structure": hashlib.sha256(structure.read_bytes()).hexdigest(), "settings": fields,
               "version": CHECKPOINT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _select(pdb_text: str, selection: str) -> Any:
    """The atoms (AtomGroup) of the prepared structure that ``selection`` picks (MDAnalysis syntax)."""
    import MDAnalysis

    with _quiet_mdanalysis():
        universe = MDAnalysis.Universe(io.StringIO(pdb_text), format="PDB")
    try:
        atoms = universe.select_atoms(selection)
    except Exception as exc:  # MDAnalysis raises SelectionError/ValueError on bad syntax
        raise DataError(f"selection: {selection!r} is not a valid selection ({exc})") from None
    if len(atoms) == 0:
        raise DataError(f"selection: {selection!r} matches no atom of the prepared structure")
    return atoms


@contextlib.contextmanager
def _quiet_mdanalysis() -> Iterator[None]:
    """Hide MDAnalysis' UserWarnings about PDB fields we do not use (charges, chainIDs, box)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"MDAnalysis\.")
        yield


def _selected_state(simulation: "app.Simulation", selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[selected] * NM_TO_ANGSTROM
    vel = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)[selected] * NM_TO_ANGSTROM
    return pos.astype(np.float32), vel.astype(np.float32)


def _save(
    out: Path,
    ckpt_file: Path,
    key: str,
    simulation: "app.Simulation",
    frames_pos: list[np.ndarray],
    frames_vel: list[np.ndarray],
    settings: SimulationSettings,
    top_file: Path,
) -> None:
    """Trajectory first, then the checkpoint: a checkpoint never names frames the file lacks."""
    write_trajectory(out, top_file, np.stack(frames_pos), np.stack(frames_vel), settings.frame_interval_ps)
    state = simulation.context.createCheckpoint()

    def write(handle: Any) -> None:
        np.savez(handle, key=np.array(key), version=np.array(CHECKPOINT_VERSION),
                 openmm_checkpoint=np.frombuffer(state, dtype=np.uint8),
                 positions=np.stack(frames_pos), velocities=np.stack(frames_vel))

    write_atomically(ckpt_file, write)


def _resume(ckpt_file: Path, key: str, simulation: "app.Simulation") -> tuple[list[np.ndarray], list[np.ndarray]]:
    try:
        with np.load(ckpt_file) as data:
            stored_key = str(data["key"])
            state = data["openmm_checkpoint"].tobytes()
            positions, velocities = data["positions"], data["velocities"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{ckpt_file}: unreadable simulation checkpoint ({exc}); delete it to start over") from None
    if stored_key != key:
        raise DataError(
            f"{ckpt_file}: was written for another structure or other settings; delete it to start over"
        )
    try:
        simulation.context.loadCheckpoint(state)
    except Exception as exc:  # OpenMMException: other platform or OpenMM version
        raise DataError(f"{ckpt_file}: OpenMM cannot load it here ({exc}); delete it to start over") from None
    return list(positions), list(velocities)


def write_trajectory(
    out: Path, topology_file: Path, positions: np.ndarray, velocities: np.ndarray, frame_interval_ps: float
) -> None:
    """Write (T, N, 3) positions (Å) and velocities (Å/ps) to ``out`` atomically, format by extension.

    Velocities are stored only when the format can hold them (MDAnalysis writer's capability).
    """
    import MDAnalysis

    with _quiet_mdanalysis():
        universe = MDAnalysis.Universe(str(topology_file))
    writer_class = MDAnalysis.coordinates.core.get_writer_for(str(out))
    with_velocities = _writes_velocities(writer_class)
    # NCDFWriter stores velocities only when asked to (TRR always does, H5MD by default).
    extra = {"velocities": True} if with_velocities and "NCDF" in _formats(writer_class) else {}
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")
    try:
        with _quiet_mdanalysis(), writer_class(str(tmp), n_atoms=positions.shape[1], **extra) as writer:
            for i, (pos, vel) in enumerate(zip(positions, velocities)):
                ts = universe.trajectory.ts
                ts.positions = pos
                if with_velocities:
                    ts.velocities = vel
                ts.time = i * frame_interval_ps
                ts.frame = i
                ts.dimensions = None
                writer.write(universe.atoms)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _formats(writer_class: type) -> set[str]:
    formats = getattr(writer_class, "format", ())  # a string, or a list such as ["NC", "NCDF"]
    return {formats} if isinstance(formats, str) else set(formats)


def _writes_velocities(writer_class: type) -> bool:
    return bool(_formats(writer_class) & {"TRR", "NCDF", "H5MD"})


# --------------------------------------------------------------------------------------------
# Learned jumps in an OpenMM Simulation
# --------------------------------------------------------------------------------------------
#
# `FastEGNNStepper(simulation, checkpoint)` advances an `app.Simulation` by learned jumps of the
# checkpoint's Δt. One jump:
#
# 1. read positions/velocities from the Context (nm, nm/ps -> Å, Å/ps: `nm_to_angstrom`);
# 2. predict the selected atoms' positions after Δt. Velocity input (``"backward"`` checkpoints,
#    the mean velocity over the previous Δt): if the stepper made the previous jump (or its
#    fallback) and the selected atoms have not moved since (within ``history_tol`` Å), it is
#    ``(x − x_prev)/Δt`` with x_prev the positions one jump ago; otherwise the Context's
#    instantaneous velocities are used, an **approximation** (a thermal velocity is not a mean over
#    Δt; warned once) — the same policy as the ASE calculator (docs/ase.md);
# 3. place the unselected atoms: each residue's unselected atoms move rigidly with the Kabsch
#    transform (rotation + translation) of that residue's selected atoms, old -> predicted
#    (residues with 1-2 selected atoms are translated by their centroid shift, residues without
#    selected atoms stay put): `place_unselected`;
# 4. a short restrained minimisation (``minimise_iterations`` of `capped_steepest_descent`, no
#    simulated time) removes clashes; then velocities by ``velocity_policy``: ``"thermal"`` redraws Maxwell-Boltzmann velocities at
#    ``temperature`` (Context.setVelocitiesToTemperature, seed = seed + jump index); ``"keep"``
#    keeps the pre-jump velocities;
# 5. relax ``relax_steps`` ordinary integrator steps with the selected atoms harmonically
#    restrained to the prediction (CustomExternalForce ``0.5 k |r − r0|²``, its global ``k`` is
#    ``restraint_k`` while relaxing and 0 otherwise, so ordinary MD is unaffected);
# 6. the step count and Context time advance by exactly Δt = ``steps_per_jump`` integrator steps
#    (the relax steps are part of them) and every reporter whose next report falls within the
#    jump reports once with the post-jump state.
#
# Why steepest descent and not OpenMM's LocalEnergyMinimizer: on AdK (3,341 atoms, OBC) L-BFGS with
# 20 iterations took 12.7 s per jump, because it repeats its iterations in rounds of stronger
# constraint penalties — ten times the cost of everything else in a jump. A capped steepest descent
# costs exactly one force evaluation per iteration; 15 of them removed the clashes in every jump
# we tried (benchmarks/RESULTS.md, validation).
#
# History: the first jump of a fresh stepper has no previous jump to take a mean velocity from.
# `warm_up()` runs ordinary MD for one Δt (reporters run) and records it as history;
# `set_history(previous)` supplies the selected atoms' positions one Δt ago directly.
#
# Guarded mode (default): after the jump the potential energy must be finite and at most the
# pre-jump potential energy + ``energy_tolerance`` (default 5 kJ/mol per atom of the system).
# Otherwise the jump is rejected: the Context checkpoint taken before the jump is restored and
# ``simulation.step(steps_per_jump)`` runs ordinary MD for that Δt (reporters run as usual).
# A non-finite prediction is rejected before the Context is touched. Unguarded, a non-finite
# prediction raises DataError. `FastEGNNStepper.summary()` counts accepted and rejected jumps.

RESTRAINT_K_PARAMETER = "fastegnn_restraint_k"
VELOCITY_POLICIES = ("thermal", "keep")
ENERGY_TOLERANCE_PER_ATOM = 5.0  # kJ/mol


def nm_to_angstrom(values: Any) -> np.ndarray:
    """nm (or nm/ps) -> Å (or Å/ps); a float64 array."""
    return np.asarray(values, dtype=np.float64) * NM_TO_ANGSTROM


def angstrom_to_nm(values: Any) -> np.ndarray:
    """Å (or Å/ps) -> nm (or nm/ps); a float64 array."""
    return np.asarray(values, dtype=np.float64) / NM_TO_ANGSTROM


def kabsch_transform(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) with ``new ≈ old @ R.T + t`` (least squares, proper)."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    c_old, c_new = old.mean(axis=0), new.mean(axis=0)
    h = (old - c_old).T @ (new - c_new)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, c_new - rotation @ c_old


def capped_steepest_descent(context: "openmm.Context", iterations: int, max_step_nm: float = 0.01) -> float:
    """Minimise the Context's potential energy by ``iterations`` capped steepest-descent steps.

    Each step moves every atom along its force, scaled so the atom with the largest force moves
    ``step`` nm (start and ceiling ``max_step_nm``), then applies the constraints. A step that
    lowers the energy is kept and the step grows by 1.2 (up to the ceiling); one that does not is
    undone and the step halves. One force evaluation per iteration. The Context ends at the
    lowest-energy positions found; returns that potential energy in kJ/mol. Velocities untouched.
    """
    state = context.getState(getPositions=True, getForces=True, getEnergy=True)
    best_x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    best_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    step = float(max_step_nm)
    for _ in range(int(iterations)):
        largest = float(np.abs(forces).max()) if np.isfinite(forces).all() else 0.0
        if largest == 0.0:
            break
        context.setPositions(best_x + forces * (step / largest))
        context.applyConstraints(1e-5)
        state = context.getState(getPositions=True, getForces=True, getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if np.isfinite(energy) and energy < best_energy:
            best_x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            best_energy = energy
            forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            step = min(1.2 * step, float(max_step_nm))
        else:
            step *= 0.5
    context.setPositions(best_x)
    return float(best_energy)


def place_unselected(
    positions: np.ndarray, selected: np.ndarray, predicted: np.ndarray, residues: np.ndarray
) -> np.ndarray:
    """All atoms' positions after a jump of the ``selected`` ones (any consistent length unit).

    positions (N, 3) before the jump; selected (S,) atom indices; predicted (S, 3) their new
    positions; residues (N,) residue index of every atom. Selected atoms go exactly to
    ``predicted``; each residue's other atoms move rigidly with the Kabsch transform of the
    residue's selected atoms (translation only if it has fewer than 3; unchanged if none).
    """
    positions = np.asarray(positions, dtype=np.float64)
    selected = np.asarray(selected, dtype=np.intp)
    residues = np.asarray(residues)
    out = positions.copy()
    out[selected] = predicted
    is_selected = np.zeros(len(positions), dtype=bool)
    is_selected[selected] = True
    for residue in np.unique(residues):
        members = np.flatnonzero(residues == residue)
        anchors = members[is_selected[members]]
        movers = members[~is_selected[members]]
        if movers.size == 0 or anchors.size == 0:
            continue
        if anchors.size < 3:
            out[movers] = positions[movers] + (out[anchors].mean(axis=0) - positions[anchors].mean(axis=0))
            continue
        rotation, shift = kabsch_transform(positions[anchors], out[anchors])
        out[movers] = positions[movers] @ rotation.T + shift
    return out


class FastEGNNStepper:
    """Advance an OpenMM ``app.Simulation`` by learned jumps (see the section comment above).

    Parameters
    ----------
    simulation : the Simulation (its System gets one restraint force, added here).
    checkpoint : path or shipped name of a molecular checkpoint (Å, ps), or a Predictor.
    selection : MDAnalysis selection of the atoms the model moves; default the checkpoint's.
    relax_steps : restrained integrator steps after each jump (part of the jump's step count).
    restraint_k : restraint force constant in kJ/mol/nm² while relaxing.
    guarded : reject jumps whose potential energy is non-finite or above pre-jump + tolerance.
    energy_tolerance : kJ/mol; default `ENERGY_TOLERANCE_PER_ATOM` × number of particles.
    velocity_policy : ``"thermal"`` (Maxwell-Boltzmann at ``temperature``) or ``"keep"``.
    temperature : K for the thermal policy; default the integrator's temperature.
    seed : seed of the thermal velocities (jump k uses seed + k).
    history_tol : Å; selected atoms within this of where the last jump left them count as unmoved.
    minimise_iterations : restrained `capped_steepest_descent` iterations before the relax steps
        (0: none); they remove the clashes a rigid residue placement can create, which would
        otherwise blow up the first integrator steps. They take no simulated time.
    max_descent_step_nm : largest single-atom move of one descent iteration (nm).
    """

    def __init__(
        self,
        simulation: "app.Simulation",
        checkpoint: Any = "adk-backbone",
        selection: Optional[str] = None,
        relax_steps: int = 25,
        restraint_k: float = 5000.0,
        guarded: bool = True,
        energy_tolerance: Optional[float] = None,
        velocity_policy: str = "thermal",
        temperature: Optional[float] = None,
        seed: int = 0,
        history_tol: float = 1e-3,
        minimise_iterations: int = 15,
        max_descent_step_nm: float = 0.01,
    ) -> None:
        from ..predictor import Predictor

        if velocity_policy not in VELOCITY_POLICIES:
            raise DataError(f"velocity_policy: {velocity_policy!r} is not one of {', '.join(VELOCITY_POLICIES)}")
        self.simulation = simulation
        self.predictor = checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
        spec = self.predictor.spec
        if spec.units.get("length") != "Å" or spec.units.get("time") != "ps":
            raise DataError(f"{checkpoint}: not a molecular checkpoint (Å, ps); the OpenMM stepper needs one")
        self.dt_ps = float(self.predictor.dt)
        integrator = simulation.integrator
        step_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
        steps = self.dt_ps / step_ps
        self.steps_per_jump = int(round(steps))
        if self.steps_per_jump < 1 or abs(steps - self.steps_per_jump) > 1e-6 * max(1.0, steps):
            raise DataError(
                f"{checkpoint}: its Δt = {self.dt_ps} ps is not a whole number of {step_ps} ps integrator steps"
            )
        if not 0 <= int(relax_steps) <= self.steps_per_jump:
            raise DataError(f"relax_steps: must be between 0 and the {self.steps_per_jump} steps of one jump")
        self.relax_steps = int(relax_steps)
        self.restraint_k = float(restraint_k)
        self.guarded = bool(guarded)
        self.velocity_policy = velocity_policy
        if temperature is None and velocity_policy == "thermal":
            if not hasattr(integrator, "getTemperature"):
                raise DataError("temperature: the integrator has no temperature; pass temperature=")
            temperature = integrator.getTemperature().value_in_unit(unit.kelvin)
        self.temperature = None if temperature is None else float(temperature)
        self.seed = int(seed)
        self.history_tol = float(history_tol)
        if int(minimise_iterations) < 0:
            raise DataError("minimise_iterations: must not be negative")
        self.minimise_iterations = int(minimise_iterations)
        if not max_descent_step_nm > 0:
            raise DataError("max_descent_step_nm: must be positive")
        self.max_descent_step_nm = float(max_descent_step_nm)

        topology = simulation.topology
        self.num_atoms = topology.getNumAtoms()
        self.energy_tolerance = (
            ENERGY_TOLERANCE_PER_ATOM * self.num_atoms if energy_tolerance is None else float(energy_tolerance)
        )
        self.selection = selection or spec.selection
        if not self.selection:
            raise DataError(f"{checkpoint}: records no atom selection; pass selection=")
        positions = simulation.context.getState(getPositions=True).getPositions()
        pdb = io.StringIO()
        app.PDBFile.writeFile(topology, positions, pdb, keepIds=True)
        self.selected = _select(pdb.getvalue(), self.selection).indices.copy()
        if spec.num_nodes is not None and len(self.selected) != spec.num_nodes:
            raise DataError(
                f"selection: {self.selection!r} picks {len(self.selected)} atoms but the checkpoint was trained "
                f"on {spec.num_nodes} (selection {spec.selection!r})"
            )
        self.residues = np.array([atom.residue.index for atom in topology.atoms()])

        force = openmm.CustomExternalForce(f"0.5*{RESTRAINT_K_PARAMETER}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        force.addGlobalParameter(RESTRAINT_K_PARAMETER, 0.0)
        for name in ("x0", "y0", "z0"):
            force.addPerParticleParameter(name)
        xyz = np.asarray(positions.value_in_unit(unit.nanometer))
        for index in self.selected:
            force.addParticle(int(index), [float(v) for v in xyz[index]])
        self.restraint = force
        simulation.system.addForce(force)
        simulation.context.reinitialize(preserveState=True)

        self.accepted = 0
        self.rejected = 0
        self.jumps = 0
        self.warm_up_jumps = 0
        self.last_velocity_source: Optional[str] = None
        self.last_rejection: Optional[str] = None
        self._history: Optional[tuple[np.ndarray, np.ndarray]] = None  # (x one jump ago, x now), Å
        self._warned = False

    # -- public --------------------------------------------------------------------------------

    def step(self, n: int) -> None:
        """Advance the simulation by ``n`` jumps (n × Δt, n × steps_per_jump integrator steps)."""
        for _ in range(int(n)):
            self._jump()

    def warm_up(self, n: int = 1) -> None:
        """Ordinary MD for ``n`` × Δt (reporters run as usual), recorded as the jump history.

        Gives the next jump a true mean velocity over the previous Δt instead of the Context's
        instantaneous velocities. Not counted as jumps; `summary()` reports ``warm_up_jumps``.
        """
        for _ in range(int(n)):
            x_sel = self._selected_positions()
            self.simulation.step(self.steps_per_jump)
            self._history = (x_sel, self._selected_positions())
            self.warm_up_jumps += 1

    @property
    def history(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(selected atoms one jump ago, where the last jump left them), Å; None before any jump."""
        return self._history

    def set_history(self, previous: np.ndarray) -> None:
        """Positions (S, 3) in Å of the selected atoms one Δt before the Context's current state."""
        previous = np.asarray(previous, dtype=np.float64)
        if previous.shape != (len(self.selected), 3) or not np.isfinite(previous).all():
            raise DataError(f"set_history: expected finite ({len(self.selected)}, 3) positions in Å, got "
                            f"shape {previous.shape}")
        self._history = (previous.copy(), self._selected_positions())

    def summary(self) -> dict[str, Any]:
        return {
            "jumps": self.jumps, "accepted": self.accepted, "rejected": self.rejected,
            "warm_up_jumps": self.warm_up_jumps, "minimise_iterations": self.minimise_iterations,
            "dt_ps": self.dt_ps, "steps_per_jump": self.steps_per_jump, "relax_steps": self.relax_steps,
            "guarded": self.guarded, "energy_tolerance_kj_mol": self.energy_tolerance,
            "velocity_policy": self.velocity_policy, "selection": self.selection,
            "selected_atoms": int(len(self.selected)), "last_rejection": self.last_rejection,
        }

    # -- internals -----------------------------------------------------------------------------

    def _selected_positions(self) -> np.ndarray:
        state = self.simulation.context.getState(getPositions=True)
        return nm_to_angstrom(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[self.selected]

    def _model_velocities(self, x_sel: np.ndarray, v_sel: np.ndarray) -> np.ndarray:
        convention = self.predictor.spec.velocity_convention
        if convention == "backward" and self._history is not None:
            previous, last = self._history
            if float(np.max(np.abs(x_sel - last), initial=0.0)) <= self.history_tol:
                self.last_velocity_source = "history"
                return (x_sel - previous) / self.dt_ps
        self.last_velocity_source = "context"
        if convention != "physical" and not self._warned:
            warnings.warn(
                f"FastEGNNStepper: the checkpoint expects {convention} mean velocities over Δt; using the "
                "Context's instantaneous velocities for this jump (an approximation)", stacklevel=3,
            )
            self._warned = True
        return v_sel

    def _jump(self) -> None:
        simulation, context = self.simulation, self.simulation.context
        start_step = simulation.currentStep
        start_time = context.getState().getTime().value_in_unit(unit.picosecond)
        due = self._due_reporters()
        before = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        x = nm_to_angstrom(before.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = nm_to_angstrom(before.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        reference_energy = before.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        x_sel = x[self.selected]
        self.jumps += 1
        jump = self.predictor.predict(x_sel, self._model_velocities(x_sel, v[self.selected]))
        predicted = jump.positions
        if not np.isfinite(predicted).all():
            if not self.guarded:
                raise DataError("FastEGNNStepper: the model predicted non-finite positions (unguarded mode)")
            self._fallback(x_sel, "non-finite prediction")
            return
        saved = context.createCheckpoint() if self.guarded else None
        try:
            energy, after = self._place_and_relax(x, predicted)
        except openmm.OpenMMException as exc:  # NaN coordinates during minimisation or relaxation
            if not self.guarded:
                raise DataError(f"FastEGNNStepper: the jump made the simulation non-finite ({exc})") from None
            context.setParameter(RESTRAINT_K_PARAMETER, 0.0)
            context.loadCheckpoint(saved)
            self._fallback(x_sel, f"non-finite state after the jump ({str(exc).splitlines()[0]})")
            return
        if self.guarded and not (np.isfinite(energy) and energy <= reference_energy + self.energy_tolerance):
            context.loadCheckpoint(saved)
            self._fallback(
                x_sel, f"potential energy {energy:.6g} kJ/mol > {reference_energy:.6g} + {self.energy_tolerance:.6g}"
            )
            return
        if not np.isfinite(energy) and not self.guarded:
            raise DataError(f"FastEGNNStepper: the jump left a non-finite potential energy ({energy})")
        simulation.currentStep = start_step + self.steps_per_jump
        context.setTime(start_time + self.steps_per_jump * simulation.integrator.getStepSize().value_in_unit(
            unit.picosecond))
        self.accepted += 1
        end = nm_to_angstrom(after.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[self.selected]
        self._history = (x_sel, end)
        self._report(due, start_step)

    def _place_and_relax(self, x: np.ndarray, predicted: np.ndarray) -> tuple[float, Any]:
        """Put the jump into the Context, minimise, set velocities, relax; (energy kJ/mol, state)."""
        simulation, context = self.simulation, self.simulation.context
        new_x = place_unselected(x, self.selected, predicted, self.residues)
        context.setPositions(angstrom_to_nm(new_x) * unit.nanometer)
        context.applyConstraints(1e-5)
        if self.relax_steps or self.minimise_iterations:
            r0 = angstrom_to_nm(predicted)
            for i, index in enumerate(self.selected):
                self.restraint.setParticleParameters(i, int(index), [float(c) for c in r0[i]])
            self.restraint.updateParametersInContext(context)
            context.setParameter(RESTRAINT_K_PARAMETER, self.restraint_k)
        try:
            if self.minimise_iterations:
                capped_steepest_descent(context, self.minimise_iterations, self.max_descent_step_nm)
            if self.velocity_policy == "thermal":
                context.setVelocitiesToTemperature(self.temperature * unit.kelvin, self.seed + self.jumps - 1)
            if self.relax_steps:
                simulation.integrator.step(self.relax_steps)
        finally:
            context.setParameter(RESTRAINT_K_PARAMETER, 0.0)
        after = context.getState(getPositions=True, getEnergy=True)
        return after.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), after

    def _fallback(self, x_sel: np.ndarray, why: str) -> None:
        """Ordinary MD for one Δt (the Context holds the pre-jump state); reporters run as usual."""
        self.rejected += 1
        self.last_rejection = why
        self.simulation.step(self.steps_per_jump)
        end = self.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        self._history = (x_sel, nm_to_angstrom(end.value_in_unit(unit.nanometer))[self.selected])

    def _due_reporters(self) -> list[tuple[Any, dict[str, Any]]]:
        """(reporter, description) of the reporters whose next report falls within the coming jump."""
        due = []
        for reporter in self.simulation.reporters:
            report = reporter.describeNextReport(self.simulation)
            if isinstance(report, tuple):
                includes = ["positions", "velocities", "forces", "energy"]
                report = {"steps": report[0], "include": [includes[i] for i in range(4) if report[i + 1]],
                          "periodic": report[5] if len(report) > 5 else None}
            if 0 < report["steps"] <= self.steps_per_jump:
                due.append((reporter, report))
        return due

    def _report(self, due: list[tuple[Any, dict[str, Any]]], start_step: int) -> None:
        if not due:
            return
        include = set().union(*(set(report.get("include", ())) for _, report in due))
        periodic = self.simulation._usesPBC if hasattr(self.simulation, "_usesPBC") else False
        state = self.simulation.context.getState(
            getPositions="positions" in include, getVelocities="velocities" in include,
            getForces="forces" in include, getEnergy="energy" in include, getParameters=True,
            enforcePeriodicBox=bool(periodic),
        )
        for reporter, _ in due:
            reporter.report(self.simulation, state)
