"""The SPH solver scored as if it were a model: how far two runs of the same scenes, differing only
in a solver setting, drift apart, measured by the rollout report's own criteria (issue 16, item 4).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 fastegnn-md sph generate data/water-scenes-valid-drop-dt1ms --train 1 --valid 3 --test 1 \\
        --frames 600 --particle-radius 0.02 --seed 2 --scenes drop --format h5 --time-step 0.001
    python benchmarks/sph_solver_spread.py data/water-scenes-valid-drop data/water-scenes-valid-drop-dt1ms \\
        --split valid --scene 0 --scene 1 --scene 2 --jumps 38

Both datasets must hold the same scenes (same seed, counts and scene kinds, so the same particles in
the same order); the second is read as a "prediction" of the first. Each scene is scored exactly as
`fastegnn-md rollout` scores a model (`fastegnn_md.reports.sph.compare`: per-jump MSE, Sinkhorn
divergence on 200 particles, kinetic energy; "no motion" and "constant velocity" from the same start
with the backward velocity over one jump), from start frame ``--start`` (default one jump) for
``--jumps`` jumps of ``--jump-frames`` frames (default 15, `water-box`'s jump). It prints, per scene,
the jumps at which the second run is below both trivial predictors on each criterion, its MSE at
1/5/20 jumps beside "no motion"'s, and the jumps where it loses on MSE and on kinetic energy.

What it answers: a deterministic model can at best follow the solver the way the solver follows
itself under a change of its own settings. Where a second, equally valid solver run loses to "no
motion" on MSE, the MSE criterion at that horizon asks a deterministic jump for more than the
physics pins down.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastegnn_md.adapters.sph.trajectory import particle_types_to_attrs, trajectory_convention
from fastegnn_md.conventions import backward_velocity
from fastegnn_md.particle_metrics import default_sinkhorn_reg
from fastegnn_md.reports.per_jump import MODEL
from fastegnn_md.reports.sph import SinkhornSettings, SPHReportInputs, compare
from fastegnn_md.rollout import TRIVIAL_PREDICTORS, StartState
from fastegnn_md.rollouts.sph import read_trajectory
from sph_leak import jump_ranges, lost_jumps  # benchmarks/ is on sys.path when a script in it runs


def score(reference_dir: Path, other_dir: Path, split: str, index: int, jumps: int, jump_frames: int,
          start: int) -> dict:
    """The report of ``other_dir``'s trajectory scored against ``reference_dir``'s (same scene)."""
    metadata, reference = read_trajectory(reference_dir, split, index)
    _, other = read_trajectory(other_dir, split, index)
    where = f"{other_dir} {split} trajectory {index}"
    if other.positions.shape[1:] != reference.positions.shape[1:] or not np.array_equal(
            other.particle_type, reference.particle_type):
        raise SystemExit(f"sph_solver_spread.py: {where}: its particles are not those of {reference_dir}'s scene")
    frames = start + jump_frames * np.arange(jumps + 1)
    if start < jump_frames or frames[-1] >= min(reference.num_frames, other.num_frames):
        raise SystemExit(f"sph_solver_spread.py: --start {start} --jumps {jumps}: frames {start - jump_frames}.."
                         f"{frames[-1]} are not all in both trajectories")
    _, moving = particle_types_to_attrs(reference.particle_type, trajectory_convention(reference))
    jump_time = jump_frames * float(metadata["dt"])
    ref = reference.positions[frames].astype(np.float64)
    before = reference.positions[start - jump_frames].astype(np.float64)
    state = StartState(ref[0], backward_velocity(ref[0], before, jump_time))
    # Only moving particles are scored (`compare`), so the walls need no following here.
    predictions = {MODEL: other.positions[frames[1:]].astype(np.float64),
                   **{name: predictor(state, jumps, jump_time) for name, predictor in TRIVIAL_PREDICTORS.items()}}
    inputs = SPHReportInputs(
        predictions=predictions, reference=ref, moving=moving, jump_frames=jump_frames, jump_time=jump_time,
        start_frame=start,
        sinkhorn=SinkhornSettings(reg=default_sinkhorn_reg(float(metadata["default_connectivity_radius"])),
                                  max_particles=200),
        bounds=metadata.get("bounds"),
    )
    return compare(inputs)


def summary_line(report: dict) -> str:
    """Jumps won on each criterion, MSE at 1/5/20 beside "no motion"'s, the jumps lost."""
    wins = report["summary"]["model_beats_all"]
    at = report["horizons"]["mse_at"]
    mse = " / ".join(f"{at[n][MODEL]:.3g} ({at[n]['no motion']:.3g})" for n in ("1", "5", "20")
                     if n in at and at[n][MODEL] is not None)
    rows = report["per_jump"]
    return (f"MSE wins {wins['mse']} | Sinkhorn wins {wins['sinkhorn']} | kinetic-energy wins "
            f"{wins['kinetic_energy_error']} of {report['model_jumps']} | MSE at 1/5/20 (no motion's) {mse} | "
            f"MSE lost at jumps {jump_ranges(lost_jumps(rows, 'mse'))} | "
            f"kinetic energy lost at jumps {jump_ranges(lost_jumps(rows, 'kinetic_energy_error'))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="SPH dataset read as the reference")
    parser.add_argument("other", type=Path, help="the same scenes from another solver run, read as the prediction")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--scene", type=int, action="append", required=True, help="trajectory index (repeatable)")
    parser.add_argument("--jumps", type=int, default=38)
    parser.add_argument("--jump-frames", type=int, default=15, help="frames per jump (water-box: 15)")
    parser.add_argument("--start", type=int, default=None, help="start frame (default: one jump in)")
    args = parser.parse_args()
    start = args.jump_frames if args.start is None else args.start
    for index in args.scene:
        report = score(args.reference, args.other, args.split, index, args.jumps, args.jump_frames, start)
        print(f"{args.other} against {args.reference}, {args.split} {index}: {summary_line(report)}", flush=True)


if __name__ == "__main__":
    main()
