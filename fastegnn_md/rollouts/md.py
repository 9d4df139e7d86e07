"""The MD case of the rollout pipeline: learned jumps from a frame of any trajectory MDAnalysis reads.

Reads the trajectory (Å, ps) with the checkpoint's selection, rolls the model out from a start
frame (`fastegnn_md.rollouts.pipeline`), streams the predicted and virtual-node frames to disk as
they are made, and writes a report against the reference frames (`fastegnn_md.reports.md`).

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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import MDAnalysis
import numpy as np
from MDAnalysis.lib.util import NamedStream

from .. import spec_keys as keys
from ..adapters.mdanalysis.fit import fit_frames, fit_mode_of
from ..adapters.mdanalysis.kind import MDTrajectoryKind
from ..adapters.mdanalysis.reading import (
    TOPOLOGY_EXTENSIONS,
    atom_masses,
    carries_topology,
    find_topology,
    load_trajectory,
    node_attributes,
    open_universe,
    probe_trajectory,
    select_atoms,
    trajectory_frames,
)
from ..adapters.mdanalysis.whole import make_whole
from ..adapters.mdanalysis.writers import (
    StreamingTrajectoryWriter,
    standalone_universe,
    virtual_node_universe,
    write_pdb,
    writer_extension,
)
from ..checkpoint import PRETRAINED_DIR, Checkpoint, load_checkpoint
from ..errors import CheckpointError, DataError, FastEGNNWarning
from ..io import write_atomically
from ..predictor import Predictor
from .. import metrics
from ..reports.md import ReportInputs, compare, has_backbone, write_report
from ..rollout import DEFAULT_MAX_DISPLACEMENT, RolloutFrame, RolloutResult, StopRollout, start_velocity
from .pipeline import FrameSink, RolloutCase, RolloutOutputs, RolloutRequest, run_rollout

PathLike = Union[str, Path]
DEFAULT_CHECKPOINT = "protein-backbone"
#: The physical range of a rollout's backbone (`metrics.backbone_problem`), kept here by name too.
BOND_TOLERANCE, MIN_CA_CA = metrics.BOND_TOLERANCE, metrics.MIN_CA_CA


@dataclass
class TrajectoryRolloutOutputs(RolloutOutputs):
    """Files a trajectory rollout wrote (besides `RolloutOutputs`'): the predicted trajectory's
    topology and the virtual nodes' trajectory, topology and arrays (None without virtual nodes)."""

    predicted_topology: Optional[Path] = None
    virtual: Optional[Path] = None
    virtual_topology: Optional[Path] = None
    virtual_arrays: Optional[Path] = None


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
    found = find_topology(trajectory)  # a same-stem file beside it
    if found is not None:
        return found, str(found)
    if carries_topology(trajectory):  # the trajectory is its own topology (PDB, GRO)
        return trajectory, str(trajectory)
    traj_atoms = probe_trajectory(trajectory)  # an unreadable file is said first, not "no topology"
    stored = extra.get(keys.TOPOLOGY_PDB)
    stored_atoms = extra.get(keys.TOPOLOGY_NUM_ATOMS)
    if stored and stored_atoms is not None and traj_atoms == stored_atoms:
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


def _open(trajectory: Path, topology: Any) -> Any:
    if isinstance(topology, Path):
        if topology.resolve() == trajectory.resolve():
            return open_universe(trajectory)
        return open_universe(topology, trajectory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        universe = MDAnalysis.Universe(topology, format="PDB")
    load_trajectory(universe, Path("checkpoint-topology.pdb"), [trajectory])
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


def _training_frames(spec: Any, trajectory: Path) -> Optional[tuple[int, int]]:
    """The frames of ``trajectory`` (file numbering) that the checkpoint's training split read, when
    the checkpoint was trained on a file of this name; else None (`DataSpec.train_frames_by_file`)."""
    frames = spec.train_frames_by_file().get(trajectory.name)
    return None if frames is None else (frames[0], frames[1])


class TrajectorySink(FrameSink):
    """Streams predicted frames into ``out`` and the virtual nodes into ``<out stem>-virtual<ext>``.

    Frames go to ``<name>.partial<ext>`` while the rollout runs; `finish` writes the topology PDBs
    and the virtual-node arrays and renames the trajectories into place, so a run that is killed
    keeps its frames under the partial names and leaves a finished earlier result as it was.
    """

    def __init__(self, case: "MDRollout", dt: float) -> None:
        self.case, self.dt = case, dt
        self.virtual_frames: list[np.ndarray] = []
        self.virtual_universe: Any = None
        self.virtual_topology_positions: Optional[np.ndarray] = None
        self.virtual_writer: Optional[StreamingTrajectoryWriter] = None
        self.writer = StreamingTrajectoryWriter(case.out, case.selection_universe, dt, partial=True)
        self.writer.write(case.start.positions, case.start_time)

    def write(self, frame: RolloutFrame) -> None:
        case = self.case
        time = case.start_time + frame.time
        try:
            self.writer.write(frame.positions, time)
            if frame.virtual_positions is None:
                return
            if self.virtual_universe is None:
                self._open_virtual(frame)
            self.virtual_writer.write(frame.virtual_positions, time)
        except (ValueError, OSError) as exc:  # e.g. a PDB output that cannot hold the coordinates
            raise StopRollout(f"cannot write the frame ({' '.join(str(exc).split())})") from None
        self.virtual_frames.append(frame.virtual_positions)

    def _open_virtual(self, frame: RolloutFrame) -> None:
        case = self.case
        count = len(frame.virtual_positions)
        self.virtual_universe = virtual_node_universe(count)
        if not fits_pdb(frame.virtual_positions):
            # PDB columns hold -999.999..9999.999 Å; the trajectory keeps the real values.
            case.notes.append(
                "the virtual nodes of jump 1 lie outside the PDB coordinate range, so "
                f"{case.virtual_topology.name} places them at the protein's centroid; "
                f"{case.virtual_out.name} and {case.virtual_arrays.name} hold their real positions"
            )
            self.virtual_topology_positions = np.repeat(frame.positions.mean(axis=0, keepdims=True), count, 0)
        else:
            self.virtual_topology_positions = np.array(frame.virtual_positions)
        self.virtual_writer = StreamingTrajectoryWriter(case.virtual_out, self.virtual_universe, self.dt, partial=True)

    def close(self) -> None:
        try:
            if self.virtual_writer is not None:
                self.virtual_writer.close()
        finally:
            self.writer.close()

    @property
    def has_virtual(self) -> bool:
        return bool(self.virtual_frames)

    def finish(self, result: RolloutResult) -> None:
        case = self.case
        if case.predicted_topology != case.out:
            write_pdb(case.selection_universe, case.start.positions, case.predicted_topology)
        if self.virtual_universe is not None:
            write_pdb(self.virtual_universe, self.virtual_topology_positions, case.virtual_topology)
        if self.has_virtual:
            times = case.start_time + self.dt * np.arange(1, len(self.virtual_frames) + 1)
            positions = np.stack(self.virtual_frames)
            write_atomically(case.virtual_arrays, lambda h: np.savez(h, positions=positions, times=times))
        if self.virtual_writer is not None:
            self.virtual_writer.commit()
        self.writer.commit()


class MDRollout(RolloutCase):
    """Rollout of a trajectory file: start frame, reference frames at the jump times, streamed files."""

    kind = MDTrajectoryKind
    default_checkpoint = DEFAULT_CHECKPOINT

    def __init__(self, trajectory: PathLike, topology: Optional[PathLike] = None,
                 request: Optional[RolloutRequest] = None) -> None:
        super().__init__(request)
        self.trajectory = Path(trajectory)
        self.topology_arg = topology
        limit = self.request.max_displacement
        self.max_displacement = DEFAULT_MAX_DISPLACEMENT if limit is None else limit

    @classmethod
    def from_cli(cls, args: Any) -> "MDRollout":
        return cls(args.trajectory, topology=args.topology, request=RolloutRequest.from_cli(args))

    def select_checkpoint(self, checkpoint: Optional[PathLike]) -> Checkpoint:
        trajectory = self.trajectory
        if not trajectory.is_file():
            raise DataError(f"{trajectory}: no such trajectory file")
        chosen_by_user = checkpoint is not None
        name = checkpoint if chosen_by_user else DEFAULT_CHECKPOINT
        ckpt = load_checkpoint(name)
        spec = ckpt.data_spec
        if not spec.is_molecular or not spec.selection:
            raise CheckpointError(
                f"{name}: is not a molecular model (units {spec.units}, selection {spec.selection!r}); "
                "rollout of MD trajectories needs one trained on MD data"
            )
        top, self.topology_description = resolve_topology(trajectory, self.topology_arg, spec.extra)
        self.universe = _open(trajectory, top)
        self.atoms = select_atoms(self.universe, spec.selection)
        if spec.num_nodes is not None and len(self.atoms) != spec.num_nodes:
            fitting = shipped_models_for(spec.selection, len(self.atoms))
            if chosen_by_user or not fitting:
                hint = f"; shipped models that fit: {', '.join(fitting)}" if fitting else ""
                raise CheckpointError(
                    f"{name}: was trained on {spec.num_nodes} atoms ({spec.selection!r}) but that selection "
                    f"has {len(self.atoms)} atoms in {trajectory}{hint}"
                )
            # No --checkpoint: the default model does not fit these atoms but another shipped one does.
            self.notes.append(
                f"the default model {DEFAULT_CHECKPOINT} was trained on {spec.num_nodes} atoms and the selection "
                f"has {len(self.atoms)}; used the shipped model {fitting[0]} instead"
            )
            name = fitting[0]
            ckpt = load_checkpoint(name)
        self.checkpoint_name = str(name)
        return ckpt

    def prepare(self, predictor: Predictor, progress: bool) -> None:
        trajectory, universe = self.trajectory, self.universe
        self.spec = predictor.spec
        if predictor.uses_identity:  # computed from this topology (charges come from the checkpoint)
            self.node_attrs, _ = node_attributes(self.atoms, "identity")
        make_whole(universe, self.atoms)
        positions, _, frame_dt = trajectory_frames(universe, self.atoms, progress=progress)
        # A model trained on fitted frames (rigid motion removed) rolls out, and is compared, in the
        # same frame: this trajectory's frames superposed onto its first.
        positions, _ = fit_frames(positions, None, fit_mode_of(self.spec.extra))
        t0 = float(universe.trajectory[0].time)
        times = t0 + frame_dt * np.arange(len(positions))
        dt = predictor.dt
        if times[-1] - times[0] < dt * (1 - 1e-3):
            raise DataError(
                f"{trajectory}: covers {times[-1] - times[0]:g} ps, shorter than one jump of {dt:g} ps "
                f"({len(times)} frames, {frame_dt:g} ps apart)"
            )
        start = self.request.start if self.request.start is not None else default_start(times, dt)
        if not 0 <= start < len(times):
            raise DataError(f"--start {start}: the trajectory has frames 0..{len(times) - 1}")
        jumps = self.request.jumps
        if jumps is None:
            jumps = int(np.floor((times[-1] - times[start]) / dt + 1e-3))
            if jumps < 1:
                raise DataError(
                    f"--start {start}: no reference frame one jump ({dt:g} ps) later; pass --jumps or an earlier --start"
                )
        if jumps < 1:
            raise DataError(f"--jumps {jumps}: must be at least 1")
        self.positions, self.times, self.start_frame, self.jumps = positions, times, start, jumps

        report_dir = self.request.report_dir
        self.report_dir = Path(report_dir) if report_dir is not None else Path(f"{trajectory.stem}-rollout")
        out = self.request.out
        if out is None:
            try:
                ext = writer_extension(trajectory)
            except DataError:
                ext = ".xtc"
            out = self.report_dir / f"predicted{ext}"
        self.out = Path(out)
        ext = writer_extension(self.out)
        self.predicted_topology = self.out if ext.lower() == ".pdb" else self.out.with_suffix(".pdb")
        virtual_stem = self.out.with_name(self.out.stem + "-virtual")
        self.virtual_out = virtual_stem.with_suffix(ext)
        self.virtual_topology = virtual_stem.with_suffix(".pdb")
        self.virtual_arrays = virtual_stem.with_suffix(".npz")
        if not np.isfinite(positions[start]).all():
            raise DataError(f"{trajectory}: frame {start} holds non-finite coordinates; pass another --start")
        self.start = start_velocity(positions, times, start, dt)
        if not np.isfinite(self.start.velocities).all():
            raise DataError(
                f"{trajectory}: the frame before frame {start} that gives the start velocity holds non-finite "
                "coordinates; pass another --start"
            )
        self.start_time = float(times[start])
        self.selection_universe = standalone_universe(self.atoms)
        self.atom_names, self.residue_ids = self.atoms.names.astype(str), self.atoms.resids.copy()
        self.start_geometry, self.geometry_left = None, None
        if has_backbone(self.atom_names):
            self.backbone_pairs = metrics.backbone_pairs(self.atom_names, self.residue_ids)
            self.start_geometry = metrics.backbone_distances(self.start.positions, self.backbone_pairs)
            self.held_pairs = metrics.peptide_plane_pairs(self.atom_names, self.residue_ids)
        self.training_frames = _training_frames(self.spec, trajectory)

    def geometry_problem(self, positions: np.ndarray) -> Optional[str]:
        """Why a frame's backbone left the physical range, or None: a kind of bond whose mean
        length moved more than `BOND_TOLERANCE` from the start frame's, or a CA–CA clash."""
        if self.start_geometry is None:
            return None
        return metrics.backbone_problem(self.start_geometry, metrics.backbone_distances(positions, self.backbone_pairs))

    def frame_problem(self, frame: RolloutFrame) -> Optional[str]:
        """Stops the rollout before the first frame whose backbone leaves the physical range
        (`geometry_problem`), as a diverging prediction does: frames before it kept, exit 1.

        With ``unphysical="warn"`` the rollout goes on; the report, its notes and a warning line
        say from which jump and how.
        """
        if self.geometry_left is None:
            problem = self.geometry_problem(frame.positions)
            if problem:
                self.geometry_left = (frame.jump, problem)
                if self.request.unphysical == "stop":
                    return (f"the backbone left physical geometry: {problem}; pass --unphysical warn to "
                            "roll on regardless")
                warnings.warn(f"jump {frame.jump}: the backbone left physical geometry: {problem}", FastEGNNWarning)
        return None

    def closing_notes(self) -> list[str]:
        if self.geometry_left is None or self.request.unphysical == "stop":
            return []
        jump, problem = self.geometry_left
        return [f"from jump {jump} on the backbone left physical geometry ({problem}); later frames are not "
                "physical structures"]

    def open_sink(self, predictor: Predictor) -> TrajectorySink:
        self.sink = TrajectorySink(self, predictor.dt)
        return self.sink

    def info(self, sink: TrajectorySink) -> dict[str, Any]:
        return {
            "trajectory": str(self.trajectory),
            "topology": self.topology_description,
            "selection": self.spec.selection,
            "atoms": len(self.atoms),
            "predicted_trajectory": str(self.out),
            "predicted_topology": str(self.predicted_topology),
            "virtual_trajectory": str(self.virtual_out) if sink.has_virtual else None,
            "geometry_left_at_jump": None if self.geometry_left is None else self.geometry_left[0],
        }

    def write_report(self, predictions: dict[str, np.ndarray], notes: list[str], info: dict[str, Any],
                     progress: bool) -> tuple[dict[str, Any], dict[str, Path]]:
        report = compare(
            ReportInputs(
                predictions=predictions,
                dt=self.spec.dt,
                start_time=self.start_time,
                start_frame=self.start_frame,
                reference_positions=self.positions,
                reference_times=self.times,
                residue_ids=self.atoms.resids.copy(),
                masses=atom_masses(self.atoms),
                notes=notes,
                info=info,
                atom_names=self.atom_names,
                training_frames=self.training_frames,
                virtual_positions=np.stack(self.sink.virtual_frames) if self.sink.has_virtual else None,
            )
        )
        return report, write_report(report, self.report_dir)

    def outputs(self, sink: TrajectorySink, report: dict[str, Any], files: dict[str, Path],
                stopped: Optional[str]) -> TrajectoryRolloutOutputs:
        virtual = sink.has_virtual
        return TrajectoryRolloutOutputs(
            predicted=self.out,
            report_files=files,
            report=report,
            stopped=stopped,
            predicted_topology=self.predicted_topology,
            virtual=self.virtual_out if virtual else None,
            virtual_topology=self.virtual_topology if virtual else None,
            virtual_arrays=self.virtual_arrays if virtual else None,
        )

    def summary_lines(self, outputs: TrajectoryRolloutOutputs) -> list[str]:
        lines = [f"predicted trajectory: {outputs.predicted} (topology {outputs.predicted_topology})"]
        if outputs.virtual is not None:
            lines.append(
                f"virtual nodes: {outputs.virtual} (topology {outputs.virtual_topology}, arrays {outputs.virtual_arrays})"
            )
        summary = outputs.report["summary"]
        if summary["jumps"]:
            scores = ", ".join(f"{name} {value:.3f} Å" for name, value in summary["mean_rmsd"].items()
                               if value is not None)
            lines.append(f"mean Kabsch RMSD over {summary['jumps']} jumps with reference frames: {scores}")
        else:
            lines.append("no jump time has a reference frame in the trajectory: the report lists the jumps without metrics")
        return lines


def rollout_trajectory(trajectory: PathLike, topology: Optional[PathLike] = None,
                       checkpoint: Optional[PathLike] = None, start: Optional[int] = None, jumps: Optional[int] = None,
                       out: Optional[PathLike] = None, report_dir: Optional[PathLike] = None,
                       max_displacement: float = DEFAULT_MAX_DISPLACEMENT, device: str = "cpu",
                       progress: bool = True, unphysical: str = "stop", sample: bool = False,
                       seed: Optional[int] = 0, hold_geometry: bool = False) -> TrajectoryRolloutOutputs:
    """Roll a checkpoint out from frame ``start`` of ``trajectory`` and report against it.

    checkpoint : path or shipped name; None means the default shipped model (`DEFAULT_CHECKPOINT`)
        or, if that was trained on a different number of atoms, the first shipped model that fits
        (said in the report's notes).
    start : frame index (default: the first frame with a frame one jump before it).
    jumps : number of learned jumps (default: as many as the trajectory covers after start).
    out, report_dir, max_displacement (Å), unphysical : see `RolloutRequest` and the module docstring.
    sample, seed : draw each jump from the checkpoint's spread (`fastegnn-md rollout --sample --seed`).
    hold_geometry : keep each jump's start bonds, bond angles and peptide planes (`--hold-geometry`).
    Raises DataError / CheckpointError with one-line messages (see `resolve_topology`).
    """
    request = RolloutRequest(start, jumps, out, report_dir, max_displacement, unphysical)
    return run_rollout(MDRollout(trajectory, topology, request), checkpoint, device=device, progress=progress,
                       sample=sample, seed=seed, hold_geometry=hold_geometry)
