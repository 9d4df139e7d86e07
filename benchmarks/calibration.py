"""Calibration of the jump spread (`fastegnn-md calibrate`) on held-out replicas, per checkpoint and file.

Usage (from the repository root)::

    python benchmarks/calibration.py runs/protein-backbone/FastEGNN_3_0/seed*/best.pt \
        --data trajectories/villin/villin_seed1.xtc --data trajectories/villin/villin_seed2.xtc \
        --data trajectories/villin/villin_seed3.xtc --data trajectories/adk/adk_seed2_cont.xtc \
        --heldout trajectories/villin/villin_seed4.xtc --heldout trajectories/adk/adk_seed1_cont.xtc

For every checkpoint (e.g. the training seeds of one recipe) it fits the spread on the validation
blocks of ``--data`` (the checkpoint never trained on them) exactly as `fastegnn-md calibrate`
does, then scores it on every pair of each ``--heldout`` file separately (read as the checkpoint
was trained, after its equilibration discard): predicted/observed residual variance (goal
0.8–1.2), the fraction of residual components inside 1σ and 2σ (Gaussian: 68.3 %, 95.4 %), the
whitened variance (1 when the correlations are right too) and the variance ratio in the lowest and
highest fifth of predicted σ. Prints one Markdown table; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from fastegnn_md.calibration import calibrate_checkpoint, residuals_of
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.datasets import open_for_checkpoint
from fastegnn_md.spread import calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--heldout", type=Path, action="append", required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    rows, records = [], {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        fit = [p for f in args.data for p in open_for_checkpoint(f, ckpt.data_spec, progress=False).load("valid")]
        spread, report = calibrate_checkpoint(ckpt, fit)
        records[str(path)] = {"fit": report["fit"], "spread": {"length": spread.length, "local": spread.local,
                                                               "shared": spread.shared}}
        for heldout in args.heldout:
            pairs = open_for_checkpoint(heldout, ckpt.data_spec, progress=False).load("all")
            figures = calibration(spread, residuals_of(ckpt, pairs))
            records[str(path)][heldout.name] = figures
            rows.append([str(path), heldout.name, str(len(pairs)), f"{figures['variance_ratio']:.3f}",
                         f"{100 * figures['within_1sigma']:.1f}", f"{100 * figures['within_2sigma']:.1f}",
                         f"{figures['whitened']:.3f}", f"{figures['by_scale'][0]['variance_ratio']:.2f}",
                         f"{figures['by_scale'][-1]['variance_ratio']:.2f}", f"{spread.length:.2f}"])
    header = ["checkpoint", "held out", "pairs", "pred/obs variance", "in 1σ (%)", "in 2σ (%)", "whitened",
              "ratio, lowest σ fifth", "ratio, highest σ fifth", "ℓ (Å)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for name in {row[1] for row in rows}:
        ratios = [float(row[3]) for row in rows if row[1] == name]
        print(f"\n{name}: pred/obs variance {np.mean(ratios):.3f} ± {np.std(ratios):.3f} over {len(ratios)} checkpoints")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
