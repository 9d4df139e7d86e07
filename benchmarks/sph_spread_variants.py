"""Spreads for sampled SPH jumps with parts of `fastegnn-md calibrate`'s fit taken out (issue 16, item 4).

    python benchmarks/sph_spread_variants.py water-box --data data/water3d-bench --split valid --out runs/spreads

writes one checkpoint per variant (the model and data spec of CHECKPOINT plus a fitted spread,
as `fastegnn-md calibrate` writes them) for `sph_leak.py --sample SEED`:

* ``calibrated``: `calibrate`'s fit as it is (`fastegnn_md.spread.fit_spread`).
* ``no-previous``: fitted with the invariant "previous displacement" |v| Δt held constant, so
  the noise a sampled jump puts into a particle's velocity cannot raise that particle's next σ
  through this column (it still can through the model's predicted displacement).
* ``no-previous-no-shared``: as ``no-previous``, with the part of the variance every water
  particle shares (``shared``, a common translation of the whole scene) set to zero; the
  locally correlated part ``local`` is kept.
* ``no-shared``: `calibrate`'s fit with ``shared`` set to zero.

The residuals are collected once (the checkpoint's mean jump on the split) and printed beside
each fit's calibration on them. An experiment on the sampled jump's energy, not a feature.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from fastegnn_md.calibration import packing_radius, residuals_of, save_with_spread
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.datasets import open_for_checkpoint
from fastegnn_md.spread import NAMED_INVARIANTS, Residuals, calibration, fit_spread

PREVIOUS = NAMED_INVARIANTS.index("log previous displacement")
VARIANTS = ("calibrated", "no-previous", "no-previous-no-shared", "no-shared")


def without_column(residuals: Residuals, column: int) -> Residuals:
    """The same residuals with one invariant column set to 0 (its fitted weight then stays 0)."""
    held = copy.copy(residuals)
    held.invariants = [inv.copy() for inv in residuals.invariants]
    for inv in held.invariants:
        inv[:, column] = 0.0
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="SPH checkpoint (path or shipped name)")
    parser.add_argument("--data", type=Path, required=True, help="SPH dataset to fit on")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--out", type=Path, required=True, help="folder for the variant checkpoints")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    pairs = open_for_checkpoint(args.data, ckpt.data_spec, progress=False).load(args.split)
    radius = packing_radius(ckpt)
    residuals = residuals_of(ckpt, pairs, radius=radius)
    args.out.mkdir(parents=True, exist_ok=True)
    print("| variant | weights (predicted, previous, packing) | local | shared | ℓ | pred/obs var | in 1σ / 2σ "
          "| rms σ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        fit_on = without_column(residuals, PREVIOUS) if "no-previous" in variant else residuals
        spread = fit_spread(fit_on, radius, fitted_on={"data": str(args.data), "split": args.split, "variant": variant})
        if "no-shared" in variant:
            spread.shared = 0.0
        spread.calibration = {"fit": calibration(spread, fit_on), "heldout": None}
        c = spread.calibration["fit"]
        weights = ", ".join(f"{w:+.3f}" for w in spread.weights[: len(NAMED_INVARIANTS)])
        print(f"| {variant} | {weights} | {spread.local:.2f} | {spread.shared:.2f} | {spread.length:.3g} | "
              f"{c['variance_ratio']:.3f} | {100 * c['within_1sigma']:.0f} % / {100 * c['within_2sigma']:.0f} % | "
              f"{c['rms_sigma']:.3g} |", flush=True)
        save_with_spread(ckpt, spread, args.out / f"{variant}.pt")
    print(f"rms residual {np.sqrt(np.mean(np.concatenate([np.sum(r * r, 1) for r in residuals.residuals]) / 3)):.3g} "
          f"per component; wrote {len(VARIANTS)} checkpoints to {args.out}")


if __name__ == "__main__":
    main()
