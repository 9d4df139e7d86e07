"""`fastegnn-md rollout`: learned jumps from a frame of any trajectory MDAnalysis reads.

Reads the trajectory (Å, ps) with the checkpoint's selection, rolls the model out from a start
frame (`fastegnn_md.rollout`), streams the predicted and virtual-node frames to disk as they are
made, and writes a report against the reference frames (`fastegnn_md.report`).

Outputs (``out`` defaults to ``<report>/predicted<ext>``, ext = the input's when MDAnalysis can
write it, else .xtc):

* ``out`` + ``<out stem>.pdb``: predicted trajectory of the selection (frame 0 = start frame)
  and a topology that VMD, PyMOL and MDAnalysis open with it;
* ``<out stem>-virtual.pdb`` + ``<out stem>-virtual<ext>``: the C virtual nodes as pseudo-atoms
  V1..VC (residue VRT, chain V); frame k is the k-th jump (k = 1..K), ``-virtual.npz`` holds the
  same as arrays (``positions`` (K, C, 3) Å, ``times`` (K,) ps);
* ``<report>/report.json``, ``report.md`` and PNG plots.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .checkpoint import load_checkpoint
from .data.sources import TOPOLOGY_EXTENSIONS
from .errors import CheckpointError, DataError
from .io import write_atomically
from .predictor import Predictor
from .report import MODEL, ReportInputs, compare, write_report
from .rollout import (
    DEFAULT_MAX_DISPLACEMENT,
    TRIVIAL_PREDICTORS,
    RolloutFrame,
    StopRollout,
    check_rollout_safe,
    roll_out,
    start_velocity,
)

PathLike = Union[str, Path]
DEFAULT_CHECKPOINT = "adk-backbone"


@dataclass
class RolloutOutputs:
    """Files a trajectory rollout wrote and the report it made."""

    predicted: Path
    predicted_topology: Path
    virtual: Optional[Path]
    virtual_topology: Optional[Path]
    virtual_arrays: Optional[Path]
    report_files: dict[str, Path]
    report: dict[str, Any]
    stopped: Optional[str]


def resolve_topology(trajectory: Path, topology: Optional[PathLike], extra: dict[str, Any]) -> tuple[Any, str]:
    """The topology for ``trajectory``: ``topology`` if given, else a file beside it with the same
    stem (.tpr, .psf, .gro, .pdb), else the checkpoint's stored topology when the atom counts match.

    Returns (something `MDAnalysis.Universe` accepts, a description for the report).
    """
    if topology is not None:
        path = Path(topology)
        if not path.is_file():
            raise DataError(f"--topology {path}: no such file")
        return path, str(path)
    from .data.sources import resolve_md_files

    try:  # a same-stem file beside it, or the trajectory itself when it carries a topology (PDB, GRO)
        found, _ = resolve_md_files(trajectory)
        return found, str(found)
    except DataError:
        pass  # no file: try the checkpoint's topology below
    stored = extra.get("topology_pdb")
    stored_atoms = extra.get("topology_num_atoms")
    traj_atoms = _atom_count(trajectory)
    if stored and stored_atoms is not None and traj_atoms == stored_atoms:
        from MDAnalysis.lib.util import NamedStream

        return NamedStream(io.StringIO(stored), "checkpoint-topology.pdb"), "topology stored in the checkpoint"
    looked = ", ".join(trajectory.stem + ext for ext in TOPOLOGY_EXTENSIONS)
    why = (
        f"the checkpoint's topology has {stored_atoms} atoms, the trajectory {traj_atoms}"
        if stored_atoms is not None
        else "the checkpoint stores no topology"
    )
    raise DataError(f"{trajectory}: no topology found (looked for {looked}; {why}); pass --topology FILE")


def shipped_models_for(selection: Optional[str], num_atoms: int) -> list[str]:
    """Names of shipped checkpoints trained on ``num_atoms`` atoms of ``selection``."""
    from .checkpoint import PRETRAINED_DIR

    found = []
    for path in sorted(PRETRAINED_DIR.glob("*.pt")):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            continue
        if ckpt.data_spec.selection == selection and ckpt.data_spec.num_nodes == num_atoms:
            with_mmd = ckpt.training.get("config", {}).get("mmd_weight", 0) > 0
            found.append((not with_mmd, path.stem))  # full FastEGNN (with MMD) first, ablations after
    return [name for _, name in sorted(found)]


def _atom_count(trajectory: Path) -> Optional[int]:
    from MDAnalysis.coordinates.core import get_reader_for

    try:
        reader = get_reader_for(str(trajectory))(str(trajectory))
    except Exception:  # unreadable or a format that needs a topology to know its atoms
        return None
    try:
        return int(reader.n_atoms)
    finally:
        reader.close()


def _open(trajectory: Path, topology: Any) -> Any:
    import warnings

    from .adapters.mdanalysis import open_universe

    if isinstance(topology, Path):
        if topology.resolve() == trajectory.resolve():
            return open_universe(trajectory)
        return open_universe(topology, trajectory)
    import MDAnalysis

    from .adapters.mdanalysis import _load_trajectory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        universe = MDAnalysis.Universe(topology, format="PDB")
    _load_trajectory(universe, Path("checkpoint-topology.pdb"), [trajectory])
    return universe


def fits_pdb(positions: np.ndarray) -> bool:
    """True if every coordinate (Å) fits the fixed-width columns of a PDB file."""
    return bool(np.all(positions > -999.999) and np.all(positions < 9999.999))


def default_start(times: np.ndarray, dt: float) -> int:
    """First frame with a frame exactly dt before it (exact start velocity), else frame 1 (or 0)."""
    for s in range(1, len(times)):
        earlier = times[:s]
        if np.any(np.abs(times[s] - earlier - dt) <= 1e-3 * dt):
            return s
        if times[s] - times[0] > dt:
            break
    return 1 if len(times) > 1 else 0


def rollout_trajectory(
    trajectory: PathLike,
    topology: Optional[PathLike] = None,
    checkpoint: Optional[PathLike] = None,
    start: Optional[int] = None,
    jumps: Optional[int] = None,
    out: Optional[PathLike] = None,
    report_dir: Optional[PathLike] = None,
    max_displacement: float = DEFAULT_MAX_DISPLACEMENT,
    device: str = "cpu",
    progress: bool = True,
) -> RolloutOutputs:
    """Roll a checkpoint out from frame ``start`` of ``trajectory`` and report against it.

    checkpoint : path or shipped name; None means the default shipped model (`DEFAULT_CHECKPOINT`)
        or, if that was trained on a different number of atoms, the first shipped model that fits
        (said in the report's notes).
    start : frame index (default: the first frame with a frame one jump before it).
    jumps : number of learned jumps (default: as many as the trajectory covers after start).
    Raises DataError / CheckpointError with one-line messages (see `resolve_topology`).
    """
    from .adapters.mdanalysis import (
        StreamingTrajectoryWriter,
        atom_masses,
        make_whole,
        select_atoms,
        standalone_universe,
        trajectory_frames,
        virtual_node_universe,
        write_pdb,
        writer_extension,
    )

    trajectory = Path(trajectory)
    if not trajectory.is_file():
        raise DataError(f"{trajectory}: no such trajectory file")
    chosen_by_user = checkpoint is not None
    checkpoint = checkpoint if chosen_by_user else DEFAULT_CHECKPOINT
    ckpt = load_checkpoint(checkpoint)
    spec = ckpt.data_spec
    if spec.units.get("length") != "Å" or not spec.selection:
        raise CheckpointError(
            f"{checkpoint}: is not a molecular model (units {spec.units}, selection {spec.selection!r}); "
            "rollout of MD trajectories needs one trained on MD data"
        )
    top, top_description = resolve_topology(trajectory, topology, spec.extra)
    universe = _open(trajectory, top)
    atoms = select_atoms(universe, spec.selection)
    notes: list[str] = []
    if spec.num_nodes is not None and len(atoms) != spec.num_nodes:
        fitting = shipped_models_for(spec.selection, len(atoms))
        if chosen_by_user or not fitting:
            hint = f"; shipped models that fit: {', '.join(fitting)}" if fitting else ""
            raise CheckpointError(
                f"{checkpoint}: was trained on {spec.num_nodes} atoms ({spec.selection!r}) but that selection "
                f"has {len(atoms)} atoms in {trajectory}{hint}"
            )
        # No --checkpoint: the default model does not fit these atoms but another shipped one does.
        notes.append(
            f"the default model {DEFAULT_CHECKPOINT} was trained on {spec.num_nodes} atoms and the selection "
            f"has {len(atoms)}; used the shipped model {fitting[0]} instead"
        )
        checkpoint = fitting[0]
        ckpt = load_checkpoint(checkpoint)
    predictor = Predictor(ckpt.build_model(), ckpt.data_spec, ckpt.model_name, device, checkpoint=ckpt)
    check_rollout_safe(predictor)
    spec = predictor.spec
    make_whole(universe, atoms)
    positions, _, frame_dt = trajectory_frames(universe, atoms, progress=progress)
    t0 = float(universe.trajectory[0].time)
    times = t0 + frame_dt * np.arange(len(positions))
    dt = predictor.dt
    if times[-1] - times[0] < dt * (1 - 1e-3):
        raise DataError(
            f"{trajectory}: covers {times[-1] - times[0]:g} ps, shorter than one jump of {dt:g} ps "
            f"({len(times)} frames, {frame_dt:g} ps apart)"
        )
    if start is None:
        start = default_start(times, dt)
    if not 0 <= start < len(times):
        raise DataError(f"--start {start}: the trajectory has frames 0..{len(times) - 1}")
    if jumps is None:
        jumps = int(np.floor((times[-1] - times[start]) / dt + 1e-3))
        if jumps < 1:
            raise DataError(
                f"--start {start}: no reference frame one jump ({dt:g} ps) later; pass --jumps or an earlier --start"
            )
    if jumps < 1:
        raise DataError(f"--jumps {jumps}: must be at least 1")

    report_dir = Path(report_dir) if report_dir is not None else Path(f"{trajectory.stem}-rollout")
    if out is None:
        try:
            ext = writer_extension(trajectory)
        except DataError:
            ext = ".xtc"
        out = report_dir / f"predicted{ext}"
    out = Path(out)
    ext = writer_extension(out)
    predicted_topology = out if ext.lower() == ".pdb" else out.with_suffix(".pdb")
    virtual_stem = out.with_name(out.stem + "-virtual")
    virtual_out = virtual_stem.with_suffix(ext)
    virtual_topology = virtual_stem.with_suffix(".pdb")
    virtual_arrays = virtual_stem.with_suffix(".npz")

    start_state = start_velocity(positions, times, start, dt)
    selection_universe = standalone_universe(atoms)
    if predicted_topology != out:
        write_pdb(selection_universe, start_state.positions, predicted_topology)
    virtual_frames: list[np.ndarray] = []
    virtual_universe = None
    virtual_writer = None

    with StreamingTrajectoryWriter(out, selection_universe, dt) as writer:
        writer.write(start_state.positions, times[start])

        def on_frame(frame: RolloutFrame) -> None:
            nonlocal virtual_universe, virtual_writer
            time = times[start] + frame.time
            try:
                writer.write(frame.positions, time)
                if frame.virtual_positions is None:
                    return
                if virtual_universe is None:
                    virtual_universe = virtual_node_universe(len(frame.virtual_positions))
                    if not fits_pdb(frame.virtual_positions):
                        # PDB columns hold -999.999..9999.999 Å; the trajectory keeps the real values.
                        notes.append(
                            "the virtual nodes of jump 1 lie outside the PDB coordinate range, so "
                            f"{virtual_topology.name} places them at the protein's centroid; "
                            f"{virtual_out.name} and {virtual_arrays.name} hold their real positions"
                        )
                        placeholder = np.repeat(frame.positions.mean(axis=0, keepdims=True), len(frame.virtual_positions), 0)
                        write_pdb(virtual_universe, placeholder, virtual_topology)
                    else:
                        write_pdb(virtual_universe, frame.virtual_positions, virtual_topology)
                    virtual_writer = StreamingTrajectoryWriter(virtual_out, virtual_universe, dt)
                virtual_writer.write(frame.virtual_positions, time)
            except (ValueError, OSError) as exc:  # e.g. a PDB output that cannot hold the coordinates
                raise StopRollout(f"cannot write the frame ({' '.join(str(exc).split())})") from None
            virtual_frames.append(frame.virtual_positions)

        try:
            result = roll_out(
                predictor, start_state, jumps, None, max_displacement, on_frame=on_frame, progress=progress
            )
        finally:
            if virtual_writer is not None:
                virtual_writer.close()

    has_virtual = bool(virtual_frames)
    if has_virtual:
        vt = times[start] + dt * np.arange(1, len(virtual_frames) + 1)
        vp = np.stack(virtual_frames)
        write_atomically(virtual_arrays, lambda h: np.savez(h, positions=vp, times=vt))

    predictions = {MODEL: np.array([f.positions for f in result.frames]).reshape(-1, len(atoms), 3)}
    for name, predictor_fn in TRIVIAL_PREDICTORS.items():
        predictions[name] = predictor_fn(start_state, jumps, dt)
    if start_state.note:
        notes.append(start_state.note)
    stopped = result.stop.reason if result.stop else None
    if stopped:
        notes.append(f"rollout stopped: {stopped}; the {len(result.frames)} frames before it are kept")
    info = {
        "trajectory": str(trajectory),
        "topology": top_description,
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(ckpt.path) if ckpt.path else None,
        "model": ckpt.model_name,
        "selection": spec.selection,
        "atoms": len(atoms),
        "velocity_convention": spec.velocity_convention,
        "predicted_trajectory": str(out),
        "predicted_topology": str(predicted_topology),
        "virtual_trajectory": str(virtual_out) if has_virtual else None,
        "stopped": stopped,
    }
    report = compare(
        ReportInputs(
            predictions=predictions,
            dt=dt,
            start_time=float(times[start]),
            start_frame=start,
            reference_positions=positions,
            reference_times=times,
            residue_ids=atoms.resids.copy(),
            masses=atom_masses(atoms),
            notes=notes,
            info=info,
        )
    )
    files = write_report(report, report_dir)
    return RolloutOutputs(
        predicted=out,
        predicted_topology=predicted_topology,
        virtual=virtual_out if has_virtual else None,
        virtual_topology=virtual_topology if has_virtual else None,
        virtual_arrays=virtual_arrays if has_virtual else None,
        report_files=files,
        report=report,
        stopped=stopped,
    )
