"""`fastegnn-md validate`: the learned OpenMM stepper against ordinary MD of the same system (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, positive_int
from .simulate import add_force_field_arguments, simulation_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    va = sub.add_parser("validate", help="learned OpenMM stepper vs ordinary MD of the same system (resumable)")
    va.add_argument("structure", type=Path, help="structure the checkpoint's system was built from (PDB/PDBx)")
    va.add_argument("--checkpoint", default="protein-backbone",
                    help="checkpoint path or shipped model (default protein-backbone: any protein backbone)")
    va.add_argument("--jumps", type=positive_int, default=10, help="jumps of the checkpoint's Δt (default 10)")
    va.add_argument("--out", type=Path, default=Path("validation"), help="report directory (default ./validation)")
    va.add_argument("--reference-replicas", type=positive_int, default=2,
                    help="independent reference MD runs from the common start, other Langevin seeds (default 2: "
                         "the report compares the stepper's distributions with the run-to-run spread)")
    va.add_argument("--reference-from", type=Path, default=None, metavar="DIR",
                    help="reuse the reference MD of an earlier validate run in DIR (same structure, force field and "
                         "seed; checked on the common start): only the stepper runs, e.g. to compare stepper "
                         "settings or models at a fraction of the cost")
    add_force_field_arguments(va)
    va.add_argument("--relax-steps", type=int, default=25, help="restrained integrator steps per jump (default 25)")
    va.add_argument("--descent-iterations", type=int, default=1,
                    help="restrained descent iterations per jump (default 1: more quench the protein cold, none "
                         "leaves it hot; measured on villin over 2 ns)")
    va.add_argument("--retry-descent-iterations", type=int, default=15,
                    help="a jump that fails the energy check is placed again with this many before MD replaces it "
                         "(default 15)")
    va.add_argument("--restraint-k", type=float, default=5000.0, help="kJ/mol/nm² while relaxing (default 5000)")
    va.add_argument("--velocity-policy", default="thermal", help="thermal (default) or keep")
    va.add_argument("--release-stages", type=positive_int, default=1,
                    help="release the restraint linearly to 0 over this many stages of the relax steps, the last "
                         "one free MD (default 1: held for all of them)")
    va.add_argument("--sample", action="store_true",
                    help="draw each jump from the checkpoint's fitted spread (fastegnn-md calibrate) instead of its mean")
    va.add_argument("--sample-scale", type=float, default=0.3,
                    help="factor on the sampled noise (default 0.3, chosen by measurement on villin over 2 ns)")
    va.add_argument("--unguarded", action="store_true", help="accept every jump (no energy check, no MD fallback)")
    va.add_argument("--threads", type=positive_int, default=None, help="OpenMM CPU threads")
    va.add_argument("--quiet", action="store_true", help="no progress bars")
    va.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..adapters.openmm.validate import validate
    except ImportError as exc:
        raise UsageError(f"validate: {exc}") from None
    if not args.structure.is_file():
        raise UsageError(f"{args.structure}: no such structure file")
    settings = simulation_settings(args)
    options = {"relax_steps": args.relax_steps, "minimise_iterations": args.descent_iterations,
               "restraint_k": args.restraint_k, "velocity_policy": args.velocity_policy,
               "guarded": not args.unguarded, "release_stages": args.release_stages, "sample": args.sample,
               "retry_minimise_iterations": args.retry_descent_iterations}
    if args.sample:
        options["sample_scale"] = args.sample_scale
    result = validate(args.structure, args.out, args.checkpoint, settings, jumps=args.jumps, threads=args.threads,
                      stepper_options=options, progress=not args.quiet,
                      reference_replicas=args.reference_replicas, reference_from=args.reference_from)
    print(result.summary())
    return 0
