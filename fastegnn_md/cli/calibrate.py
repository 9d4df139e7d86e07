"""`fastegnn-md calibrate`: fit a checkpoint's jump spread on data it did not train on (stochastic jumps)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..conventions import SPLITS
from ..data.kinds import ALL_SPLITS
from .common import UsageError, set_torch_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser(
        "calibrate",
        help="fit the spread of a checkpoint's jump (for sampled jumps) and measure its calibration",
        description="Fits a Gaussian spread around the checkpoint's mean jump (per-node scale and "
                    "distance correlation, fastegnn_md.spread) on --data (default: its validation "
                    "blocks, never trained on), measures it on --heldout, and writes a new checkpoint.",
    )
    ca.add_argument("checkpoint", help="checkpoint path or shipped model name")
    ca.add_argument("--data", required=True, type=Path, action="append",
                    help="data to fit on, read as the checkpoint was trained (repeat for several files)")
    ca.add_argument("--split", default="valid", choices=(*SPLITS, ALL_SPLITS),
                    help="block of --data to fit on (default valid: the checkpoint never trained on it)")
    ca.add_argument("--heldout", type=Path, action="append", default=[],
                    help="data to measure the calibration on, every pair (repeat for several files)")
    ca.add_argument("--out", required=True, type=Path, help="the new checkpoint (.pt)")
    ca.add_argument("--topology", type=Path, default=None, help="MD: topology file for every --data/--heldout")
    ca.add_argument("--threads", type=int, default=None, help="torch threads")
    ca.add_argument("--json", action="store_true", help="print the calibration figures as JSON")
    ca.add_argument("--quiet", action="store_true", help="no progress bars")
    ca.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate_checkpoint, save_with_spread
    from ..checkpoint import load_checkpoint
    from ..datasets import open_for_checkpoint

    set_torch_threads(args.threads)
    if args.out.suffix != ".pt":
        raise UsageError(f"--out {args.out}: expected a .pt checkpoint path")
    ckpt = load_checkpoint(args.checkpoint)

    def load(paths: list[Path], split: str) -> list:
        pairs = []
        for path in paths:
            dataset = open_for_checkpoint(path, ckpt.data_spec, topology=args.topology, progress=not args.quiet)
            pairs += dataset.load(split)
        return pairs

    fit_pairs = load(args.data, args.split)
    if not fit_pairs:
        raise UsageError(f"--data: the {args.split} split holds no examples")
    heldout = load(args.heldout, ALL_SPLITS)
    fitted_on = {"data": [str(p) for p in args.data], "split": args.split, "heldout": [str(p) for p in args.heldout]}
    spread, report = calibrate_checkpoint(ckpt, fit_pairs, heldout, fitted_on=fitted_on)
    save_with_spread(ckpt, spread, args.out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_calibration(report, spread, ckpt.data_spec.units.get("length", "")))
        print(f"wrote {args.out}")
    return 0


def format_calibration(report: dict, spread, unit: str) -> str:
    """The calibration figures as a small table (fit data and held-out data)."""
    lines = [f"spread: correlated over ℓ = {spread.length:.3g} {unit} (local {spread.local:.2f}, shared "
             f"{spread.shared:.2f}); goal: predicted/observed variance 0.8–1.2, 68 % / 95 % inside 1σ / 2σ",
             f"  {'':9}  {'examples':>8}  {'pred/obs var':>12}  {'in 1σ':>6}  {'in 2σ':>6}  {'whitened':>8}  "
             f"{'rms resid':>9}  {'rms σ':>7}"]
    for name in ("fit", "heldout"):
        c = report.get(name)
        if c is None:
            continue
        whitened = "–" if c["whitened"] is None else f"{c['whitened']:.3f}"
        lines.append(f"  {name:9}  {c['examples']:8d}  {c['variance_ratio']:12.3f}  {100 * c['within_1sigma']:5.1f}%  "
                     f"{100 * c['within_2sigma']:5.1f}%  {whitened:>8}  {c['rms_residual']:9.3g}  {c['rms_sigma']:7.3g}")
    return "\n".join(lines)
