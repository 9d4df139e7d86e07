"""`fastegnn-md rollout DATASET_DIR`: learned jumps from a frame of an SPH dataset trajectory.

Reads one trajectory of a split (`fastegnn_md.adapters.sph.open_sph_dataset`: LagrangeBench
HDF5 or DeepMind TFRecord), rolls the checkpoint out from a start frame (`fastegnn_md.rollout`),
and compares every jump with the reference frame at the same time and with the trivial predictors
(`fastegnn_md.sph_report`).

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

Outputs: ``out`` (default ``<report>/predicted.h5``), a LagrangeBench HDF5 file with one
trajectory (group ``"00000"``: ``position`` (1 + K, N, 3) float32 — row 0 the start frame, row k
jump k, walls included — and the dataset's ``particle_type``), readable with
`fastegnn_md.adapters.sph.read_lagrangebench`; and ``<report>/report.json``, ``report.md``,
``frames.png``, ``errors.png``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .checkpoint import load_checkpoint
from .errors import CheckpointError, DataError
from .particle_metrics import SINKHORN_MAX_PARTICLES, default_sinkhorn_reg
from .predictor import Predictor
from .report import MODEL
from .rollout import TRIVIAL_PREDICTORS, StartState, check_rollout_safe, roll_out
from .sph_report import SinkhornSettings, SPHReportInputs, compare, write_report

PathLike = Union[str, Path]


@dataclass
class SPHRolloutOutputs:
    """Files an SPH rollout wrote, the report it made, and why it stopped early (or None)."""

    predicted: Path
    report_files: dict[str, Path]
    report: dict[str, Any]
    stopped: Optional[str]


def read_trajectory(directory: PathLike, split: str, index: int) -> tuple[dict[str, Any], Any]:
    """(metadata, the ``index``-th `SPHTrajectory` of ``split``), in file order (HDF5 group names
    sorted, TFRecord records in order). DataError if the split has no such trajectory."""
    from .adapters.sph import open_sph_dataset

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


def rollout_sph(
    dataset: PathLike,
    checkpoint: PathLike,
    split: str = "test",
    trajectory: int = 0,
    start: Optional[int] = None,
    jumps: Optional[int] = None,
    out: Optional[PathLike] = None,
    report_dir: Optional[PathLike] = None,
    max_displacement: Optional[float] = None,
    sinkhorn_particles: int = SINKHORN_MAX_PARTICLES,
    device: str = "cpu",
    progress: bool = True,
) -> SPHRolloutOutputs:
    """Roll ``checkpoint`` out on trajectory ``trajectory`` of ``split`` of an SPH dataset directory.

    start : start frame s (default J, the first with a backward start velocity).
    jumps : number of learned jumps (default: as many as the trajectory covers after s; more is
        an error, since walls follow and metrics need the reference frames).
    out : predicted LagrangeBench HDF5 file (default ``<report_dir>/predicted.h5``).
    report_dir : default ``./<dataset name>-<split><trajectory>-rollout``.
    max_displacement : per-jump displacement (L) that stops the rollout (default: bounds diagonal).
    sinkhorn_particles : at most this many particles enter each Sinkhorn divergence.
    Raises DataError / CheckpointError with one-line messages.
    """
    from .adapters.sph import SPHTrajectory, particle_types_to_attrs, trajectory_convention, write_lagrangebench

    dataset = Path(dataset)
    ckpt = load_checkpoint(checkpoint)
    spec = ckpt.data_spec
    if spec.units.get("length") == "Å" or spec.selection:
        raise CheckpointError(
            f"{checkpoint}: is a molecular model (units {spec.units}, selection {spec.selection!r}); "
            "rollouts of SPH datasets need one trained on SPH data"
        )
    predictor = Predictor(ckpt.build_model(), spec, ckpt.model_name, device, checkpoint=ckpt)
    check_rollout_safe(predictor)
    jump_frames = int(spec.frame_stride)
    if jump_frames < 1:
        raise CheckpointError(f"{checkpoint}: frame_stride {spec.frame_stride} is not a positive number of frames")
    if sinkhorn_particles < 1:
        raise DataError(f"--sinkhorn-particles {sinkhorn_particles}: must be >= 1")

    if report_dir is None:
        report_dir = f"{dataset.resolve().name}-{split}{trajectory}-rollout"
    report_dir = Path(report_dir)
    out = Path(out) if out is not None else report_dir / "predicted.h5"
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise DataError(f"--out {out}: the predicted SPH trajectory is LagrangeBench HDF5; give a .h5 file name")

    metadata, traj = read_trajectory(dataset, split, trajectory)
    where = f"{dataset} {split} trajectory {trajectory}"
    if traj.dim != 3:
        raise DataError(f"{where}: positions are {traj.dim}-D; the models need 3-D particles")
    convention = trajectory_convention(traj)
    trained_convention = spec.extra.get("particle_type_convention")
    if trained_convention is not None and trained_convention != convention:
        raise CheckpointError(
            f"{checkpoint}: was trained on {trained_convention!r} particle types but {where} uses {convention!r}"
        )
    try:
        attrs, moving = particle_types_to_attrs(traj.particle_type, convention)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    spec.check_fits(attrs.shape[1], traj.num_particles, where=where)
    if not moving.any():
        raise DataError(f"{where}: has no moving particles (only walls) to roll out")

    num_frames = traj.num_frames
    if start is None:
        start = jump_frames
    if not jump_frames <= start <= num_frames - 1 - jump_frames:
        if num_frames < 2 * jump_frames + 1:
            raise DataError(
                f"{where}: {num_frames} frames are too few for one jump of {jump_frames} frames after a "
                f"start with a velocity (need {2 * jump_frames + 1})"
            )
        raise DataError(
            f"--start {start}: must be in {jump_frames}..{num_frames - 1 - jump_frames} (the start velocity needs "
            f"frame start - {jump_frames}, the first jump frame start + {jump_frames}; {num_frames} frames)"
        )
    available = (num_frames - 1 - start) // jump_frames
    if jumps is None:
        jumps = available
    if jumps < 1:
        raise DataError(f"--jumps {jumps}: must be at least 1")
    if jumps > available:
        raise DataError(
            f"--jumps {jumps}: from start frame {start} the trajectory ({num_frames} frames) has reference "
            f"frames for at most {available} jumps of {jump_frames} frames"
        )

    frame_dt = float(metadata["dt"])
    jump_time = jump_frames * frame_dt
    notes: list[str] = []
    if not any(math.isclose(spec.dt, jump_frames * unit, rel_tol=1e-6) for unit in (1.0, frame_dt)):
        notes.append(
            f"the checkpoint's jump dt {spec.dt:g} is neither {jump_frames} frames nor {jump_frames} x the dataset's "
            f"dt {frame_dt:g}: velocities are fed in the checkpoint's unit as trained; check its frame_stride"
        )
    if max_displacement is None:
        max_displacement = bounds_diagonal(metadata["bounds"])
    elif not max_displacement > 0:
        raise DataError(f"--max-displacement {max_displacement}: must be positive")

    frames = start + jump_frames * np.arange(jumps + 1)
    reference = traj.positions[frames].astype(np.float64)  # (K + 1, N, 3): start, then one per jump
    before = traj.positions[start - jump_frames].astype(np.float64)
    start_state = StartState(reference[0], (reference[0] - before) / spec.dt)
    walls = ~moving

    def follow_walls(k: int, positions: np.ndarray) -> np.ndarray:
        positions = np.array(positions, dtype=np.float64)
        positions[walls] = reference[k, walls]
        return positions

    result = roll_out(
        predictor, start_state, jumps, attrs, max_displacement, progress=progress,
        constrain=follow_walls if walls.any() else None,
    )
    predicted = np.stack([reference[0]] + [frame.positions for frame in result.frames])

    written = SPHTrajectory(predicted, traj.particle_type, key=traj.key, convention=convention)
    write_lagrangebench(out, [written])

    predictions = {MODEL: predicted[1:]}
    for name, predictor_fn in TRIVIAL_PREDICTORS.items():
        trivial = predictor_fn(start_state, jumps, spec.dt)
        trivial[:, walls] = reference[1:, walls]
        predictions[name] = trivial
    stopped = result.stop.reason if result.stop else None
    if stopped:
        notes.append(f"rollout stopped: {stopped}; the {len(result.frames)} frames before it are kept")
    if walls.any():
        notes.append(f"{int(walls.sum())} wall particles follow the reference and are not scored")
    info = {
        "dataset": str(dataset),
        "split": split,
        "trajectory": trajectory,
        "trajectory_key": traj.key if isinstance(traj.key, str) else int(traj.key),
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(ckpt.path) if ckpt.path else None,
        "model": ckpt.model_name,
        "velocity_convention": spec.velocity_convention,
        "checkpoint_dt": spec.dt,
        "dataset_dt": frame_dt,
        "particle_type_convention": convention,
        "max_displacement": max_displacement,
        "predicted_trajectory": str(out),
        "stopped": stopped,
    }
    inputs = SPHReportInputs(
        predictions=predictions,
        reference=reference,
        moving=moving,
        jump_frames=jump_frames,
        jump_time=jump_time,
        start_frame=start,
        sinkhorn=SinkhornSettings(
            reg=default_sinkhorn_reg(float(metadata["default_connectivity_radius"])),
            max_particles=sinkhorn_particles,
        ),
        bounds=metadata.get("bounds"),
        notes=notes,
        info=info,
    )
    report = compare(inputs, progress=progress)
    files = write_report(report, report_dir, inputs)
    return SPHRolloutOutputs(predicted=out, report_files=files, report=report, stopped=stopped)
