"""One-jump radius-of-gyration bias of a checkpoint's mean jump, on frames it did not train on.

Usage (from the repository root)::

    python benchmarks/rg_bias.py runs/a/best.pt runs/b/best.pt \
        --data trajectories/villin/villin_seed1.xtc --data trajectories/adk/adk_seed2_cont.xtc

For every checkpoint and file (topology: the file's stem with .pdb), one jump from every
jump-spaced reference frame after ``--discard`` that is **not** in the checkpoint's training block
of that file (`DataSpec.train_frames_by_file`; for a file it trained on these are its validation
and test blocks, for any other file all frames): input x_t and the backward velocity
(x_t − x_{t−Δt})/Δt, as in a rollout. Printed per cell, in Å: the mean jump's own drift, the mean
of Rg(μ) − Rg(x) ± its standard error; MD's drift over the same pairs, the mean of Rg(y) − Rg(x)
(0 in expectation at equilibrium, but with ~20× the noise: MD's ΔRg over one jump scatters by
~0.1 Å); and the mean of Rg(μ) − Rg(y). A rollout of mean jumps changes Rg by about the model's
drift every jump (issue 14, "Rg inside the reference's range"), so that drift, against 0, is
what a loss weight that acts on the envelope (``--radial-distance-weight``) is chosen by, on the
training files' held-back blocks, never on a held-out replica.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import MDAnalysis
import numpy as np

from fastegnn_md import metrics
from fastegnn_md.adapters.mdanalysis.fit import fit_frames, fit_mode_of
from fastegnn_md.adapters.mdanalysis.reading import node_attributes, select_atoms, trajectory_frames
from fastegnn_md.adapters.mdanalysis.whole import make_whole
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.predictor import Predictor


def rg_bias(checkpoint: str, trajectory: Path, discard: int,
            batch: int = 32) -> tuple[int, float, float, float, float]:
    """(pairs, mean Rg(μ) − Rg(x), its standard error, mean Rg(y) − Rg(x), mean Rg(μ) − Rg(y)), Å, one file."""
    ckpt = load_checkpoint(checkpoint)
    predictor = Predictor(ckpt.build_model(), ckpt.data_spec, str(checkpoint), "cpu", checkpoint=ckpt)
    spec = predictor.spec
    universe = MDAnalysis.Universe(str(trajectory.with_suffix(".pdb")), str(trajectory))
    atoms = select_atoms(universe, spec.selection)
    attrs = node_attributes(atoms, "identity")[0] if predictor.uses_identity else None
    make_whole(universe, atoms)
    positions, _, frame_dt = trajectory_frames(universe, atoms, progress=False)
    positions, _ = fit_frames(positions, None, fit_mode_of(spec.extra))
    step = int(round(predictor.dt / frame_dt))
    starts = np.arange(max(discard, step), len(positions) - step, step)
    trained = spec.train_frames_by_file().get(trajectory.name)
    if trained is not None:  # no pair may touch a frame of the training block
        first, last = trained[0], trained[1]
        starts = starts[(starts + step < first) | (starts - step > last)]
    if len(starts) == 0:
        raise SystemExit(f"{trajectory}: no frame after --discard {discard} outside the training block")
    means = []
    for chunk in np.array_split(starts, max(1, len(starts) // batch)):
        velocities = (positions[chunk] - positions[chunk - step]) / predictor.dt
        means.append(predictor.predict(positions[chunk], velocities, attrs).positions)
    masses = atoms.masses
    rg_x = metrics.radius_of_gyration(positions[starts], masses)
    rg_y = metrics.radius_of_gyration(positions[starts + step], masses)
    rg_mean = metrics.radius_of_gyration(np.concatenate(means), masses)
    drift = rg_mean - rg_x
    return (len(starts), float(drift.mean()), float(drift.std(ddof=1) / np.sqrt(len(drift))),
            float(np.mean(rg_y - rg_x)), float(np.mean(rg_mean - rg_y)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", action="append", required=True, type=Path, help="trajectory (topology: stem.pdb)")
    parser.add_argument("--discard", type=int, default=225, help="frames of each file to skip (default 225)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("| checkpoint | " + " | ".join(f"{path.name}: pairs; Rg(μ)−Rg(x); MD: Rg(y)−Rg(x); Rg(μ)−Rg(y) (Å)"
                                          for path in args.data) + " | largest model drift (Å per jump) |")
    print("|---|" + "---|" * len(args.data) + "---:|")
    for checkpoint in args.checkpoints:
        cells, worst = [], 0.0
        for path in args.data:
            pairs, drift, error, md_drift, bias = rg_bias(checkpoint, path, args.discard)
            cells.append(f"{pairs}; {drift:+.4f} ± {error:.4f}; {md_drift:+.4f}; {bias:+.4f}")
            worst = max(worst, abs(drift))
        print(f"| {checkpoint} | " + " | ".join(cells) + f" | {worst:.4f} |", flush=True)


if __name__ == "__main__":
    main()
