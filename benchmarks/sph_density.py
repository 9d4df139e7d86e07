"""How dense SPH water gets: the densest water particle of every frame, relative to the rest density.

Usage (from the repository root)::

    python benchmarks/sph_density.py data/water3d-bench data/water-scenes-long --stride 5

For each dataset split and trajectory: the densest water particle's relative density
(`fastegnn_md.sph_kernel.relative_density`: the solver's cubic kernel, support 4 particle radii,
particle volume (2 r)^3, the stored walls counted as neighbours) over every ``--stride``-th frame:
its largest value, the median over frames of each frame's largest, and the frames in which any
water particle is more than 1 % above the rest density. The particle radius is the metadata's
(``generator.settings.particle_radius``) unless ``--particle-radius`` gives one. This is the
bound `fastegnn-md rollout --keep-density` holds a learned rollout to, and the report's
``densest_water`` row's reference value.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fastegnn_md.adapters.sph import DEEPMIND_KINEMATIC, open_sph_dataset
from fastegnn_md.errors import DataError
from fastegnn_md.rollouts.density_constraint import particle_radius_of
from fastegnn_md.sph_kernel import relative_density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path, help="SPH dataset directories")
    parser.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    parser.add_argument("--stride", type=int, default=5, help="every STRIDE-th frame (default 5)")
    parser.add_argument("--particle-radius", type=float, default=None)
    args = parser.parse_args()
    print("| dataset | split | trajectory | frames | densest water, largest | median of per-frame largest | "
          "frames with water > 1.01 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    overall = []
    for dataset in args.datasets:
        for split in args.splits:
            try:
                metadata, trajectories = open_sph_dataset(dataset, split)
            except DataError as exc:  # a dataset without this split
                print(f"| {dataset} | {split} | – | – | {exc} | | |")
                continue
            radius = particle_radius_of(metadata, args.particle_radius)
            for index, trajectory in enumerate(trajectories):
                water = np.asarray(trajectory.particle_type) != DEEPMIND_KINEMATIC
                frames = range(0, trajectory.num_frames, args.stride)
                densest = np.array([
                    relative_density(trajectory.positions[f].astype(np.float64), radius)[water].max()
                    for f in tqdm(frames, desc=f"{dataset.name} {split} {index}", leave=False)
                ])
                overall.append(densest)
                print(f"| {dataset} | {split} | {index} | {len(densest)} | {densest.max():.4f} | "
                      f"{np.median(densest):.4f} | {int((densest > 1.01).sum())} |", flush=True)
    if overall:
        every = np.concatenate(overall)
        print(f"\nall {len(overall)} trajectories, {every.size} frames: largest {every.max():.4f}, median of per-frame "
              f"largest {np.median(every):.4f}, 99th percentile {np.percentile(every, 99):.4f}, frames above 1.01: "
              f"{int((every > 1.01).sum())}")


if __name__ == "__main__":
    main()
