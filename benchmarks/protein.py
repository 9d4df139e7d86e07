"""The paper's Table 1, protein column, scored on a held-out MD replica over training seeds.

    python benchmarks/protein.py --trajectory trajectories/villin/villin_seed1.xtc \\
        --replica trajectories/villin/villin_seed2.xtc --replica trajectories/villin/villin_seed3.xtc \\
        --heldout trajectories/villin/villin_seed4.xtc --stride 5 --jump 1 --seeds 0 1 2 \\
        --only "FastEGNN<3,0.75>"

Trains each model of the column (Linear, EGNN, EGNN*, FastEGNN ⟨3,0⟩ ⟨3,0.75⟩ ⟨3,1⟩, "w/o MMD"
= FastEGNN⟨3,0.75⟩ with λ = 0, "global nodes") once per seed on the training files (each split
into its own blocks, `--replica`), read as `fastegnn-md train` reads them (backbone, identity
node attributes, frames fitted onto the first by default: `--fit`), with the same budget; runs
resume. Then, in one process, it scores every model on **every pair of the held-out file**,
which no model trained on (`--heldout`; without it, the test blocks of the training files),
lab-frame and Kabsch-aligned MSE (Å²) beside "no motion" and "constant velocity", mean ± SD over
the seeds and the gain over no motion; the forward time of a held-out traversal relative to
EGNN (seed 0's models, interleaved); and rolls each seed's `--rollout-model` out for
`--rollout-jumps` jumps from the held-out file's first frame: finite or not, Rg range against
the held-out reference's, aligned RMSD at the end, largest backbone bond change.

Hyperparameters follow Appendix C for protein (λ 0.5, lr 5e-4, weight decay 1e-12, hidden 64,
4 layers) except σ = 10 Å (coordinates enter the models divided by 10 Å; σ = 1 Å leaves the MMD
term without gradient, docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import MDAnalysis
import numpy as np
import torch
from model_table import Entry, add_run_arguments, run_dir

from fastegnn_md import metrics
from fastegnn_md.adapters.mdanalysis import resolve_md_files
from fastegnn_md.adapters.mdanalysis.kind import MDOptions, open_md_trajectory
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.data.kinds import ALL_SPLITS
from fastegnn_md.evaluation import jump_scores, predict_positions, reference_egnn
from fastegnn_md.models.fastegnn import VIRTUAL_INITS
from fastegnn_md.predictor import Predictor
from fastegnn_md.rollout import StartState, roll_out
from fastegnn_md.runtime import tune_allocator
from fastegnn_md.training import TrainConfig, Trainer, time_inference

# Paper Table 1, protein column: MSE (Å²) and time relative to EGNN.
ENTRIES = [
    Entry("Linear", "linear", paper_mse=2.26, paper_time=0.01),
    Entry("EGNN", "egnn", paper_mse=2.25, paper_time=1.00),
    Entry("EGNN*", "egnn", drop_rate=1.0, paper_mse=2.26, paper_time=0.06),
    Entry("FastEGNN<3,0>", "fastegnn", 0.0, 3, 1.82, 1.39),
    Entry("FastEGNN<3,0.75>", "fastegnn", 0.75, 3, 1.88, 0.96),
    Entry("FastEGNN<3,1>", "fastegnn", 1.0, 3, 1.88, 0.80),
    Entry("w/o MMD", "fastegnn", 0.75, 3),
    Entry("global nodes", "global_nodes", 0.75, 3),
]
NO_MMD = {"w/o MMD"}


def seed_dir(runs: Path, entry: Entry, seed: int) -> Path:
    return run_dir(runs, entry) / f"seed{seed}"


def heldout_pairs(heldout: Optional[Path], discard: float, options: MDOptions, training) -> tuple[list, str]:
    """Every pair of the held-out file after ``discard`` ps (all its blocks), or, without one,
    the training files' test blocks."""
    if heldout is None:
        return training.load("test"), "test blocks of the training files"
    held = open_md_trajectory(heldout, replace(options, replicas=(), discard_ps=discard))
    return held.load(ALL_SPLITS), f"all of {heldout.name} after {discard:g} ps"


def rollout_check(checkpoint: Path, pairs: list, backbone: dict, jumps: int) -> dict:
    """Roll out from the first of ``pairs`` (one file's, in frame order) and compare with that
    file's own frames; ``backbone``: `metrics.backbone_pairs` of its atoms."""
    by_input = {p.metadata["frames"][0]: p for p in pairs}
    first = pairs[0]
    reference_rg = metrics.radius_of_gyration(np.stack([p.positions for p in pairs]))
    predictor = Predictor.from_checkpoint(checkpoint)
    result = roll_out(predictor, StartState(np.asarray(first.positions), first.velocities), jumps,
                      node_attrs=first.node_attrs)
    frames = [f.positions for f in result.frames]
    rg = metrics.radius_of_gyration(np.stack(frames)) if frames else np.array([np.nan])
    step = first.metadata["frames"][1] - first.metadata["frames"][0]
    last_pair = by_input.get(first.metadata["frames"][0] + (len(frames) - 1) * step)
    start = metrics.backbone_distances(first.positions, backbone)
    lengths = [metrics.backbone_distances(f, backbone) for f in frames]
    bond_change = max((max(np.abs(now[k] - start[k]).max() for k in ("N-CA", "CA-C", "C-N")) for now in lengths),
                      default=np.nan)
    mean_change = max((max(abs(now[k].mean() / start[k].mean() - 1) for k in ("N-CA", "CA-C", "C-N"))
                       for now in lengths), default=np.nan)
    closest_ca = min((now["CA-CA"].min() for now in lengths), default=np.nan)
    # The jump at which `fastegnn-md rollout` (default --unphysical stop) would have stopped.
    unphysical = next((jump for jump, now in enumerate(lengths, start=1) if metrics.backbone_problem(start, now)),
                      None)
    return {
        "jumps_made": len(frames),
        "stopped": None if result.stop is None else result.stop.reason,
        "finite": bool(all(np.isfinite(f).all() for f in frames)),
        "rg_min": float(np.min(rg)), "rg_max": float(np.max(rg)),
        "reference_rg_min": float(np.min(reference_rg)), "reference_rg_max": float(np.max(reference_rg)),
        "final_aligned_rmsd": (metrics.kabsch_rmsd(frames[-1], last_pair.target_positions)
                               if frames and last_pair is not None else None),
        "largest_bond_change": float(bond_change),
        "largest_mean_bond_change": float(mean_change),
        "closest_consecutive_ca": float(closest_ca),
        "first_unphysical_jump": unphysical,
    }


def mean_sd(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectory", type=Path, required=True, help="first training file")
    parser.add_argument("--replica", type=Path, action="append", default=[], help="further training files")
    parser.add_argument("--heldout", type=Path, action="append", default=[],
                        help="replica scored, never trained on (repeat for several, e.g. one per protein)")
    parser.add_argument("--heldout-discard", type=float, default=None, metavar="PS",
                        help="ps left out at the start of the held-out files (default: --discard)")
    parser.add_argument("--jump", type=int, default=1, help="frames per jump, after --stride")
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--fit", choices=("none", "first-frame"), default="first-frame")
    parser.add_argument("--discard", type=float, default=0.0, metavar="PS",
                        help="ps at the start of every file (training and held-out) left out as equilibration")
    parser.add_argument("--node-attrs", choices=("charge", "identity"), default="identity")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sigma", type=float, default=10.0, help="MMD bandwidth in Å (default 10)")
    parser.add_argument("--mmd-weight", type=float, default=0.5)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--input-noise", type=float, default=0.0)
    parser.add_argument("--local-distance-weight", type=float, default=0.0)
    parser.add_argument("--local-distance-cutoff", type=float, default=2.6)
    parser.add_argument("--radial-distance-weight", type=float, default=0.0)
    parser.add_argument("--gyration-weight", type=float, default=0.0)
    parser.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                        help="validate and save an exponential moving average of the weights (train --ema)")
    parser.add_argument("--virtual-init", choices=VIRTUAL_INITS, default="centroid")
    parser.add_argument("--unroll", type=int, default=1)
    parser.add_argument("--rollout-model", default="FastEGNN<3,0.75>")
    parser.add_argument("--rollout-jumps", type=int, default=100)
    add_run_arguments(parser, runs="runs/protein-bench", epochs=10, batch_size=50, repeats=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tune_allocator()
    options = MDOptions(jump=args.jump, stride=args.stride, node_attrs=args.node_attrs, fit=args.fit,
                        discard_ps=args.discard, cache_dir=args.runs / "cache", progress=not args.quiet, replicas=tuple(args.replica))
    training = open_md_trajectory(args.trajectory, options)
    train, valid = training.load("train"), training.load("valid")
    entries = [e for e in ENTRIES if not args.only or e.label in args.only]
    for entry in entries:
        for seed in args.seeds:
            config = TrainConfig(model=entry.model, virtual_nodes=entry.virtual_nodes, cutoff=10.0,
                                 drop_rate=entry.drop_rate, sigma=args.sigma,
                                 mmd_weight=0.0 if entry.label in NO_MMD else args.mmd_weight,
                                 batch_size=args.batch_size, epochs=args.epochs, patience=args.patience, seed=seed,
                                 length_scale=10.0, input_noise=args.input_noise, unroll=args.unroll,
                                 local_distance_weight=args.local_distance_weight,
                                 local_distance_cutoff=args.local_distance_cutoff,
                                 radial_distance_weight=args.radial_distance_weight,
                                 gyration_weight=args.gyration_weight, ema_decay=args.ema,
                                 virtual_init=args.virtual_init)
            start = time.perf_counter()
            summary = Trainer(config, train, valid, seed_dir(args.runs, entry, seed), training.spec_fields,
                              str(args.trajectory), progress=not args.quiet).fit()
            print(f"{entry.label} seed {seed}: best valid MSE {summary['best_valid_mse']:.4f} Å² at epoch "
                  f"{summary['best_epoch']} of {summary['epochs']} ({time.perf_counter() - start:.0f} s this call)",
                  flush=True)
    if args.skip_eval:
        return

    dt = training.spec_fields["dt"]
    alpha = least_squares_alpha(train)
    models = {entry.label: [load_checkpoint(seed_dir(args.runs, entry, seed) / "best.pt") for seed in args.seeds]
              for entry in entries}
    discard = args.discard if args.heldout_discard is None else args.heldout_discard
    print()
    print(f"protein: trained on {args.trajectory.name}{''.join(' + ' + r.name for r in args.replica)}; "
          f"jump {dt:g} ps (stride {args.stride}, jump {args.jump}); fit {args.fit}; discard {args.discard:g} ps; "
          f"node attributes {args.node_attrs}; {len(train)}/{len(valid)} train/valid pairs; up to {args.epochs} "
          f"epochs (patience {args.patience}), batch {args.batch_size}, seeds {args.seeds}; input noise "
          f"{args.input_noise:g} Å, unroll {args.unroll}, local-distance weight {args.local_distance_weight:g} "
          f"(pairs < {args.local_distance_cutoff:g} Å), radial-distance weight {args.radial_distance_weight:g}, "
          f"gyration weight {args.gyration_weight:g}, weight average {args.ema or 'none'}; "
          f"virtual start {args.virtual_init}; {args.threads} threads")
    scored = {}
    for index, heldout in enumerate(args.heldout or [None]):
        test, scored_on = heldout_pairs(heldout, discard, options, training)
        scored[scored_on] = score_heldout(args, entries, models, test, scored_on, heldout, options, alpha, dt,
                                          timed=index == 0)
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "alpha": alpha, "scored": scored}, indent=2,
        default=float))


def score_heldout(args, entries: list[Entry], models: dict, test: list, scored_on: str, heldout: Optional[Path],
                  options: MDOptions, alpha: float, dt: float, timed: bool) -> dict:
    """Print one held-out file's table (and rollouts); the same numbers as a dict. ``timed``:
    also time every model's traversal of ``test`` against EGNN, interleaved."""
    rows, baselines, timing = {}, None, {}
    for entry in entries:
        per_seed = []
        for seed, ckpt in zip(args.seeds, models[entry.label]):
            model = ckpt.build_model()
            scores = jump_scores(test, predict_positions(model, test, 10.0, entry.drop_rate, args.batch_size), dt)
            baselines = {k: v for k, v in scores.items() if k != "model"}
            per_seed.append({**scores["model"], "best_epoch": ckpt.training["best_epoch"]})
            if seed == args.seeds[0]:
                timing[entry.label] = (model, entry.drop_rate)
        rows[entry.label] = per_seed
    relative = {}
    if timed:
        timing["__egnn__"] = (reference_egnn(models[entries[0].label][0]), 0.0)
        seconds = {label: [] for label in timing}
        for _ in range(args.repeats):  # interleaved, so all share the machine's state
            for label, (model, drop) in timing.items():
                seconds[label].append(time_inference(model, test, 10.0, drop, args.batch_size, repeats=1))
        egnn_seconds = float(np.median(seconds["__egnn__"]))
        relative = {label: float(np.median(v)) / egnn_seconds for label, v in seconds.items()}

    print()
    print(f"scored on {scored_on} ({len(test)} pairs, {test[0].positions.shape[0]} atoms):")
    print()
    no_motion = baselines["no_motion"]
    # Linear's best coefficient in closed form: what the trained Linear would reach with no budget.
    baselines["linear_least_squares"] = jump_scores(test, [p.positions + alpha * p.velocities for p in test], dt)["model"]
    print("| model | aligned MSE (Å²) | vs no motion | lab MSE (Å²) | vs no motion | relative time | paper MSE |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in (("no_motion", "no motion"), ("constant_velocity", "constant velocity"),
                        ("linear_least_squares", f"x + α·v, α = {alpha:.3g} ps fitted on the training pairs")):
        s = baselines[name]
        print(f"| {label} | {s['aligned_mse']:.4f} | {100 * (1 - s['aligned_mse'] / no_motion['aligned_mse']):+.1f} % | "
              f"{s['mse']:.4f} | {100 * (1 - s['mse'] / no_motion['mse']):+.1f} % | – | – |")
    for entry in entries:
        per_seed = rows[entry.label]
        gains = {key: [100 * (1 - r[key] / no_motion[key]) for r in per_seed] for key in ("aligned_mse", "mse")}
        rel = f"{relative[entry.label]:.2f}" if relative else "–"
        paper = "–" if entry.paper_mse is None else f"{entry.paper_mse:.2f}"
        print(f"| {entry.label} | {mean_sd([r['aligned_mse'] for r in per_seed])} | "
              f"{np.mean(gains['aligned_mse']):+.1f} ± {np.std(gains['aligned_mse'], ddof=1) if len(per_seed) > 1 else 0:.1f} % | "
              f"{mean_sd([r['mse'] for r in per_seed])} | {np.mean(gains['mse']):+.1f} % | {rel} | {paper} |")
    rollouts = {}
    if any(e.label == args.rollout_model for e in entries):
        entry = next(e for e in entries if e.label == args.rollout_model)
        print()
        print(f"{args.rollout_model}, {args.rollout_jumps} jumps ({args.rollout_jumps * dt:g} ps) from the first "
              "held-out frame:")
        print("| seed | jumps made | finite | Rg range (Å) | reference Rg range (Å) | aligned RMSD at the end (Å) | "
              "largest backbone bond change (Å) | largest change of a mean bond | closest consecutive CA–CA (Å) "
              "| first unphysical jump |")
        print("|---:|---:|---|---|---|---:|---:|---:|---:|---:|")
        # The rollout file, read once: the held-out replica (or the first training file).
        source = heldout if heldout is not None else args.trajectory
        pairs = test if heldout is not None else open_md_trajectory(
            source, replace(options, replicas=())).load(ALL_SPLITS)
        topology, _ = resolve_md_files(source, None)
        atoms = MDAnalysis.Universe(str(topology)).select_atoms(options.selection)
        backbone = metrics.backbone_pairs(atoms.names, atoms.resids)
        for seed in args.seeds:
            r = rollout_check(seed_dir(args.runs, entry, seed) / "best.pt", pairs, backbone, args.rollout_jumps)
            rollouts[seed] = r
            end = "–" if r["final_aligned_rmsd"] is None else f"{r['final_aligned_rmsd']:.2f}"
            print(f"| {seed} | {r['jumps_made']} | {r['finite']} | {r['rg_min']:.2f}–{r['rg_max']:.2f} | "
                  f"{r['reference_rg_min']:.2f}–{r['reference_rg_max']:.2f} | {end} | "
                  f"{r['largest_bond_change']:.3f} | {100 * r['largest_mean_bond_change']:.1f} % | "
                  f"{r['closest_consecutive_ca']:.2f} | {r['first_unphysical_jump'] or 'none'} |")
    return {"pairs": len(test), "baselines": baselines, "results": rows, "relative_time": relative,
            "rollouts": rollouts}


def least_squares_alpha(pairs) -> float:
    """The α (time unit) of x_t + α·v that minimises the position MSE over ``pairs``, in closed
    form: α = Σ (y − x)·v / Σ v·v. Linear's optimum, independent of a training budget."""
    num = sum(float(np.sum((p.target_positions - p.positions) * p.velocities)) for p in pairs)
    den = sum(float(np.sum(p.velocities * p.velocities)) for p in pairs)
    return num / den if den > 0 else 0.0


if __name__ == "__main__":
    main()
