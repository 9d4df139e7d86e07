"""`fastegnn-md` command line: one module per command, each adding its own arguments.

    fastegnn-md nbody generate --out data/nbody [--train 5000 --valid 2000 --test 2000]
    fastegnn-md train --data data/nbody --model fastegnn --virtual-nodes 3 --drop-rate 0.75 --out runs/x
    fastegnn-md evaluate runs/x/best.pt --data data/nbody
    fastegnn-md train --data data/water --model fastegnn -C 3 --drop-rate 0.75 [--jump 15 --velocity backward] --out runs/w
    fastegnn-md evaluate runs/w/best.pt --data data/water
    fastegnn-md train --data md/adk.xtc [--topology md/adk.tpr] --selection backbone --jump 10 --out runs/adk
    fastegnn-md evaluate runs/adk/best.pt --data md/other.xtc --topology md/other.tpr
    fastegnn-md validate trajectories/adk-obc/adk_obc.pdb --jumps 10 --out validation
    fastegnn-md sph generate data/water [--train 6 --valid 1 --test 1 --frames 300 --particle-radius 0.0125]
    fastegnn-md calibrate runs/adk/best.pt --data md/adk.xtc --heldout md/other.xtc --out runs/adk/sampled.pt
    fastegnn-md rollout data/water --checkpoint runs/water/best.pt [--split test --trajectory 0 --start 20]

Every error a user can cause ends the program with one line
``fastegnn-md: error: <file or argument>: <what is wrong>`` and exit status 2.

=============  =============================================
module         command
=============  =============================================
`.nbody`       ``nbody generate``
`.sph`         ``sph generate``
`.train`       ``train``
`.rollout`     ``rollout``
`.simulate`    ``simulate`` (and the force-field options)
`.validate`    ``validate``
`.evaluate`    ``evaluate``
`.calibrate`   ``calibrate`` (the spread of sampled jumps)
`.common`      one-line errors, argument types, devices
=============  =============================================
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import calibrate, evaluate, nbody, rollout, simulate, sph, train, validate
from .common import PROG, OneLineParser, UsageError, route_warnings

#: The commands in the order ``--help`` lists them.
COMMAND_MODULES = (nbody, sph, train, rollout, simulate, validate, evaluate, calibrate)


def build_parser() -> OneLineParser:
    from .. import __version__

    parser = OneLineParser(prog=PROG, description="Learned E(3)-equivariant jumps for molecular dynamics (FastEGNN).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser, required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..errors import FastEGNNError

    try:
        args = build_parser().parse_args(argv)
        from ..runtime import tune_allocator

        tune_allocator()
        route_warnings()
        return args.run(args)
    except (UsageError, FastEGNNError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output, a file where a directory should be, disk full...
        where = exc.filename if exc.filename is not None else "I/O"
        print(f"{PROG}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["PROG", "OneLineParser", "UsageError", "build_parser", "main"]
