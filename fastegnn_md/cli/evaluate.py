"""`fastegnn-md evaluate`: test MSE of a checkpoint and its inference time relative to EGNN."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..conventions import SPLITS
from ..data.kinds import ALL_SPLITS
from .common import add_device_arguments, positive_int, set_torch_threads, torch_device
from .train import add_md_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="test MSE and inference time relative to EGNN")
    ev.add_argument("checkpoint", help="checkpoint path or shipped model name")
    ev.add_argument("--data", required=True, type=Path, help="dataset directory or MD trajectory file")
    add_md_arguments(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress bar while reading a trajectory")
    ev.add_argument("--split", default="test", choices=(*SPLITS, ALL_SPLITS),
                    help="which block to score (default test); all: every pair of the data, e.g. a replica "
                         "that was never trained on")
    ev.add_argument("--max-examples", type=positive_int, default=None)
    ev.add_argument("--batch-size", type=positive_int, default=50)
    ev.add_argument("--repeats", type=positive_int, default=3, help="timing repeats (median is reported)")
    add_device_arguments(ev)
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..data.kinds import check_flags
    from ..datasets import kind_for_path, open_for_checkpoint
    from ..evaluation import evaluate_checkpoint

    device = torch_device(args.device)
    set_torch_threads(args.threads)
    given = {"--topology": args.topology, "--cache-dir": args.cache_dir}
    if args.data.exists() and any(value is not None for value in given.values()):
        check_flags(kind_for_path(args.data), given, f"--data {args.data}")
    ckpt = load_checkpoint(args.checkpoint)
    dataset = open_for_checkpoint(
        args.data, ckpt.data_spec, topology=args.topology, cache_dir=args.cache_dir, progress=not args.quiet
    )
    pairs = dataset.load(args.split, args.max_examples)
    result = evaluate_checkpoint(ckpt, pairs, batch_size=args.batch_size, repeats=args.repeats, device=device,
                                 precision=args.precision)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result, len(pairs), args.split, ckpt.data_spec.units["length"]))
    return 0


def format_result(result: dict, examples: int, split: str, length_unit: str) -> str:
    """The evaluation as a small table: model, no motion and constant velocity, lab and aligned."""
    gain = result["gain_over_no_motion"]
    rows = [("model " + result["model"], {"mse": result["mse"], "aligned_mse": result["aligned_mse"]})]
    rows += [(name.replace("_", " "), scores) for name, scores in result["baselines"].items()]
    width = max(len(name) for name, _ in rows)
    where = "every split" if split == ALL_SPLITS else f"the {split} split"
    lines = [f"{examples} examples of {where}, MSE in {length_unit}^2 (aligned: rigid motion removed per frame)",
             f"  {'':{width}}  {'lab MSE':>12}  {'aligned MSE':>12}"]
    lines += [f"  {name:{width}}  {s['mse']:12.6g}  {s['aligned_mse']:12.6g}" for name, s in rows]
    lines.append(f"  model against no motion: {100 * gain['mse']:+.1f} % lab, {100 * gain['aligned_mse']:+.1f} % aligned "
                 "(positive: the model is better)")
    lines.append(f"  inference {result['seconds']:.3f} s, {result['relative_time']:.3f}x EGNN "
                 f"({result['egnn_seconds']:.3f} s, same process)")
    spread = result.get("spread_calibration")
    if spread:
        lines.append(f"  spread (sampled jumps): predicted/observed variance {spread['variance_ratio']:.3f}, "
                     f"{100 * spread['within_1sigma']:.1f} % / {100 * spread['within_2sigma']:.1f} % of residuals "
                     "inside 1σ / 2σ (Gaussian 68.3 % / 95.4 %)")
    return "\n".join(lines)
