"""How to put the box into SPH data: what each way costs (issue 16, item 1).

    python benchmarks/sph_walls.py trajectories/sph --threads 1

On the test pairs of an SPH dataset whose files hold no walls (the shipped
``trajectories/sph``: water only), builds the graphs the model would see with the box added four
ways and reports, per way, nodes and edges per graph, the forward pass and training step of
FastEGNN⟨3,0⟩ (hidden 64, 4 layers, float32; medians of alternating calls in this process),
autograd's saved memory, and the bytes one stored trajectory takes:

* **no walls**: the water alone (what the data held before);
* **wall particles, all edges**: `box_wall_particles` at the fluid spacing 2r, kinematic (type 3),
  every edge of the radius graph;
* **wall particles, no wall–wall edges**: the same, without edges between two walls (what
  `fastegnn_md.graph.build_edges` does with a moving mask);
* **distance features**: LagrangeBench's non-periodic boundary features, the distance to each of
  the 2·dim faces clipped at the connectivity radius and divided by it, as node attributes; no
  particles are added.

The stored sizes are of the trajectory's positions in a LagrangeBench HDF5 file (gzip), water
alone against water plus wall particles repeated in every frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fastegnn_md.adapters.sph import open_sph_dataset, write_lagrangebench
from fastegnn_md.adapters.sph.trajectory import DEEPMIND_KINEMATIC, SPHTrajectory
from fastegnn_md.adapters.sph.walls import box_wall_particles
from fastegnn_md.datasets import SPHOptions, open_dataset
from fastegnn_md.graph import FramePair, collate
from fastegnn_md.losses import position_mse
from fastegnn_md.training import TrainConfig, make_model


def with_walls(pair: FramePair, walls: np.ndarray, wall_attrs: np.ndarray) -> FramePair:
    """``pair`` plus static wall particles: zero velocity, target = their place, not moving."""
    n = len(walls)
    return FramePair(
        np.concatenate([pair.positions, walls]), np.concatenate([pair.velocities, np.zeros_like(walls)]),
        np.concatenate([pair.target_positions, walls]), np.concatenate([pair.node_attrs, np.repeat(wall_attrs, n, 0)]),
        moving=np.concatenate([np.ones(pair.num_nodes, bool), np.zeros(n, bool)]), metadata=pair.metadata,
    )


def with_distance_features(pair: FramePair, bounds: np.ndarray, radius: float) -> FramePair:
    """LagrangeBench's boundary features: distance to every face, clipped at ``radius``, over ``radius``."""
    x = pair.positions
    distance = np.concatenate([x - bounds[:, 0], bounds[:, 1] - x], axis=1)
    features = np.minimum(distance, radius) / radius
    return replace(pair, node_attrs=np.concatenate([pair.node_attrs, features], axis=1))


def saved_mib(model: torch.nn.Module, batch) -> float:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
        position_mse(out.positions, batch.target_positions).backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=3, help="test pairs timed (default 3)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = open_dataset(args.data, sph=SPHOptions())
    spec = dataset.spec_fields
    pairs = dataset.load(args.split)[: args.pairs]
    metadata, trajectories = open_sph_dataset(args.data, args.split)
    trajectory = next(iter(trajectories))
    bounds = np.asarray(metadata["bounds"], dtype=np.float64)
    radius = float(metadata["default_connectivity_radius"])
    settings = metadata.get("generator", {}).get("settings", {})
    spacing = 2.0 * settings["particle_radius"] / settings["box_size"]
    walls = box_wall_particles(bounds, spacing)
    wall_attrs = np.zeros((1, pairs[0].node_attrs.shape[1]))
    wall_attrs[0, DEEPMIND_KINEMATIC] = 1.0  # the one-hot column of type 3 (DeepMind's 9 types)

    ways = {
        "no walls": ([p for p in pairs], False),
        "wall particles, all edges": ([with_walls(p, walls, wall_attrs) for p in pairs], True),
        "wall particles, no wall–wall edges": ([with_walls(p, walls, wall_attrs) for p in pairs], False),
        "distance features": ([with_distance_features(p, bounds, radius) for p in pairs], False),
    }
    cutoff = spec["cutoff"]
    batches, models = {}, {}
    for name, (way_pairs, keep_wall_edges) in ways.items():
        if keep_wall_edges:  # the same particles, the moving mask applied after the graph is built
            open_pairs = [replace(p, moving=None) for p in way_pairs]
            batch = collate(open_pairs, cutoff=cutoff)
            batch = replace(batch, moving=torch.as_tensor(np.concatenate([p.moving for p in way_pairs])))
        else:
            batch = collate(way_pairs, cutoff=cutoff)
        batches[name] = batch
        config = TrainConfig(model="fastegnn", cutoff=cutoff, gravity_axis=spec.get("gravity_axis"), time_scale="jump")
        models[name], _ = make_model(config, way_pairs[0].node_attrs.shape[1], dt=float(spec["dt"]))

    forward = {name: [] for name in ways}
    step = {name: [] for name in ways}
    for _ in range(args.repeats + 1):  # alternating: every way sees the same background load
        for name in ways:
            model, batch = models[name], batches[name]
            with torch.no_grad():
                t0 = time.perf_counter()
                model(batch)
                forward[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = model(batch)
            position_mse(out.positions[batch.moving] if batch.moving is not None else out.positions,
                         batch.target_positions[batch.moving] if batch.moving is not None else batch.target_positions
                         ).backward()
            step[name].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.h5"
        walled = Path(tmp) / "walls.h5"
        write_lagrangebench(plain, [trajectory])
        frames = trajectory.positions.shape[0]
        stacked = np.concatenate([trajectory.positions, np.broadcast_to(walls, (frames, *walls.shape))], axis=1)
        types = np.concatenate([trajectory.particle_type, np.full(len(walls), DEEPMIND_KINEMATIC)])
        write_lagrangebench(walled, [SPHTrajectory(stacked.astype(np.float32), types, key=0, convention="deepmind")])
        sizes = {"plain": plain.stat().st_size, "walls": walled.stat().st_size}

    fluid = pairs[0].num_nodes
    print(f"{args.data} ({args.split}), first {len(pairs)} pairs of {fluid} fluid particles (one graph per call), "
          f"walls: {len(walls)} particles at spacing {spacing:g} (box units), radius {radius:g}; "
          f"{args.threads} thread(s), medians of {args.repeats} alternating calls")
    print()
    print("| way | nodes | edges | forward ms | × no walls | train step ms | × no walls | autograd saved MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base_f, base_s = np.median(forward["no walls"][1:]), np.median(step["no walls"][1:])
    for name in ways:
        batch = batches[name]
        f, s = np.median(forward[name][1:]), np.median(step[name][1:])
        print(f"| {name} | {batch.num_nodes // len(pairs):,} | {batch.num_edges // len(pairs):,} | {1e3 * f:.1f} | "
              f"{f / base_f:.2f} | {1e3 * s:.1f} | {s / base_s:.2f} | {saved_mib(models[name], batch):.0f} |")
    print()
    print(f"one stored trajectory ({frames} frames, LagrangeBench HDF5, gzip): water alone "
          f"{sizes['plain'] / 2**20:.1f} MiB, with wall particles {sizes['walls'] / 2**20:.1f} MiB")
    print(json.dumps({"fluid": fluid, "walls": len(walls), "sizes": sizes}))


if __name__ == "__main__":
    main()
