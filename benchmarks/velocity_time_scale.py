"""Where the velocity term of an untrained model starts, with and without a time scale (issue 16, item 3).

    python benchmarks/velocity_time_scale.py trajectories/sph --split test --seeds 0 1 2

SPH velocities are box units per second and one jump is 15 frames of 5 ms = 0.075 s. EGNN's
coordinate update adds phi_v(h)·v in every layer, with phi_v of order one at initialisation: fed
velocities in box units per second, an untrained model moves particles by ~v·1 s instead of
v·0.075 s. With ``time_scale`` T = the jump (`TrainConfig(time_scale="jump")`, the SPH kind's
default now) the model sees v·T, the constant-velocity displacement of one jump.

Prints, per model and time scale, the one-jump MSE (dataset units², moving particles) of the
*untrained* model over ``--seeds`` initialisations (mean ± SD), beside "no motion" and "constant
velocity". Reads the split as ``fastegnn-md train`` does (`SPHOptions`: jump 15, backward
velocities, the metadata's radius and gravity axis).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fastegnn_md.datasets import SPHOptions, open_dataset
from fastegnn_md.training import TrainConfig, evaluate_mse, make_model


def trivial(pairs) -> dict[str, float]:
    """No motion and constant velocity, MSE over moving particles (dataset units²)."""
    sums, count = {"no motion": 0.0, "constant velocity": 0.0}, 0
    for pair in pairs:
        moving = slice(None) if pair.moving is None else pair.moving
        x, target = pair.positions[moving].astype(np.float64), pair.target_positions[moving].astype(np.float64)
        v = pair.velocities[moving].astype(np.float64)
        sums["no motion"] += float(((x - target) ** 2).sum())
        sums["constant velocity"] += float(((x + v * pair.metadata["dt"] - target) ** 2).sum())
        count += x.size
    return {name: total / count for name, total in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="SPH dataset directory (metadata.json + split files)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--jump", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["egnn", "fastegnn", "linear"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = open_dataset(args.data, sph=SPHOptions(jump=args.jump))
    spec = dataset.spec_fields
    pairs = dataset.load(args.split)
    dt = float(spec["dt"])
    print(f"{args.data} ({args.split}): {len(pairs)} pairs, jump {args.jump} frames = {dt:g} s, "
          f"{pairs[0].positions.shape[0]} particles in the first; untrained models, seeds {args.seeds}")
    print()
    print("| model | time scale | one-jump MSE, untrained (mean ± SD over seeds) | / no motion |")
    print("|---|---|---:|---:|")
    base = trivial(pairs)
    for name in args.models:
        for time_scale in (1.0, "jump"):
            values = []
            for seed in args.seeds:
                config = TrainConfig(model=name, cutoff=spec.get("cutoff"), gravity_axis=spec.get("gravity_axis"),
                                     time_scale=time_scale, seed=seed)
                model, _ = make_model(config, pairs[0].node_attrs.shape[1], dt=dt)
                values.append(evaluate_mse(model, pairs, spec.get("cutoff"), 0.0))
            label = f"jump ({dt:g} s)" if time_scale == "jump" else "1 s (velocities as given)"
            mean, sd = float(np.mean(values)), float(np.std(values))
            print(f"| {name} | {label} | {mean:.4g} ± {sd:.2g} | {mean / base['no motion']:.3g} |")
    for name, value in base.items():
        print(f"| {name} | – | {value:.4g} | {value / base['no motion']:.3g} |")


if __name__ == "__main__":
    main()
