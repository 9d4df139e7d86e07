"""Drive an OpenMM Simulation with learned FastEGNN jumps (`FastEGNNStepper`).

Prepares AdK for amber14 in vacuum (``--structure``; default MDAnalysisTests' adk_open.pdb when the
test extra is installed, else the shipped trajectories/adk-obc/adk_obc.pdb), builds a simulation (2 fs,
1 nm cutoff), attaches a DCDReporter and a StateDataReporter that report once per jump, runs
``--warm-up`` Δt of ordinary MD (so the first learned jump gets the mean velocity over the previous
Δt that the model was trained with), then ``--jumps`` jumps with the stepper and prints its summary::

    python examples/openmm_stepper.py --jumps 2 --out stepper-out
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import openmm.app as app
import openmm.unit as unit

from fastegnn_md.adapters import openmm as omm

SHIPPED_STRUCTURE = Path(__file__).resolve().parents[1] / "trajectories" / "adk-obc" / "adk_obc.pdb"


def default_structure() -> Path:
    """MDAnalysisTests' AdK (CHARMM names, what the tests' models were trained on) when installed,
    else the AdK structure shipped with the repository (the main install has no MDAnalysisTests)."""
    try:
        from MDAnalysisTests.datafiles import PDB_small
    except ImportError:
        return SHIPPED_STRUCTURE
    return Path(PDB_small)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jumps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("openmm-stepper-out"))
    parser.add_argument("--checkpoint", default="adk-backbone", help="shipped name or path of a checkpoint")
    parser.add_argument("--relax-steps", type=int, default=25)
    parser.add_argument("--warm-up", type=int, default=1, help="Δt of ordinary MD before the first jump")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--minimise-iterations", type=int, default=100, help="of the start structure")
    parser.add_argument("--structure", type=Path, default=None,
                        help="PDB structure (default: MDAnalysisTests' adk_open.pdb if installed, else the shipped AdK)")
    args = parser.parse_args(argv)
    structure = args.structure or default_structure()
    print(f"structure: {structure}")
    args.out.mkdir(parents=True, exist_ok=True)

    settings = omm.SimulationSettings(forcefield="amber14", solvent="vacuum", cutoff_nm=1.0, timestep_fs=2.0,
                                      hydrogen_mass_amu=None, temperature_k=300.0, seed=0)
    topology, positions = omm.prepare_structure(structure)
    simulation = omm.make_simulation(topology, omm.build_system(topology, settings), settings, args.threads)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=args.minimise_iterations)
    simulation.context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed)
    with open(args.out / "start.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, simulation.context.getState(getPositions=True).getPositions(), handle)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stepper = omm.FastEGNNStepper(simulation, args.checkpoint, relax_steps=args.relax_steps)
    interval = stepper.steps_per_jump
    simulation.reporters.append(app.DCDReporter(str(args.out / "stepper.dcd"), interval))
    simulation.reporters.append(app.StateDataReporter(str(args.out / "stepper.csv"), interval, step=True,
                                                      time=True, potentialEnergy=True, temperature=True))
    stepper.warm_up(args.warm_up)  # reporters record it: it is ordinary MD
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stepper.step(args.jumps)
    summary = stepper.summary()
    print(json.dumps(summary, indent=2))
    print(f"simulated {simulation.context.getState().getTime()} in {simulation.currentStep} steps; "
          f"{summary['warm_up_jumps']} warm-up Δt, {summary['accepted']} accepted, {summary['rejected']} rejected jumps")
    return summary


if __name__ == "__main__":
    main()
