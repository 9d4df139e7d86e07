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
    selected = _select(full_pdb.getvalue(), settings.selection)

    ckpt_file = checkpoint_path(out)
    frames_pos: list[np.ndarray] = []
    frames_vel: list[np.ndarray] = []
    resumed = 0
    if ckpt_file.exists():
        frames_pos, frames_vel = _resume(ckpt_file, key, simulation)
        resumed = len(frames_pos)
        log(f"resuming {out} from its checkpoint at frame {resumed} of {settings.num_frames}")
    else:
        simulation.context.setPositions(positions)
        if settings.minimise_iterations:
            log(f"minimising ({settings.minimise_iterations} iterations at most)")
            simulation.minimizeEnergy(maxIterations=settings.minimise_iterations)
        simulation.context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed)
        if settings.equilibration_steps:
            _step_with_bar(simulation, settings.equilibration_steps, "equilibrating", progress)
        simulation.currentStep = 0
        simulation.context.setTime(0.0)
    # Written only once the checkpoint (if any) is known to match: never clobber another run's topology.
    write_atomically(top_file, lambda h: h.write(_selection_pdb(full_pdb.getvalue(), selected, top_file)))

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


def _select(pdb_text: str, selection: str) -> np.ndarray:
    """Indices of the atoms of the prepared structure that ``selection`` picks (MDAnalysis syntax)."""
    import MDAnalysis

    with _quiet_mdanalysis():
        universe = MDAnalysis.Universe(io.StringIO(pdb_text), format="PDB")
    try:
        atoms = universe.select_atoms(selection)
    except Exception as exc:  # MDAnalysis raises SelectionError/ValueError on bad syntax
        raise DataError(f"selection: {selection!r} is not a valid selection ({exc})") from None
    if len(atoms) == 0:
        raise DataError(f"selection: {selection!r} matches no atom of the prepared structure")
    return atoms.indices.copy()


def _selection_pdb(pdb_text: str, selected: np.ndarray, where: Path) -> bytes:
    import MDAnalysis

    with _quiet_mdanalysis():
        universe = MDAnalysis.Universe(io.StringIO(pdb_text), format="PDB")
    universe.dimensions = None
    tmp = where.with_name(f".{where.name}.selection.pdb")
    try:
        with _quiet_mdanalysis():
            universe.atoms[selected].write(str(tmp))
        return tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)


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
