"""The SPH case of the rollout pipeline: learned jumps from a frame of an SPH dataset trajectory.

Reads one trajectory of a split (`fastegnn_md.adapters.sph.open_sph_dataset`: LagrangeBench
HDF5 or DeepMind TFRecord), rolls the checkpoint out from a start frame
(`fastegnn_md.rollouts.pipeline`), and compares every jump with the reference frame at the same
time and with the trivial predictors (`fastegnn_md.reports.sph`).

Units are the dataset's (length L = its coordinates, time T = ``metadata["dt"]`` per stored
frame). One jump spans J = the checkpoint's ``frame_stride`` stored frames; the checkpoint's
``dt`` is that jump in whatever time unit it was trained with, and the velocities fed to it
follow the checkpoint's convention in that unit:

* ``backward``: the start velocity is (x_s − x_{s−J}) / dt from the reference (so the start
  frame s must be >= J); jump k is fed (x̂_k − x̂_{k−1}) / dt from the rollout's own frames.
* ``forward`` (the paper's x[t+1] − x[t]) needs the future and is refused.

Particles whose type is kinematic (walls) are inputs only: after every jump they are put where
the reference has them (in the trivial predictors too) and they are never scored. The rollout
stops early, keeping every frame made, on a non-finite prediction or a particle that moves more
than ``max_displacement`` (default: the diagonal of ``metadata["bounds"]``, i.e. out of the
domain) in one jump.

With ``keep_in_box`` M (`--keep-in-box`; off by default) the water is put back inside the box
after every jump, M from any face it crossed or came nearer than M to, in the model's rollout
and the trivial predictors' alike (`fastegnn_md.rollouts.box_constraint`); the report's info
holds M and the model's particles it moved at each jump, and a note says so. With
``keep_density`` (`--keep-density`; off by default) the water is then pushed apart until none of it
is denser than at rest, again for every predictor (`fastegnn_md.rollouts.density_constraint`; the
particle radius from ``--particle-radius`` or the metadata's generator settings); the info holds,
per jump, the model's densest water before and after the push and the particles it moved. With a particle
radius (``--particle-radius``, else the metadata's) the report also gives every predictor's
densest water relative to the rest density (`fastegnn_md.reports.sph`, ``densest_water``).

Outputs: ``out`` (default ``<report>/predicted.h5``), a LagrangeBench HDF5 file with one
trajectory (group ``"00000"``: ``position`` (1 + K, N, 3) float32 — row 0 the start frame, row k
jump k, walls included — and the dataset's ``particle_type``), readable with
`fastegnn_md.adapters.sph.read_lagrangebench`, streamed frame by frame into
``<stem>.partial.h5`` and renamed into place when the rollout ends (a killed run keeps its
frames there); and ``<report>/report.json``, ``report.md``,
``frames.png``, ``errors.png``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .. import spec_keys as keys
from ..adapters.sph.dataset import open_sph_dataset
from ..adapters.sph.kind import SPHDatasetKind
from ..adapters.sph.lagrangebench import StreamingLagrangeBenchWriter
from ..adapters.sph.trajectory import particle_types_to_attrs, trajectory_convention
from ..checkpoint import Checkpoint, load_checkpoint
from ..conventions import backward_velocity
from ..errors import CheckpointError, DataError
from ..particle_metrics import SINKHORN_MAX_PARTICLES, default_sinkhorn_reg
from ..predictor import Predictor
from ..reports.sph import SinkhornSettings, SPHReportInputs, beats_all_line, compare, write_report
from ..rollout import RolloutFrame, RolloutResult, StartState, StopRollout
from .box_constraint import KeepInBox, chain
from .density_constraint import KeepDensity, particle_radius_of
from .pipeline import FrameSink, RolloutCase, RolloutOutputs, RolloutRequest, run_rollout

PathLike = Union[str, Path]

#: The outputs of an SPH rollout (the pipeline's).
SPHRolloutOutputs = RolloutOutputs


def read_trajectory(directory: PathLike, split: str, index: int) -> tuple[dict[str, Any], Any]:
    """(metadata, the ``index``-th `SPHTrajectory` of ``split``), in file order (HDF5 group names
    sorted, TFRecord records in order). DataError if the split has no such trajectory."""
    if index < 0:
        raise DataError(f"--trajectory {index}: must be >= 0")
    metadata, trajectories = open_sph_dataset(directory, split)
    count = 0
    for count, trajectory in enumerate(trajectories, start=1):
        if count - 1 == index:
            return metadata, trajectory
    raise DataError(
        f"--trajectory {index}: split {split!r} of {directory} has {count} trajector{'y' if count == 1 else 'ies'}"
        + (f" (0..{count - 1})" if count else "")
    )


def bounds_diagonal(bounds: Any) -> float:
    """Length of the diagonal of ``metadata["bounds"]`` ([[lo, hi]] per axis), L."""
    extent = np.asarray(bounds, dtype=np.float64)
    return float(np.sqrt(((extent[:, 1] - extent[:, 0]) ** 2).sum()))


class HDF5Sink(FrameSink):
    """Streams the predicted frames into a LagrangeBench HDF5 file (`StreamingLagrangeBenchWriter`):
    the start frame first, then each jump as it is made, under ``<stem>.partial.h5`` until the
    rollout ends; a rollout that stops early (divergence) keeps its frames and is renamed into
    place like a finished one, a killed one leaves them under the partial name."""

    def __init__(self, case: "SPHRollout") -> None:
        self.case = case
        self.writer = StreamingLagrangeBenchWriter(case.out, case.traj.particle_type, case.reference.shape[-1])
        self.writer.write(case.reference[0])

    def write(self, frame: RolloutFrame) -> None:
        try:
            self.writer.write(frame.positions)
        except (OSError, ValueError) as exc:
            raise StopRollout(f"cannot write the frame ({' '.join(str(exc).split())})") from None

    def close(self) -> None:
        self.writer.close()

    def finish(self, result: RolloutResult) -> None:
        self.writer.commit()


#: The shipped SPH model `fastegnn-md rollout DATA_DIR` uses without --checkpoint
#: (`fastegnn_md/pretrained/README.md`: water in a closed box, walls stored as particles).
DEFAULT_SPH_CHECKPOINT = "water-box"


class SPHRollout(RolloutCase):
    """Rollout of one trajectory of an SPH dataset split; walls follow the reference."""

    kind = SPHDatasetKind
    default_checkpoint = DEFAULT_SPH_CHECKPOINT

    def __init__(self, dataset: PathLike, split: str = "test", trajectory: int = 0,
                 sinkhorn_particles: int = SINKHORN_MAX_PARTICLES, request: Optional[RolloutRequest] = None,
                 keep_in_box: Optional[float] = None, keep_density: bool = False,
                 particle_radius: Optional[float] = None) -> None:
        super().__init__(request)
        self.dataset, self.split, self.index = Path(dataset), split, trajectory
        self.sinkhorn_particles = sinkhorn_particles
        self.keep_in_box = keep_in_box
        self.box: Optional[KeepInBox] = None
        self.model_moved: list[int] = []
        self.keep_density, self.particle_radius = bool(keep_density), particle_radius
        self.density: Optional[KeepDensity] = None
        self.model_pushed: list[int] = []
        self.model_densest: list[float] = []
        self.model_after: list[float] = []
        self.chosen_by_user = True

    @classmethod
    def from_cli(cls, args: Any) -> "SPHRollout":
        return cls(
            args.trajectory, split=args.split or "test",
            trajectory=args.trajectory_index if args.trajectory_index is not None else 0,
            sinkhorn_particles=args.sinkhorn_particles or SINKHORN_MAX_PARTICLES,
            request=RolloutRequest.from_cli(args),
            keep_in_box=getattr(args, "keep_in_box", None),
            keep_density=bool(getattr(args, "keep_density", None)),
            particle_radius=getattr(args, "particle_radius", None),
        )

    def select_checkpoint(self, checkpoint: Optional[PathLike]) -> Checkpoint:
        self.chosen_by_user = checkpoint is not None
        if checkpoint is None:
            checkpoint = self.default_checkpoint
            self.notes.append(f"no --checkpoint: used the shipped SPH model {checkpoint}")
        ckpt = load_checkpoint(checkpoint)
        spec = ckpt.data_spec
        if spec.is_molecular or spec.selection:
            raise CheckpointError(
                f"{checkpoint}: is a molecular model (units {spec.units}, selection {spec.selection!r}); "
                "rollouts of SPH datasets need one trained on SPH data"
            )
        self.checkpoint_name = str(checkpoint)
        return ckpt

    def prepare(self, predictor: Predictor, progress: bool) -> None:
        spec = self.spec = predictor.spec
        jump_frames = int(spec.frame_stride)
        if jump_frames < 1:
            raise CheckpointError(
                f"{self.checkpoint_name}: frame_stride {spec.frame_stride} is not a positive number of frames"
            )
        if self.sinkhorn_particles < 1:
            raise DataError(f"--sinkhorn-particles {self.sinkhorn_particles}: must be >= 1")
        request = self.request
        if request.report_dir is None:
            self.report_dir = Path(f"{self.dataset.resolve().name}-{self.split}{self.index}-rollout")
        else:
            self.report_dir = Path(request.report_dir)
        self.out = Path(request.out) if request.out is not None else self.report_dir / "predicted.h5"
        if self.out.suffix.lower() not in (".h5", ".hdf5"):
            raise DataError(f"--out {self.out}: the predicted SPH trajectory is LagrangeBench HDF5; give a .h5 file name")

        self.metadata, traj = read_trajectory(self.dataset, self.split, self.index)
        where = f"{self.dataset} {self.split} trajectory {self.index}"
        if traj.dim != 3:
            raise DataError(f"{where}: positions are {traj.dim}-D; the models need 3-D particles")
        self.convention = trajectory_convention(traj)
        trained_convention = spec.extra.get(keys.PARTICLE_TYPE_CONVENTION)
        # The shipped default may not suit every dataset: then say how to choose another.
        hint = "" if self.chosen_by_user else "; pass --checkpoint with a model trained on data like it"
        if trained_convention is not None and trained_convention != self.convention:
            raise CheckpointError(
                f"{self.checkpoint_name}: was trained on {trained_convention!r} particle types but {where} uses "
                f"{self.convention!r}{hint}"
            )
        try:
            attrs, moving = particle_types_to_attrs(traj.particle_type, self.convention)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        try:
            spec.check_fits(attrs.shape[1], traj.num_particles, where=where)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}{hint}") from None
        if not moving.any():
            raise DataError(f"{where}: has no moving particles (only walls) to roll out")
        self.traj, self.node_attrs, self.moving = traj, attrs, moving
        self.jumps, self.start_frame = self._jumps_and_start(traj.num_frames, jump_frames, where)

        frame_dt = self.frame_dt = float(self.metadata["dt"])
        self.jump_frames, self.jump_time = jump_frames, jump_frames * frame_dt
        if not any(math.isclose(spec.dt, jump_frames * unit, rel_tol=1e-6) for unit in (1.0, frame_dt)):
            self.notes.append(
                f"the checkpoint's jump dt {spec.dt:g} is neither {jump_frames} frames nor {jump_frames} x the "
                f"dataset's dt {frame_dt:g}: velocities are fed in the checkpoint's unit as trained; check its "
                "frame_stride"
            )
        limit = request.max_displacement
        if limit is None:
            self.max_displacement = bounds_diagonal(self.metadata["bounds"])
        elif not limit > 0:
            raise DataError(f"--max-displacement {limit}: must be positive")
        else:
            self.max_displacement = limit

        start = self.start_frame
        frames = start + jump_frames * np.arange(self.jumps + 1)
        self.reference = traj.positions[frames].astype(np.float64)  # (K + 1, N, 3): start, then one per jump
        before = traj.positions[start - jump_frames].astype(np.float64)
        for frame, values in [(start - jump_frames, before), *zip(frames.tolist(), self.reference)]:
            if not np.isfinite(values).all():  # walls follow the reference, and every jump is scored
                raise DataError(f"{where}: frame {frame} holds non-finite coordinates; pass another --start or --jumps")
        self.start = StartState(self.reference[0], backward_velocity(self.reference[0], before, spec.dt))
        self.walls = ~moving
        self.constrain = self.follow_walls if self.walls.any() else None
        if self.keep_in_box is not None:
            self.box = KeepInBox(self.metadata.get("bounds"), self.keep_in_box, moving)
            self.constrain = chain(self.constrain, self.box)
        self.solver_radius = self._solver_radius()
        if self.keep_density:  # after the box: water put back inside is then spread from the wall
            where = "--keep-density" if self.particle_radius is None else f"--particle-radius {self.particle_radius}"
            self.density = KeepDensity(self.solver_radius, moving, self.metadata.get("bounds"), where=where)
            self.constrain = chain(self.constrain, self.density)

    def _solver_radius(self) -> Optional[float]:
        """The particle radius for the report's densest water: --particle-radius, else the
        metadata's (None when neither gives one; with --keep-density that is a DataError)."""
        if self.particle_radius is not None and not (np.isfinite(self.particle_radius) and self.particle_radius > 0):
            raise DataError(f"--particle-radius {self.particle_radius}: must be a positive length")
        try:
            return particle_radius_of(self.metadata, self.particle_radius)
        except DataError:
            if self.keep_density:
                raise
            return None

    def _jumps_and_start(self, num_frames: int, jump_frames: int, where: str) -> tuple[int, int]:
        start = jump_frames if self.request.start is None else self.request.start
        if not jump_frames <= start <= num_frames - 1 - jump_frames:
            if num_frames < 2 * jump_frames + 1:
                raise DataError(
                    f"{where}: {num_frames} frames are too few for one jump of {jump_frames} frames after a "
                    f"start with a velocity (need {2 * jump_frames + 1})"
                )
            raise DataError(
                f"--start {start}: must be in {jump_frames}..{num_frames - 1 - jump_frames} (the start velocity "
                f"needs frame start - {jump_frames}, the first jump frame start + {jump_frames}; {num_frames} frames)"
            )
        available = (num_frames - 1 - start) // jump_frames
        jumps = available if self.request.jumps is None else self.request.jumps
        if jumps < 1:
            raise DataError(f"--jumps {jumps}: must be at least 1")
        if jumps > available:
            raise DataError(
                f"--jumps {jumps}: from start frame {start} the trajectory ({num_frames} frames) has reference "
                f"frames for at most {available} jumps of {jump_frames} frames"
            )
        return jumps, start

    def follow_walls(self, k: int, positions: np.ndarray) -> np.ndarray:
        """Jump k's positions with the walls where the reference has them."""
        positions = np.array(positions, dtype=np.float64)
        positions[self.walls] = self.reference[k, self.walls]
        return positions

    def open_sink(self, predictor: Predictor) -> HDF5Sink:
        return HDF5Sink(self)

    def frame_problem(self, frame: RolloutFrame) -> Optional[str]:
        # Called on each of the model's frames right after its constraint: the box's count is the model's.
        if self.box is not None:
            self.model_moved.append(self.box.last_moved)
        if self.density is not None:
            self.model_pushed.append(self.density.last_moved)
            self.model_densest.append(self.density.last_density)
            self.model_after.append(self.density.last_after)
        return None

    def closing_notes(self) -> list[str]:
        count = int(self.walls.sum())
        notes = [f"{count} wall particles follow the reference and are not scored"] if count else []
        if self.box is not None:
            moved = self.model_moved
            notes.append(
                f"--keep-in-box {self.box.margin:g}: after every jump, water outside the box or nearer a face than "
                f"{self.box.margin:g} was moved back to {self.box.margin:g} from it, for every predictor; it moved "
                f"at most {max(moved, default=0)} of the model's particles at one jump ({sum(moved)} moves over "
                f"{len(moved)} jumps), so 'outside the box' counts are after the constraint, not the model's own"
            )
        if self.density is not None:
            notes.append(
                f"--keep-density: after every jump, water denser than at rest (particle radius "
                f"{self.density.particle_radius:g}, the solver's cubic kernel) was pushed apart, for every predictor; "
                f"before the push the model's densest water was {_densest_line(self.model_densest)} times the rest "
                f"density, and the push moved at most {max(self.model_pushed, default=0)} of its particles at one "
                "jump, so the density and positions scored are after the constraint, not the model's own"
            )
            limit = 1.0 + self.density.tolerance
            short = [after for after in self.model_after if after > limit]
            if short:
                notes.append(
                    f"--keep-density: at {len(short)} of {len(self.model_after)} jumps the push stopped after "
                    f"{self.density.iterations} sweeps above {limit:g} times the rest density (at most {max(short):.3g})"
                )
        return notes

    def info(self, sink: HDF5Sink) -> dict[str, Any]:
        key = self.traj.key
        return {
            "dataset": str(self.dataset),
            "split": self.split,
            "trajectory": self.index,
            "trajectory_key": key if isinstance(key, str) else int(key),
            "checkpoint_dt": self.spec.dt,
            "dataset_dt": self.frame_dt,
            "particle_type_convention": self.convention,
            "max_displacement": self.max_displacement,
            "predicted_trajectory": str(self.out),
            **({"keep_in_box": self.box.margin, "constrained_particles": list(self.model_moved)}
               if self.box is not None else {}),
            **({"keep_density": {"particle_radius": self.density.particle_radius,
                                 "tolerance": self.density.tolerance,
                                 "densest_before": list(self.model_densest),
                                 "densest_after": list(self.model_after),
                                 "pushed_particles": list(self.model_pushed)}}
               if self.density is not None else {}),
        }

    def write_report(self, predictions: dict[str, np.ndarray], notes: list[str], info: dict[str, Any],
                     progress: bool) -> tuple[dict[str, Any], dict[str, Path]]:
        inputs = SPHReportInputs(
            predictions=predictions,
            reference=self.reference,
            moving=self.moving,
            jump_frames=self.jump_frames,
            jump_time=self.jump_time,
            start_frame=self.start_frame,
            sinkhorn=SinkhornSettings(
                reg=default_sinkhorn_reg(float(self.metadata["default_connectivity_radius"])),
                max_particles=self.sinkhorn_particles,
            ),
            bounds=self.metadata.get("bounds"),
            density_radius=float(self.metadata["default_connectivity_radius"]),
            particle_radius=self.solver_radius,
            notes=notes,
            info=info,
        )
        report = compare(inputs, progress=progress)
        return report, write_report(report, self.report_dir, inputs)

    def outputs(self, sink: HDF5Sink, report: dict[str, Any], files: dict[str, Path],
                stopped: Optional[str]) -> RolloutOutputs:
        return RolloutOutputs(predicted=self.out, report_files=files, report=report, stopped=stopped)

    def summary_lines(self, outputs: RolloutOutputs) -> list[str]:
        report = outputs.report
        horizons = report["horizons"]["mse_at"]
        scores = "; ".join(
            f"{name} " + " / ".join("–" if per[name] is None else f"{per[name]:.3g}" for per in horizons.values())
            for name in report["predictors"]
        )
        lines = [
            f"predicted trajectory: {outputs.predicted} (LagrangeBench HDF5, start + {report['model_jumps']} jumps)",
            f"MSE at {' / '.join(horizons)} jumps: {scores}",
        ]
        outside = report.get("outside_box")
        if outside is not None:
            lines.append("most particles outside the box at any jump: " + ", ".join(
                f"{name} {count}" for name, count in outside.items()))
        if self.box is not None:
            lines.append(f"--keep-in-box {self.box.margin:g}: moved at most {max(self.model_moved, default=0)} of the "
                         "model's particles back into the box at one jump")
        if self.density is not None:
            lines.append(f"--keep-density: the model's densest water before the push {_densest_line(self.model_densest)} "
                         f"times the rest density; moved at most {max(self.model_pushed, default=0)} particles at one jump")
        lines.append(f"jumps where the model is below both trivial predictors: {beats_all_line(report['summary'])}")
        return lines


def _densest_line(densest: list[float]) -> str:
    """'1.83 at most (median 1.41 over 20 jumps)' for the per-jump densest relative densities."""
    if not densest:
        return "not measured (no jump)"
    return f"{max(densest):.3g} at most (median {float(np.median(densest)):.3g} over {len(densest)} jumps)"


def rollout_sph(dataset: PathLike, checkpoint: PathLike, split: str = "test", trajectory: int = 0,
                start: Optional[int] = None, jumps: Optional[int] = None, out: Optional[PathLike] = None,
                report_dir: Optional[PathLike] = None, max_displacement: Optional[float] = None,
                sinkhorn_particles: int = SINKHORN_MAX_PARTICLES, device: str = "cpu",
                progress: bool = True, keep_in_box: Optional[float] = None, keep_density: bool = False,
                particle_radius: Optional[float] = None, sample: bool = False, seed: int = 0) -> RolloutOutputs:
    """Roll ``checkpoint`` out on trajectory ``trajectory`` of ``split`` of an SPH dataset directory.

    start : start frame s (default J, the first with a backward start velocity).
    jumps : number of learned jumps (default: as many as the trajectory covers after s; more is
        an error, since walls follow and metrics need the reference frames).
    out : predicted LagrangeBench HDF5 file (default ``<report_dir>/predicted.h5``).
    report_dir : default ``./<dataset name>-<split><trajectory>-rollout``.
    max_displacement : per-jump displacement (L) that stops the rollout (default: bounds diagonal).
    sinkhorn_particles : at most this many particles enter each Sinkhorn divergence.
    keep_in_box : M (L) of the opt-in box constraint (module docstring); None: off.
    keep_density : the opt-in incompressibility constraint (module docstring); particle_radius
        its r (L) and the report's densest water's, default the metadata's.
    sample : draw each jump from the checkpoint's spread (`fastegnn-md calibrate`), seeded by ``seed``.
    Raises DataError / CheckpointError with one-line messages.
    """
    request = RolloutRequest(start, jumps, out, report_dir, max_displacement)
    case = SPHRollout(dataset, split, trajectory, sinkhorn_particles, request, keep_in_box=keep_in_box,
                      keep_density=keep_density, particle_radius=particle_radius)
    return run_rollout(case, checkpoint, device=device, progress=progress, sample=sample, seed=seed)
