"""`fastegnn-md nbody generate`: the charged N-body data set (Satorras et al.)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import OneLineParser, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    nbody = sub.add_parser("nbody", help="charged N-body data (Satorras et al.)")
    nbody_sub = nbody.add_subparsers(dest="nbody_command", parser_class=OneLineParser, required=True)
    gen = nbody_sub.add_parser("generate", help="simulate and write a dataset directory")
    gen.add_argument("--out", required=True, type=Path, help="output directory")
    gen.add_argument("--train", type=positive_int, default=5000, help="training systems (default 5000)")
    gen.add_argument("--valid", type=positive_int, default=2000, help="validation systems (default 2000)")
    gen.add_argument("--test", type=positive_int, default=2000, help="test systems (default 2000)")
    gen.add_argument("--particles", type=positive_int, default=100, help="particles per system (default 100)")
    gen.add_argument("--frames", type=positive_int, default=41, help="stored frames, 100 steps apart (default 41)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    nbody.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.nbody import generate_dataset

    path = generate_dataset(
        args.out,
        num_train=args.train,
        num_valid=args.valid,
        num_test=args.test,
        num_particles=args.particles,
        num_frames=args.frames,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(f"wrote N-body dataset to {path}")
    return 0
