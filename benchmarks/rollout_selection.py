"""Pick among trained checkpoints (e.g. the seeds of one recipe) by how long their rollouts stay
physical from starts in the *validation* blocks of their training files, so that the held-out
replicas stay unseen by the choice.

Usage (from the repository root)::

    python benchmarks/rollout_selection.py runs/protein-backbone/FastEGNN_3_0/seed*/best.pt \
        --jumps 100 --start trajectories/villin/villin_seed1.xtc:1895 --start trajectories/adk/adk_seed2_cont.xtc:425

For every checkpoint and start it rolls out ``--jumps`` jumps with the CLI's physical-range check
(`fastegnn_md.metrics.backbone_problem`) and prints the jump at which it would stop (``none``: it
did not), the Rg range of the whole rollout and of the reference frames it spans (Å), the sum
of physical jumps over the starts, and the largest distance (Å) by which the rollout's Rg left the
reference's range at any start. The selection score is the physical jumps (higher is better), then
that Rg excursion (smaller is better: with `--hold-geometry` every rollout may stay physical, and
the excursion is what is left to choose by); a tie goes to the checkpoint listed first. Given
held-out starts instead, the same table scores a chosen model.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import MDAnalysis
import numpy as np

from fastegnn_md import metrics
from fastegnn_md.rollouts import rollout_trajectory


def physical_jumps(checkpoint: Path, trajectory: Path, start: int, jumps: int,
                   sample_seed: Optional[int] = None, hold_geometry: bool = False) -> tuple[int, str, str, str, float]:
    """(jumps made before the physical-range check would stop the CLI, that jump or "none",
    "Rg min–max" of the whole rollout and of the reference frames it spans, and how far the
    rollout's Rg left the reference's range (0 if it stayed inside), in Å).

    The rollout runs on past the check (``unphysical="warn"``) so that its Rg covers all
    ``jumps``; the count of physical jumps is the CLI's. ``sample_seed``: sampled jumps
    (`--sample --seed`) instead of the mean; ``hold_geometry``: mean jumps with the start's bonds,
    angles and peptide planes held (`--hold-geometry`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = rollout_trajectory(trajectory, None, checkpoint, start=start, jumps=jumps, report_dir=Path(tmp) / "r",
                                 progress=False, unphysical="warn", sample=sample_seed is not None,
                                 seed=sample_seed or 0, hold_geometry=hold_geometry)
        info = out.report["info"]
        predicted = MDAnalysis.Universe(info["predicted_topology"], info["predicted_trajectory"])
        frames = np.stack([predicted.atoms.positions.copy() for _ in predicted.trajectory])  # start + jumps made
        rg = metrics.radius_of_gyration(frames, predicted.atoms.masses)
        reference = [row["reference_radius_of_gyration"] for row in out.report["per_jump"]
                     if row.get("reference_radius_of_gyration") is not None]
    made = len(frames) - 1
    left = info.get("geometry_left_at_jump")
    if out.stopped is not None:  # not finite, or exploding: a stop whatever the check says
        left = made + 1 if left is None else min(left, made + 1)
    physical = made if left is None else left - 1
    reference_range = f"{min(reference):.2f}–{max(reference):.2f}" if reference else "–"
    excursion = max(0.0, min(reference) - float(rg.min()), float(rg.max()) - max(reference)) if reference else 0.0
    return (physical, "none" if left is None else str(left), f"{rg.min():.2f}–{rg.max():.2f}", reference_range,
            excursion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--start", action="append", required=True, metavar="FILE:FRAME",
                        help="a start: trajectory file and frame (a validation frame of the training data)")
    parser.add_argument("--jumps", type=int, default=100)
    parser.add_argument("--sample-seed", type=int, default=None,
                        help="roll out sampled jumps with this seed (the checkpoint needs a spread) instead of the mean")
    parser.add_argument("--hold-geometry", action="store_true",
                        help="mean jumps with each start's bonds, bond angles and peptide planes held")
    args = parser.parse_args()
    starts = [(Path(spec.rsplit(":", 1)[0]), int(spec.rsplit(":", 1)[1])) for spec in args.start]
    warnings.simplefilter("ignore")
    print("| checkpoint | " + " | ".join(f"{path.name}@{frame}: stop (Rg Å; reference)" for path, frame in starts)
          + " | physical jumps | largest Rg excursion (Å) |")
    print("|---|" + "---|" * len(starts) + "---:|---:|")
    scores = []
    for checkpoint in args.checkpoints:
        cells, total, excursion = [], 0, 0.0
        for path, frame in starts:
            made, stop, rg, reference, outside = physical_jumps(checkpoint, path, frame, args.jumps,
                                                                args.sample_seed, args.hold_geometry)
            cells.append(f"{stop} ({rg}; {reference})")
            total += made
            excursion = max(excursion, outside)
        scores.append((total, -excursion))
        print(f"| {checkpoint} | " + " | ".join(cells) + f" | {total} | {excursion:.2f} |", flush=True)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first listed wins a tie
    print(f"selected: {args.checkpoints[best]}")


if __name__ == "__main__":
    main()
