"""`fastegnn-md sph generate`: SPlisHSPlasH "water falling in a box" data (`fastegnn_md.adapters.splishsplash`).

Scene flags default to None so the values come from `SPHSceneSettings` (the numbers in the help
texts are its defaults).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import OneLineParser, UsageError, positive_int

#: Scene flags (argparse destinations) that map one to one onto `SPHSceneSettings` fields.
SCENE_FIELDS = ("num_frames", "seed", "particle_radius", "box_size", "connectivity_radius", "time_step",
                "frame_interval", "gravity", "block_size_range", "min_block_height", "initial_speed", "viscosity")


def add_parser(sub: argparse._SubParsersAction) -> None:
    sph = sub.add_parser("sph", help="SPH reference data (SPlisHSPlasH, Water-3D style)")
    sph_sub = sph.add_subparsers(dest="sph_command", parser_class=OneLineParser, required=True)
    gen = sph_sub.add_parser(
        "generate", help="simulate water falling in a box and write an SPH dataset directory (h5 + tfrecord)"
    )
    gen.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output directory")
    gen.add_argument("--train", type=positive_int, default=6, metavar="N", help="training trajectories (default 6)")
    gen.add_argument("--valid", type=positive_int, default=1, metavar="N", help="validation trajectories (default 1)")
    gen.add_argument("--test", type=positive_int, default=1, metavar="N", help="test trajectories (default 1)")
    gen.add_argument("--frames", type=int, default=None, dest="num_frames", metavar="T",
                     help="stored frames per trajectory, incl. the initial one (default 300)")
    gen.add_argument("--seed", type=int, default=None, metavar="S",
                     help="seed of the per-trajectory scenes (default 0)")
    gen.add_argument("--particle-radius", type=float, default=None, metavar="R", help="m (default 0.0125)")
    gen.add_argument("--box-size", type=float, default=None, metavar="L", help="edge of the cubic box, m (default 1)")
    gen.add_argument("--connectivity-radius", type=float, default=None, metavar="RC",
                     help="metadata default_connectivity_radius, units of the box (default 1.6 particle diameters)")
    gen.add_argument("--time-step", type=float, default=None, metavar="DT",
                     help="fixed solver step, s (default 0.00125)")
    gen.add_argument("--frame-interval", type=float, default=None, metavar="DT",
                     help="s between stored frames (default 0.005)")
    gen.add_argument("--gravity", type=float, default=None, metavar="G", help="m/s^2 along -y (default 9.81)")
    gen.add_argument("--block-size-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                     help="water block edge per axis, m (default 0.4 0.6)")
    gen.add_argument("--min-block-height", type=float, default=None, metavar="H",
                     help="lowest start of the block above the floor, m (default 0.2)")
    gen.add_argument("--initial-speed", type=float, default=None, metavar="V",
                     help="block velocity components uniform in +-V, m/s (default 1)")
    gen.add_argument("--viscosity", type=float, default=None, metavar="NU",
                     help="SPlisHSPlasH standard viscosity (default 0.01)")
    gen.add_argument("--scenes", nargs="+", default=None, choices=("block", "dam_break", "drop"), metavar="KIND",
                     help="scene kinds each trajectory is drawn from: block (dropped with a random velocity), "
                          "dam_break (at rest in a corner on the floor), drop (a block falling into a pool) "
                          "(default: all three)")
    gen.add_argument("--no-walls", action="store_true",
                     help="store the water alone, without the box's walls as kinematic particles (type 3)")
    gen.add_argument("--format", dest="formats", nargs="+", choices=("h5", "tfrecord"), default=None,
                     help="files to write per split (default: h5 tfrecord)")
    gen.add_argument("--threads", type=positive_int, default=1, metavar="N", help="solver OpenMP threads (default 1)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    sph.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..adapters.splishsplash import SPHSceneSettings, generate_sph_dataset
    except ImportError as exc:
        raise UsageError(f"sph generate: {exc}") from None

    given = {name: getattr(args, name) for name in SCENE_FIELDS if getattr(args, name) is not None}
    if "block_size_range" in given:
        given["block_size_range"] = tuple(given["block_size_range"])
    if args.scenes:
        given["scenes"] = tuple(dict.fromkeys(args.scenes))
    settings = SPHSceneSettings(**given, store_walls=not args.no_walls)
    extra = {"formats": tuple(args.formats)} if args.formats else {}
    path = generate_sph_dataset(
        args.out_dir, settings, num_train=args.train, num_valid=args.valid, num_test=args.test,
        progress=not args.quiet, threads=args.threads, **extra,
    )
    total = args.train + args.valid + args.test
    print(
        f"wrote SPH dataset ({total} trajectories of {settings.num_frames} frames, "
        f"{settings.frame_interval} s apart) to {path}"
    )
    return 0
