"""`fastegnn-md simulate`: reference MD with OpenMM from a structure file (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import UsageError, nonneg_float, positive_int


def add_force_field_arguments(parser: argparse.ArgumentParser) -> None:
    """Force field, integrator and start options shared by `simulate` and `validate` (SimulationSettings)."""
    parser.add_argument("--forcefield", default="amber99sb", help="amber99sb (default), amber14 or charmm36")
    parser.add_argument("--solvent", default="obc", help="obc (default, amber99sb), obc2/gbn2 (amber14) or vacuum")
    parser.add_argument("--cutoff", type=nonneg_float, default=1.6, help="nonbonded cutoff in nm; 0 = none (default 1.6)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin collision rate, 1/ps (default 1)")
    parser.add_argument("--timestep", type=float, default=4.0, help="fs (default 4, with --hydrogen-mass 1.5)")
    parser.add_argument("--hydrogen-mass", type=nonneg_float, default=1.5, help="amu; 0 keeps the force field's (default 1.5)")
    parser.add_argument("--equilibrate", type=nonneg_float, default=10.0, help="unrecorded ps after minimisation (default 10)")
    parser.add_argument("--minimise", type=int, default=500, help="minimisation iterations, 0 = none (default 500)")
    parser.add_argument("--seed", type=int, default=0)


def simulation_settings(args: argparse.Namespace, **extra: Any) -> Any:
    """SimulationSettings from the `add_force_field_arguments` options (+ command-specific fields)."""
    try:
        from ..adapters.openmm import SimulationSettings
    except ImportError as exc:
        raise UsageError(f"{args.command}: {exc}") from None
    return SimulationSettings(
        forcefield=args.forcefield, solvent=args.solvent, cutoff_nm=args.cutoff or None,
        temperature_k=args.temperature, friction_per_ps=args.friction, timestep_fs=args.timestep,
        hydrogen_mass_amu=args.hydrogen_mass or None, equilibration_ps=args.equilibrate,
        minimise_iterations=args.minimise, seed=args.seed, **extra,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="reference MD with OpenMM from a structure file (resumable)")
    sim.add_argument("structure", type=Path, help="PDB or PDBx/mmCIF structure (CHARMM names are fine)")
    sim.add_argument("--out", required=True, type=Path, help="trajectory file; format from the extension (.xtc, .trr, .dcd, ...)")
    add_force_field_arguments(sim)
    sim.add_argument("--frame-interval", type=float, default=0.5, help="ps between frames (default 0.5)")
    sim.add_argument("--length", type=float, default=100.0, help="production length in ps (default 100)")
    sim.add_argument("--selection", default="protein", help="MDAnalysis selection written (default protein)")
    sim.add_argument("--threads", type=positive_int, default=None, help="OpenMM CPU threads")
    sim.add_argument("--checkpoint-every", type=nonneg_float, default=300.0, help="seconds between checkpoints (default 300)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    sim.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = simulation_settings(args, length_ps=args.length, frame_interval_ps=args.frame_interval,
                                   selection=args.selection)
    from ..adapters.openmm import simulate

    result = simulate(
        args.structure, args.out, settings, threads=args.threads,
        checkpoint_seconds=args.checkpoint_every, progress=not args.quiet,
    )
    print(result.summary())
    return 0
