"""Why a mean jump compacts a protein: its one-jump Rg bias against the Jensen gap, and what a
gap-sized correction does to 100-jump rollouts (issue 14, acceptance "Rg inside the reference's range").

Usage (from the repository root)::

    python benchmarks/jensen_gap.py protein-backbone \
        --system adk:trajectories/adk/adk_seed2_cont.xtc:trajectories/adk/adk_seed1_cont.xtc:105 \
        --system villin:trajectories/villin/villin_seed1.xtc:trajectories/villin/villin_seed4.xtc:5

Each ``--system NAME:TRAIN:HELDOUT:START`` names a trajectory the checkpoint trained on, a held-out
replica of the same system and a start frame in the held-out one (topologies: same stem, .pdb).

**One jump** (backbone, reference inputs after ``--discard`` frames, every jump-spaced frame): a
model trained with MSE predicts the conditional mean μ = E[y | x]; for any sample y,
E[Rg²(y)] = Rg²(μ) + E|ε − ε_c|² (mass-weighted, ε = y − μ, ε_c its centroid) when μ is exact, so
the mean is more compact than what it predicts (Jensen). Printed per file, all in Å or Å²:

* ``bias``: mean of Rg(μ) − Rg(y), the mean jump's one-jump Rg error against MD;
* ``spread gap``: Rg(μ) − sqrt(Rg²(μ) + gap) with the gap from the checkpoint's fitted spread
  (`fastegnn_md.spread`, the Gaussian's centred variance), i.e. the bias the spread predicts;
* ``observed Rg² gap``: mean of Rg²(y) − Rg²(μ), with its standard error;
* ``aligned gap``: mean over pairs of the mass-weighted squared residual after superposing μ on y
  (rigid rotation does not change Rg, so it is the rotation-free part of the Gaussian's gap).

**Rollouts** (100 jumps from the held-out start, run on past the physical-range check): the mean
jump; the mean rescaled about its centroid so that Rg² grows by the spread's gap at each jump; and
the mean rescaled by a constant gap, the training file's ``aligned gap`` (measured on frames the
held-out start is not from). Printed: the jump at which the CLI would stop, Rg range against the
reference frames', and the mean Rg change per jump in each tenth of the rollout.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional

import MDAnalysis
import numpy as np

from fastegnn_md import metrics
from fastegnn_md.predictor import Jump, Predictor
from fastegnn_md.rollouts.md import MDRollout
from fastegnn_md.rollouts.pipeline import RolloutRequest, run_rollout
from fastegnn_md.spread import node_invariants


def backbone_frames(trajectory: str) -> tuple[np.ndarray, MDAnalysis.AtomGroup, float]:
    """(frames (T, N, 3) Å, the backbone atoms, frame interval in ps)."""
    universe = MDAnalysis.Universe(str(Path(trajectory).with_suffix(".pdb")), trajectory)
    atoms = universe.select_atoms("backbone")
    frames = np.stack([atoms.positions.astype(np.float64) for _ in universe.trajectory])
    return frames, atoms, float(universe.trajectory.dt)


def backbone_masses(trajectory: str) -> np.ndarray:
    """Masses (N,) in amu of the backbone atoms of ``trajectory``'s topology (no frames read)."""
    universe = MDAnalysis.Universe(str(Path(trajectory).with_suffix(".pdb")))
    return universe.select_atoms("backbone").masses.astype(np.float64)


def centred_second_moment(positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, float]:
    """(mass-weighted centroid (3,), Rg² in Å²) of ``positions`` (N, 3)."""
    total = masses.sum()
    centre = (masses[:, None] * positions).sum(0) / total
    return centre, float((masses * ((positions - centre) ** 2).sum(1)).sum() / total)


def spread_gap(predictor: Predictor, x: np.ndarray, v: np.ndarray, attrs: np.ndarray, mean: np.ndarray,
               masses: np.ndarray) -> float:
    """E[Rg²(μ + ε)] − Rg²(μ) (Å²) under the checkpoint's spread: 3·(Σ m σ²/M − mᵀKm/M²)."""
    spread = predictor.require_spread()
    sigma = spread.scales(node_invariants(x, mean, v, attrs, predictor.dt, spread.packing_radius))
    cov = spread.covariance(x, sigma)
    total = masses.sum()
    return float(3.0 * (masses @ np.diag(cov) / total - masses @ cov @ masses / total**2))


def one_jump(predictor: Predictor, trajectory: str, discard: int) -> dict[str, float]:
    """The one-jump figures of the module docstring over one file."""
    frames, atoms, frame_dt = backbone_frames(trajectory)
    stride = int(round(predictor.dt / frame_dt))
    attrs = predictor.identity_attributes(atoms.names, atoms.resnames, None)
    masses = atoms.masses.astype(np.float64)
    weights = masses / masses.sum()
    bias, predicted, observed, aligned = [], [], [], []
    for t in range(max(discard, stride), len(frames) - stride, stride):
        x, y = frames[t], frames[t + stride]
        v = (x - frames[t - stride]) / predictor.dt
        mean = predictor.predict(x, v, attrs).positions
        _, rg2_mean = centred_second_moment(mean, masses)
        _, rg2_true = centred_second_moment(y, masses)
        bias.append(np.sqrt(rg2_mean) - np.sqrt(rg2_true))
        predicted.append(np.sqrt(rg2_mean) - np.sqrt(rg2_mean + spread_gap(predictor, x, v, attrs, mean, masses)))
        observed.append(rg2_true - rg2_mean)
        superposed = metrics.superpose_onto(mean[None], y, masses)[0][0]
        aligned.append(float((weights * ((superposed - y) ** 2).sum(1)).sum()))
    observed = np.array(observed)
    return {"pairs": len(bias), "bias": float(np.mean(bias)), "spread_bias": float(np.mean(predicted)),
            "observed_gap": float(observed.mean()), "observed_gap_se": float(observed.std() / np.sqrt(len(observed))),
            "aligned_gap": float(np.mean(aligned))}


class GapCorrectedMean:
    """The mean jump rescaled about its centroid so that Rg² grows by a gap (Å²): a constant, or
    the spread's (``gap=None``). An experiment of this benchmark, not a package jump."""

    def __init__(self, predictor: Predictor, masses: np.ndarray, gap: Optional[float]) -> None:
        self.predictor, self.masses, self.gap = predictor, masses, gap

    def __call__(self, positions: np.ndarray, velocities: np.ndarray, node_attrs: Optional[np.ndarray], *,
                 rng: np.random.Generator) -> Jump:
        jump = self.predictor.predict(positions, velocities, node_attrs)
        mean = jump.positions
        gap = self.gap
        if gap is None:
            attrs = self.predictor.default_node_attrs(len(mean)) if node_attrs is None else node_attrs
            gap = spread_gap(self.predictor, positions, velocities, attrs, mean, self.masses)
        centre, rg2 = centred_second_moment(mean, self.masses)
        jump.positions = centre + (mean - centre) * np.sqrt(1.0 + gap / rg2)
        return jump


def rollout(checkpoint: str, trajectory: str, start: int, jumps: int,
            make_jump: Optional[Callable[[Predictor, np.ndarray], object]]) -> str:
    """One 100-jump rollout's line: stop jump, Rg ranges, Rg change per tenth."""
    jump = None if make_jump is None else make_jump(Predictor.from_checkpoint(checkpoint), backbone_masses(trajectory))
    with tempfile.TemporaryDirectory() as tmp:
        request = RolloutRequest(start, jumps, None, Path(tmp) / "r", 20.0, "warn")
        out = run_rollout(MDRollout(trajectory, None, request), checkpoint, progress=False, jump=jump)
        info = out.report["info"]
        predicted = MDAnalysis.Universe(info["predicted_topology"], info["predicted_trajectory"])
        frames = np.stack([predicted.atoms.positions.copy() for _ in predicted.trajectory])
        reference = [row["reference_radius_of_gyration"] for row in out.report["per_jump"]
                     if row.get("reference_radius_of_gyration") is not None]
    rg = metrics.radius_of_gyration(frames, predicted.atoms.masses)
    left = info.get("geometry_left_at_jump")
    tenths = np.array_split(np.diff(rg), 10)
    per_tenth = " ".join(f"{np.mean(part):+.3f}" for part in tenths)
    return (f"stop {left if left is not None else 'none'} | Rg {rg.min():.2f}–{rg.max():.2f} (end {rg[-1]:.2f}) | "
            f"ref {min(reference):.2f}–{max(reference):.2f} | ΔRg per jump by tenths: {per_tenth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint with a fitted spread (path or shipped name)")
    parser.add_argument("--system", action="append", required=True, metavar="NAME:TRAIN:HELDOUT:START")
    parser.add_argument("--discard", type=int, default=225, help="frames of each file to skip (default 225)")
    parser.add_argument("--jumps", type=int, default=100)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    predictor = Predictor.from_checkpoint(args.checkpoint)
    print("| system | file | pairs | Rg bias of the mean (Å) | bias the spread predicts (Å) | observed Rg² gap (Å²) | aligned gap (Å²) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    systems = []
    for entry in args.system:
        name, train, heldout, start = entry.split(":")
        figures = {}
        for role, path in (("trained on", train), ("held out", heldout)):
            figures[role] = f = one_jump(predictor, path, args.discard)
            print(f"| {name} | {role}: `{path}` | {f['pairs']} | {f['bias']:+.4f} | {f['spread_bias']:+.4f} | "
                  f"{f['observed_gap']:.2f} ± {f['observed_gap_se']:.2f} | {f['aligned_gap']:.2f} |", flush=True)
        systems.append((name, heldout, int(start), figures["trained on"]["aligned_gap"]))
    print()
    for name, heldout, start, gap in systems:
        variants = [
            ("mean", None),
            ("mean + spread gap", lambda p, m: GapCorrectedMean(p, m, None)),
            (f"mean + constant gap {gap:.2f} Å²", lambda p, m, g=gap: GapCorrectedMean(p, m, g)),
        ]
        for label, make in variants:
            print(f"{name} @{start}, {label}: {rollout(args.checkpoint, heldout, start, args.jumps, make)}", flush=True)


if __name__ == "__main__":
    main()
