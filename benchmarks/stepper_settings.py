"""Choose the OpenMM stepper's settings by measurement: ensemble figures against cost per jump.

Usage (from the repository root)::

    P=$(python -c "import openmm.app, os; print(os.path.join(os.path.dirname(openmm.app.__file__), 'data', 'test.pdb'))")
    python benchmarks/stepper_settings.py "$P" --checkpoint protein-backbone --jumps 40 --reference \
        --variant 'mean, 15 descent={"minimise_iterations": 15, "retry_minimise_iterations": 0}' \
        --variant 'sampled 0.5, 3 descent={"sample": true, "sample_scale": 0.5, "minimise_iterations": 3}'

From the common start of `fastegnn-md validate` (the structure prepared, minimised and
equilibrated with ``--seed``, then one Δt of MD for the jump history) each variant's
`FastEGNNStepper` (keyword arguments as JSON) makes ``--jumps`` jumps; with ``--reference``
ordinary MD from the same start runs as long. Printed per run: potential energy (kJ/mol) and
Rg of the selected atoms (Å), mean ± SD over the jumps; Kabsch RMSD from the start averaged over
the last 10 % of the jumps (Å); retried and rejected jumps; wall seconds per jump. The wall time
of a variant is on whatever else the machine runs: compare variants of one invocation.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from fastegnn_md import metrics
from fastegnn_md.adapters import openmm as omm
from fastegnn_md.adapters.openmm import validate as common
from fastegnn_md.adapters.openmm.units import openmm, unit


def figures(pe: list, rg: list, rmsd: list) -> list[str]:
    """Table cells: PE mean ± SD, Rg mean ± SD, RMSD from the start over the last 10 % of jumps."""
    tail = max(1, len(rmsd) // 10)
    return [f"{np.mean(pe):.0f} ± {np.std(pe):.0f}", f"{np.mean(rg):.2f} ± {np.std(rg):.2f}",
            f"{np.mean(rmsd[-tail:]):.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("structure")
    parser.add_argument("--checkpoint", default="protein-backbone")
    parser.add_argument("--jumps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variant", action="append", required=True, help="NAME={stepper keyword arguments as JSON}")
    parser.add_argument("--reference", action="store_true", help="also run ordinary MD for the same time")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    settings = omm.SimulationSettings(seed=args.seed)
    topology, positions = omm.prepare_structure(args.structure)
    system = omm.build_system(topology, settings)
    xml = openmm.XmlSerializer.serialize(system)
    reference = omm.make_simulation(topology, system, settings, 1)
    probe = omm.make_simulation(topology, openmm.XmlSerializer.deserialize(xml), settings, 1)
    probe.context.setPositions(positions)
    probe_stepper = omm.FastEGNNStepper(probe, args.checkpoint)
    selected, steps = probe_stepper.selected, probe_stepper.steps_per_jump
    masses = np.array([system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in selected])
    previous = common._common_start(reference, positions, settings, selected, steps, False, lambda _: None)
    start_state = reference.context.getState(getPositions=True, getVelocities=True)
    start = common._selected(reference, selected)

    def record(simulation, advance) -> tuple[list, list, list, float]:
        pe, rg, rmsd = [], [], []
        began = time.perf_counter()
        for _ in range(args.jumps):
            advance()
            x = common._selected(simulation, selected)
            pe.append(common._energy(simulation))
            rg.append(float(metrics.radius_of_gyration(x, masses)))
            rmsd.append(metrics.kabsch_rmsd(x, start))
        return pe, rg, rmsd, (time.perf_counter() - began) / args.jumps

    print(f"| run | {args.jumps} jumps: PE (kJ/mol) | Rg (Å) | RMSD from start, last 10 % (Å) | retried | rejected | s/jump |")
    print("|---|---|---|---:|---:|---:|---:|")
    for spec in args.variant:
        name, _, options = spec.partition("=")
        options = dict(json.loads(options or "{}"))
        options.setdefault("seed", args.seed)
        simulation = omm.make_simulation(topology, openmm.XmlSerializer.deserialize(xml), settings, 1)
        simulation.context.setPositions(start_state.getPositions(asNumpy=True))
        simulation.context.setVelocities(start_state.getVelocities(asNumpy=True))
        stepper = omm.FastEGNNStepper(simulation, args.checkpoint, **options)
        stepper.set_history(previous)
        pe, rg, rmsd, wall = record(simulation, lambda: stepper.step(1))
        cells = [name, *figures(pe, rg, rmsd), str(stepper.retried), str(stepper.rejected), f"{wall:.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.reference:
        pe, rg, rmsd, wall = record(reference, lambda: reference.step(steps))
        print("| " + " | ".join(["ordinary MD", *figures(pe, rg, rmsd), "–", "–", f"{wall:.2f}"]) + " |")


if __name__ == "__main__":
    main()
