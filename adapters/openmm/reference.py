"""The resumable reference run: `simulate` (structure file -> trajectory + topology PDB + settings JSON).

Pipeline (`simulate` does all of it)::

    prepare_structure (CHARMM -> Amber names, pdbfixer: missing heavy atoms, hydrogens)
      -> build_system (force field + implicit solvent or vacuum) -> minimise -> equilibrate
      -> production with Langevin dynamics, one frame every ``frame_interval_ps``
      -> trajectory (MDAnalysis writer, velocities when the format holds them) + topology PDB

The first three steps live in `.system`. Trajectories are written through MDAnalysis writers in
Å and Å/ps (what every MDAnalysis reader returns), converted here from OpenMM's nm and nm/ps.

Checkpoints: every ``checkpoint_seconds`` of wall time and at the end, the frames so far are
written to the trajectory (atomically), then ``<out>.checkpoint.npz`` (atomically): the OpenMM
checkpoint (exact continuation, RNG included, on the same platform and OpenMM version), the state
as portable XML (positions, velocities, time: a fallback on another machine, with the Langevin
noise re-seeded from the seed and the frame count so it does not repeat) and the number of frames
written. Running the same command again resumes from it, reading the frames so far back from the
trajectory. The file is small (about 0.3 MB for 3,300 atoms), so a long run's trajectory and
resume file can be committed and continued in another session or on another machine. Version 1
files, which also held every frame, still resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import MDAnalysis
import numpy as np
from tqdm.auto import tqdm

from ...errors import DataError
from ...io import write_atomically
from ..mdanalysis.writers import standalone_universe, write_pdb
from .system import (
    PathLike,
    SimulationSettings,
    build_system,
    make_simulation,
    minimise_and_equilibrate,
    prepare_structure,
    quiet_mdanalysis,
    select_atoms,
)
from .units import NM_TO_ANGSTROM, app, openmm, unit

CHECKPOINT_VERSION = 2
#: Part of the run key (what the structure and settings mean), apart from the resume file's
#: layout, so files of every layout written for the same run resume it.
RUN_KEY_VERSION = 1


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
    selected_atoms = select_atoms(full_pdb.getvalue(), settings.selection)
    selected = selected_atoms.indices.copy()

    ckpt_file = checkpoint_path(out)
    frames_pos: list[np.ndarray] = []
    frames_vel: list[np.ndarray] = []
    resumed = 0
    if ckpt_file.exists():
        frames_pos, frames_vel = _resume(ckpt_file, key, simulation, out, top_file, settings.seed)
        resumed = len(frames_pos)
        log(f"resuming {out} from its checkpoint at frame {resumed} of {settings.num_frames}")
    else:
        minimise_and_equilibrate(simulation, positions, settings, progress, log)
        simulation.currentStep = 0
        simulation.context.setTime(0.0)
    # Written only once the checkpoint (if any) is known to match: never clobber another run's topology.
    with quiet_mdanalysis():
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


def _ns_per_day(steps: int, seconds: float, settings: SimulationSettings) -> float:
    return steps * settings.timestep_fs * 1e-6 / (seconds / 86400.0)


def _run_key(structure: Path, settings: SimulationSettings) -> str:
    # length_ps is left out so that a finished run can be extended by asking for a longer one.
    fields = {k: v for k, v in asdict(settings).items() if k != "length_ps"}
    payload = {"structure": hashlib.sha256(structure.read_bytes()).hexdigest(), "settings": fields,
               "version": RUN_KEY_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
    binary = simulation.context.createCheckpoint()
    state = simulation.context.getState(getPositions=True, getVelocities=True, getParameters=True)
    portable = zlib.compress(openmm.XmlSerializer.serialize(state).encode("utf-8"), 6)

    def write(handle: Any) -> None:
        np.savez(handle, key=np.array(key), version=np.array(CHECKPOINT_VERSION),
                 openmm_checkpoint=np.frombuffer(binary, dtype=np.uint8),
                 state_xml=np.frombuffer(portable, dtype=np.uint8), num_frames=np.array(len(frames_pos)))

    write_atomically(ckpt_file, write)


def _resume(
    ckpt_file: Path, key: str, simulation: "app.Simulation", out: Path, top_file: Path, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Load the checkpoint into ``simulation`` and return the frames written so far (Å, Å/ps)."""
    try:
        with np.load(ckpt_file) as data:
            stored_key = str(data["key"])
            binary = data["openmm_checkpoint"].tobytes()
            portable = data["state_xml"].tobytes() if "state_xml" in data.files else None
            # Version 1 held the frames; version 2 counts them and the trajectory holds them.
            frames = (data["positions"], data["velocities"]) if "positions" in data.files else int(data["num_frames"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{ckpt_file}: unreadable simulation checkpoint ({exc}); delete it to start over") from None
    if stored_key != key:
        raise DataError(
            f"{ckpt_file}: was written for another structure or other settings; delete it to start over"
        )
    positions, velocities = _frames_written(out, top_file, frames, ckpt_file) if isinstance(frames, int) else frames
    try:
        simulation.context.loadCheckpoint(binary)
    except Exception as exc:  # OpenMMException: other platform, OpenMM version or machine
        if portable is None:
            raise DataError(f"{ckpt_file}: OpenMM cannot load it here ({exc}); delete it to start over") from None
        state = openmm.XmlSerializer.deserialize(zlib.decompress(portable).decode("utf-8"))
        # A new noise stream: the integrator's own seed would replay the noise of the run's start.
        simulation.integrator.setRandomNumberSeed(int(seed) * 1_000_003 + len(positions) + 1)
        simulation.context.reinitialize(preserveState=False)
        simulation.context.setState(state)
    return list(positions), list(velocities)


def _frames_written(out: Path, top_file: Path, count: int, ckpt_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` frames of the trajectory a checkpoint belongs to (Å; velocities Å/ps,
    zeros where the format stores none, which the writer then leaves out again). Formats in nm
    come back through float32 unit conversions: within one float32 step of what was written
    (XTC's 0.01 Å grid exactly)."""
    if not out.is_file() or not top_file.is_file():
        raise DataError(f"{ckpt_file}: {out if not out.is_file() else top_file} is missing; the checkpoint "
                        "resumes only beside the trajectory and topology it wrote; delete it to start over")
    with quiet_mdanalysis():
        universe = MDAnalysis.Universe(str(top_file), str(out))
    if len(universe.trajectory) < count:
        raise DataError(f"{ckpt_file}: {out} holds {len(universe.trajectory)} frames, the checkpoint "
                        f"{count}; delete the checkpoint to start over")
    positions, velocities = [], []
    for ts in universe.trajectory[:count]:
        positions.append(ts.positions.astype(np.float32))
        velocities.append(ts.velocities.astype(np.float32) if ts.has_velocities
                          else np.zeros_like(ts.positions, dtype=np.float32))
    return np.array(positions), np.array(velocities)


def write_trajectory(
    out: Path, topology_file: Path, positions: np.ndarray, velocities: np.ndarray, frame_interval_ps: float
) -> None:
    """Write (T, N, 3) positions (Å) and velocities (Å/ps) to ``out`` atomically, format by extension.

    Velocities are stored only when the format can hold them (MDAnalysis writer's capability).
    """
    with quiet_mdanalysis():
        universe = MDAnalysis.Universe(str(topology_file))
    writer_class = MDAnalysis.coordinates.core.get_writer_for(str(out))
    with_velocities = _writes_velocities(writer_class)
    # NCDFWriter stores velocities only when asked to (TRR always does, H5MD by default).
    extra = {"velocities": True} if with_velocities and "NCDF" in _formats(writer_class) else {}
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")
    try:
        with quiet_mdanalysis(), writer_class(str(tmp), n_atoms=positions.shape[1], **extra) as writer:
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
