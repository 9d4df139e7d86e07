"""Pick among trained checkpoints (e.g. the seeds of one recipe) by how long their rollouts stay
physical from starts in the *validation* blocks of their training files, so that the held-out
replicas stay unseen by the choice.

Usage (from the repository root)::

    python benchmarks/rollout_selection.py runs/protein-backbone/FastEGNN_3_0/seed*/best.pt \
        --jumps 100 --start trajectories/villin/villin_seed1.xtc:1895 --start trajectories/adk/adk_seed2_cont.xtc:425

For every checkpoint and start it rolls out ``--jumps`` jumps with the CLI's physical-range check
(`fastegnn_md.metrics.backbone_problem`) and prints the jump at which it would stop (``none``: it
did not), the Rg range of the rollout (Å) and the sum of physical jumps over the starts, which is
the selection score (higher is better; a tie goes to the checkpoint listed first).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import MDAnalysis
import numpy as np

from fastegnn_md import metrics
from fastegnn_md.rollouts import rollout_trajectory


def physical_jumps(checkpoint: Path, trajectory: Path, start: int, jumps: int) -> tuple[int, str, str]:
    """(jumps made before the physical-range check stops it, that jump or "none", "Rg min–max" in Å)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = rollout_trajectory(trajectory, None, checkpoint, start=start, jumps=jumps, report_dir=Path(tmp) / "r",
                                 progress=False)
        info = out.report["info"]
        predicted = MDAnalysis.Universe(info["predicted_topology"], info["predicted_trajectory"])
        frames = np.stack([predicted.atoms.positions.copy() for _ in predicted.trajectory])  # start + jumps made
        rg = metrics.radius_of_gyration(frames, predicted.atoms.masses)
    made = len(frames) - 1
    return made, "none" if out.stopped is None else str(made + 1), f"{rg.min():.2f}–{rg.max():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--start", action="append", required=True, metavar="FILE:FRAME",
                        help="a start: trajectory file and frame (a validation frame of the training data)")
    parser.add_argument("--jumps", type=int, default=100)
    args = parser.parse_args()
    starts = [(Path(spec.rsplit(":", 1)[0]), int(spec.rsplit(":", 1)[1])) for spec in args.start]
    warnings.simplefilter("ignore")
    print("| checkpoint | " + " | ".join(f"{path.name}@{frame}: stop (Rg Å)" for path, frame in starts)
          + " | physical jumps |")
    print("|---|" + "---|" * len(starts) + "---:|")
    scores = []
    for checkpoint in args.checkpoints:
        cells, total = [], 0
        for path, frame in starts:
            made, stop, rg = physical_jumps(checkpoint, path, frame, args.jumps)
            cells.append(f"{stop} ({rg})")
            total += made
        scores.append(total)
        print(f"| {checkpoint} | " + " | ".join(cells) + f" | {total} |", flush=True)
    print(f"selected: {args.checkpoints[int(np.argmax(scores))]}")


if __name__ == "__main__":
    main()
