"""Time and peak memory of FastEGNN<3,0> inference on SPH frames of growing size, up to >100k.

    python benchmarks/sph_scaling.py                       # 8k, 27k, 51k, 104k particles
    python benchmarks/sph_scaling.py --sizes 20 30 --repeats 3

Every frame is made by the solver (`adapters.splishsplash.simulate_scene`): a cubic block of
n³ water particles dropped in the unit box, the particle radius chosen so the block keeps the
same extent (0.48 of the box) whatever n, and the frame taken a few solver steps after release.
The connectivity radius is the generator's default, 1.6 particle diameters, so the number of
neighbours per particle is the same at every size ("fixed density" in units of the particle
spacing): the edge count, and the cost, should then grow linearly with N.

Each size runs in its own subprocess so its peak memory (ru_maxrss of that process, after torch
is imported) belongs to it alone. Measured per size: radius-graph build (`collate`, KD-tree),
one forward pass of FastEGNN<3,0> (hidden 64, 4 layers, C = 3, float32, all edges kept) as the
median of ``--repeats`` after a warm-up, and the process's peak RSS. The issue's goal for the
≥100k frame: graph + forward under 10 s and peak under 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 0.48  # block extent (box = 1): n particles per axis at spacing 2r, extent (n + 1) * 2r


def make_frame(n: int, path: Path, threads: int) -> dict:
    """Simulate an n³ block for a few steps; save the last frame (N, 3) and the radius to ``path``."""
    from fastegnn_md.adapters.splishsplash import SPHSceneSettings, simulate_scene

    radius = BLOCK / (2 * (n + 1))
    # time step scaled with the particle size (same Courant number as the generator's default)
    time_step = 0.00125 * radius / 0.0125
    settings = SPHSceneSettings(
        particle_radius=radius, block_size_range=(BLOCK, BLOCK), min_block_height=0.2, initial_speed=0.0,
        time_step=time_step, frame_interval=4 * time_step, num_frames=3, seed=0,
    )
    start = time.perf_counter()
    trajectory = simulate_scene(settings, 0, threads=threads)
    seconds = time.perf_counter() - start
    positions = np.asarray(trajectory.positions[-1], dtype=np.float64)
    np.savez(path, positions=positions, cutoff=settings.default_connectivity_radius)
    return {"n_per_axis": n, "particles": int(positions.shape[0]), "radius": radius,
            "cutoff": settings.default_connectivity_radius, "solver_s": seconds}


def run_case(frame: Path, threads: int, repeats: int) -> dict:
    import torch

    from fastegnn_md import FramePair, collate
    from fastegnn_md.models import build_model
    from fastegnn_md.runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(threads)
    with np.load(frame) as data:
        positions, cutoff = data["positions"], float(data["cutoff"])
    n = positions.shape[0]
    rng = np.random.default_rng(0)
    pair = FramePair(positions, rng.normal(scale=1e-3, size=(n, 3)), positions, np.ones((n, 1)))
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    batch = collate([pair], cutoff=cutoff, drop_rate=0.0, dtype=torch.float32)
    graph_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_model("fastegnn", node_features=2, edge_features=2, hidden=64, layers=4, virtual_nodes=3).eval()
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "particles": n, "edges": batch.num_edges, "edges_per_particle": batch.num_edges / n,
        "graph_s": graph_s, "forward_s": float(np.median(times[1:])), "first_forward_s": times[0],
        "peak_mib": peak_kib / 1024, "peak_growth_mib": (peak_kib - base_kib) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 30, 37, 47],
                        help="particles per block edge (n³ particles; default 20 30 37 47 = 8k..104k)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the forward pass")
    parser.add_argument("--solver-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)  # internal: one frame file
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.threads, args.repeats)))
        return

    import torch

    print(f"torch {torch.__version__}; {args.threads} threads; float32; FastEGNN<3,0>, hidden 64, 4 layers; "
          f"median of {args.repeats} forward passes; machine: {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            frame = Path(tmp) / f"frame-{n}.npz"
            info = make_frame(n, frame, args.solver_threads)
            cmd = [sys.executable, __file__, "--case", str(frame), "--threads", str(args.threads),
                   "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = {**info, **json.loads(out.strip().splitlines()[-1])}
            rows.append(row)
            print(f"  n = {n}: {row['particles']:,} particles done", flush=True)
    print()
    print("| particles | edges | edges/particle | graph build s | forward s | graph + forward s | "
          "peak RSS MiB | µs per particle (graph + forward) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        total = r["graph_s"] + r["forward_s"]
        print(f"| {r['particles']:,} | {r['edges']:,} | {r['edges_per_particle']:.1f} | {r['graph_s']:.2f} | "
              f"{r['forward_s']:.2f} | {total:.2f} | {r['peak_mib']:.0f} | {1e6 * total / r['particles']:.1f} |")
    first, last = rows[0], rows[-1]
    ratio_n = last["particles"] / first["particles"]
    ratio_t = (last["graph_s"] + last["forward_s"]) / (first["graph_s"] + first["forward_s"])
    print()
    print(f"N grew {ratio_n:.1f}x, graph + forward time {ratio_t:.1f}x (linear would be {ratio_n:.1f}x); "
          f"largest frame: {last['graph_s'] + last['forward_s']:.2f} s, peak {last['peak_mib'] / 1024:.2f} GiB "
          f"(goal < 10 s, < 8 GB)")


if __name__ == "__main__":
    main()
