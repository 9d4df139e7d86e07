"""Water through the walls: how many particles SPH checkpoints put outside the box, one jump at a
time and over 100-jump rollouts of held-out scenes (issue 16, item 4).

Usage (from the repository root)::

    python benchmarks/sph_leak.py water-box runs/wb-box100/best.pt --pairs data/water3d-bench \
        --scenes data/water-scenes-long --scene valid:0 --scene test:0 --scene test:1 --scene test:2

**One jump** (``--pairs DIR``: its valid and test splits, read as ``fastegnn-md train`` reads them:
15 random starts per trajectory, the checkpoint's jump and velocities): water particles whose
predicted position lies outside ``metadata["bounds"]``, in all and in the worst pair, the lowest
predicted coordinate along gravity, and the one-jump MSE (box units², ×1e-4). The reference
targets are never outside.

**Rollouts** (``--scenes DIR`` and ``--scene SPLIT:INDEX``, 100 jumps, `fastegnn-md rollout`'s code
with ``--sinkhorn-particles 200``): the most water particles outside the box at any jump (the
first jump with any, and how many are still outside at the last jump), the horizons at which the
model's MSE, Sinkhorn divergence and kinetic-energy error (in magnitude) are below both "no
motion" and "constant velocity" (out of the jumps made), and the jumps where the kinetic energy
is lost, and where the particles that leave the box were when their jump started: their distance
to the nearest wall particle (median and largest, over every particle that is outside after a
jump and was inside before it), beside the radius graph's cutoff; within it, the wall was among
their neighbours, and the water's density at the last jump, the model's and the reference's: the
mean number of neighbours within the connectivity radius (higher = compressed) and the mean
nearest-neighbour distance (lower = compressed or disordered), and the densest water at any jump
relative to the rest density (the solver's kernel; SPH water stays within about 1 % of 1).
``--keep-in-box M`` runs the
rollouts with the opt-in box constraint (`fastegnn_md.rollouts.box_constraint`, the same for
every predictor) and adds the most of the model's particles it moved at one jump, and in all;
``--keep-density`` runs them with the opt-in incompressibility constraint
(`fastegnn_md.rollouts.density_constraint`, after the box constraint if both are on) and adds
the model's densest water before the push, at most and in the median over jumps. ``--sample SEED``
draws each jump from the checkpoint's spread (`fastegnn-md calibrate`) instead of its mean.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from fastegnn_md.adapters.sph import DEEPMIND_KINEMATIC, open_sph_dataset, read_lagrangebench
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.datasets import open_for_checkpoint
from fastegnn_md.predictor import Predictor
from fastegnn_md.reports.per_jump import beats_all
from fastegnn_md.reports.sph import OutsideBox, density_at_last_jump
from fastegnn_md.rollouts.sph import rollout_sph


def one_jump(checkpoint: str, data: Path) -> dict[str, dict[str, float]]:
    """Per split: outside count, total water, worst pair, lowest coordinate along −gravity, MSE."""
    predictor = Predictor.from_checkpoint(checkpoint)
    dataset = open_for_checkpoint(data, load_checkpoint(checkpoint).data_spec)
    box = OutsideBox(dataset.spec_fields["extra"]["bounds"])
    axis = int(np.argmax(np.abs(np.asarray(predictor.spec.gravity_axis or [0, -1, 0]))))
    results = {}
    for split in ("valid", "test"):
        outside = total = worst = 0
        lowest, squared, count = np.inf, 0.0, 0
        for pair in dataset.load(split):
            jump = predictor.predict(pair.positions, pair.velocities, pair.node_attrs, moving=pair.moving,
                                     kinematic_positions=pair.target_positions)
            water = pair.moving if pair.moving is not None else np.ones(len(pair.positions), dtype=bool)
            predicted, target = jump.positions[water], pair.target_positions[water].astype(np.float64)
            out = box.count(predicted)
            outside, total, worst = outside + out, total + int(water.sum()), max(worst, out)
            lowest = min(lowest, float(predicted[:, axis].min()))
            squared += float(((predicted - target) ** 2).sum())
            count += target.size
        results[split] = {"outside": outside, "water": total, "worst": worst, "lowest": lowest,
                          "mse": squared / count}
    return results


def rollout(checkpoint: str, scenes: Path, split: str, index: int, jumps: int,
            keep_in_box: Optional[float] = None, keep_density: bool = False, sample: Optional[int] = None) -> str:
    """One rollout's cells: most outside (first jump with any), the jumps below both trivial
    predictors on MSE, Sinkhorn and kinetic energy (the report's ``model_beats_all``), MSE at 1/5/20,
    where the leaving particles started; with ``keep_in_box`` / ``keep_density``, what the
    constraints did first."""
    with tempfile.TemporaryDirectory() as tmp:
        out = rollout_sph(scenes, checkpoint, split=split, trajectory=index, jumps=jumps, report_dir=Path(tmp) / "r",
                          sinkhorn_particles=200, progress=False, keep_in_box=keep_in_box,
                          keep_density=keep_density, sample=sample is not None, seed=sample or 0)
        (predicted,) = list(read_lagrangebench(out.predicted))
    report = out.report
    bounds = np.asarray(open_sph_dataset(scenes, split)[0]["bounds"], dtype=np.float64)  # metadata only
    walls = predicted.particle_type == DEEPMIND_KINEMATIC
    leaving = _leaving_wall_distances(predicted.positions.astype(np.float64), walls, bounds)
    rows = report["per_jump"]
    first = next((row["jump"] for row in rows if row["outside_box"].get("model", 0) > 0), None)
    wins = [report["summary"]["model_beats_all"][metric] for metric in ("mse", "sinkhorn", "kinetic_energy_error")]
    at = report["horizons"]["mse_at"]
    mse = " / ".join(f"{at[n]['model']:.3g}" for n in ("1", "5", "20") if n in at and at[n]["model"] is not None)
    last = rows[-1]["outside_box"].get("model", 0) if rows else 0
    moved = report["info"].get("constrained_particles")
    density = density_at_last_jump(report)
    count, nearest = density["neighbour_count"], density["nearest_neighbour_distance"]
    constraint = "" if moved is None else f"box constraint moved {max(moved, default=0)} at most, {sum(moved)} in all | "
    pushed = report["info"].get("keep_density")
    if pushed is not None:
        densest = pushed["densest_before"]
        constraint += (f"model's densest water before the density push {max(densest, default=float('nan')):.3g} at most, "
                       f"median {float(np.median(densest)) if densest else float('nan'):.3g} | ")
    return (constraint + f"{report['outside_box']['model']} of {report['scored_particles']} (first: jump {first}; "
            f"at the last jump: {last}) | "
            f"MSE wins {wins[0]} | Sinkhorn wins {wins[1]} | kinetic-energy wins {wins[2]} of {report['model_jumps']} | "
            f"MSE at 1/5/20 {mse} | lost at jumps: MSE {jump_ranges(lost_jumps(rows, 'mse'))}, "
            f"Sinkhorn {jump_ranges(lost_jumps(rows, 'sinkhorn'))}, "
            f"kinetic energy {jump_ranges(lost_jumps(rows, 'kinetic_energy_error'))} | "
            f"leaving particles' wall distance at their jump's start: {leaving} "
            f"(cutoff {load_checkpoint(checkpoint).data_spec.cutoff:g}) | "
            f"at the last jump, neighbours within {report['density_radius']:g}: model {count['model']:.2f}, "
            f"reference {count['reference']:.2f}; nearest-neighbour distance: model {nearest['model']:.4f}, "
            f"reference {nearest['reference']:.4f}" + _densest(report))


def _densest(report: dict) -> str:
    """' | densest water at any jump / rest: model a, reference b' where the report has it."""
    densest = report.get("densest_water")
    if densest is None:
        return ""
    return f" | densest water at any jump / rest: model {densest['model']:.3g}, reference {densest['reference']:.3g}"


def _leaving_wall_distances(frames: np.ndarray, walls: np.ndarray, bounds: np.ndarray) -> str:
    """Median and largest distance to the nearest wall particle, at the start of its jump, of every
    water particle that is outside ``bounds`` after a jump and was inside before it ("none")."""
    box = OutsideBox(bounds)
    distances = []
    for before, after in zip(frames[:-1], frames[1:]):
        water_before = before[~walls]
        leaving = box.outside(after[~walls]) & ~box.outside(water_before)
        if leaving.any():
            distances.append(cKDTree(before[walls]).query(water_before[leaving])[0])
    if not distances:
        return "none"
    values = np.concatenate(distances)
    return f"median {np.median(values):.3f}, largest {values.max():.3f} over {len(values)}"


def lost_jumps(rows: list[dict], metric: str) -> list[int]:
    """The jumps whose ``metric`` (a per-jump key of the report: "mse", "sinkhorn",
    "kinetic_energy_error") is not nearer zero for the model than for every trivial predictor."""
    return [int(row["jump"]) for row in rows
            if row.get(metric, {}).get("model") is not None and not beats_all(row[metric])]


def jump_ranges(jumps: list[int]) -> str:
    """[3, 4, 5, 9] -> "3–5, 9" ("none" when empty)."""
    spans: list[list[int]] = []
    for jump in jumps:
        if spans and jump == spans[-1][1] + 1:
            spans[-1][1] = jump
        else:
            spans.append([jump, jump])
    return ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in spans) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="SPH checkpoints (paths or shipped names)")
    parser.add_argument("--pairs", type=Path, default=None, help="SPH dataset for the one-jump counts")
    parser.add_argument("--scenes", type=Path, default=None, help="SPH dataset of long scenes for the rollouts")
    parser.add_argument("--scene", action="append", default=[], metavar="SPLIT:INDEX")
    parser.add_argument("--jumps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-in-box", type=float, default=None, metavar="M",
                        help="roll out with the box constraint at margin M (default off: the model alone)")
    parser.add_argument("--keep-density", action="store_true",
                        help="roll out with the incompressibility constraint (default off: the model alone)")
    parser.add_argument("--sample", type=int, default=None, metavar="SEED",
                        help="draw each jump from the checkpoint's spread with this seed (default: mean jumps)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.pairs is not None:
        print("| checkpoint | split | water predicted outside | worst pair | lowest coordinate along gravity | "
              "one-jump MSE (×1e-4) |")
        print("|---|---|---:|---:|---:|---:|")
        for checkpoint in args.checkpoints:
            for split, r in one_jump(checkpoint, args.pairs).items():
                print(f"| `{checkpoint}` | {split} | {r['outside']} of {r['water']} ({100 * r['outside'] / r['water']:.2f} %) "
                      f"| {r['worst']} | {r['lowest']:+.3f} | {1e4 * r['mse']:.3f} |", flush=True)
        print()
    for entry in args.scene:
        split, index = entry.split(":")
        for checkpoint in args.checkpoints:
            print(f"{args.scenes} {split} {index}, `{checkpoint}`: "
                  f"{rollout(checkpoint, args.scenes, split, int(index), args.jumps, args.keep_in_box, args.keep_density, args.sample)}",
                  flush=True)


if __name__ == "__main__":
    main()
