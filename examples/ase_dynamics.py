"""ASE dynamics whose steps are learned jumps: the AdK backbone with `FastEGNNCalculator`.

Loads the adenylate kinase (AdK) backbone from a trajectory, starts from one of its frames, sets
``atoms.calc = FastEGNNCalculator(checkpoint)`` and runs `FastEGNNDynamics` for a few jumps,
writing an ASE trajectory. Each step is one jump of the checkpoint's Δt (5 ps for the shipped
models). The data: MDAnalysisTests' adk.psf + adk_dims.dcd with the shipped ``adk-dims`` when the
test extra is installed, else the trajectory shipped in trajectories/adk-obc with ``adk-backbone``
(``--data`` chooses)::

    python examples/ase_dynamics.py                     # 5 jumps of the shipped model
    python examples/ase_dynamics.py runs/x/best.pt --jumps 20 --out adk.traj --data shipped

The shipped models take ``backward`` velocities (mean velocity over the previous jump), so the
frame one jump before the start frame is given to the calculator as history
(``set_previous_positions``); later jumps use their own history. Read the result with
``ase.io.read("adk-ase.traj", ":")`` or ``ase gui adk-ase.traj``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="checkpoint path or shipped name (default: adk-dims for --data dims, adk-backbone for shipped)")
    parser.add_argument("--data", choices=("auto", "dims", "shipped"), default="auto",
                        help="dims: MDAnalysisTests' AdK PSF/DCD (test extra); shipped: trajectories/adk-obc; "
                             "auto (default): dims if MDAnalysisTests is installed")
    parser.add_argument("--jumps", type=int, default=5, help="number of learned jumps (default 5)")
    parser.add_argument("--out", type=Path, default=Path("adk-ase.traj"), help="ASE trajectory to write")
    parser.add_argument("--frame", type=int, default=50, help="DCD frame to start from (default 50)")
    parser.add_argument("--policy", default="finite-difference",
                        choices=["predicted", "finite-difference", "maxwell-boltzmann"],
                        help="velocities after each jump (default finite-difference)")
    parser.add_argument("--temperature", type=float, default=None, help="K, for --policy maxwell-boltzmann")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default=None, help="FastEGNNLogger output file ('-' = stdout)")
    args = parser.parse_args(argv)

    from ase.io import read

    from fastegnn_md import FastEGNNCalculator
    from fastegnn_md.adapters.ase import FastEGNNDynamics, ase_time_to_ps, atoms_from_mdanalysis
    from fastegnn_md.adapters.mdanalysis import open_universe, select_atoms

    # After the imports (MDAnalysis installs its own filters): MDAnalysis notes that the PSF
    # has no coordinates and that its DCD reader will change; neither matters here.
    warnings.filterwarnings("ignore", module="MDAnalysis")

    data = args.data if args.data != "auto" else ("dims" if _has_test_files() else "shipped")
    if data == "dims":
        from MDAnalysisTests.datafiles import DCD, PSF

        topology, trajectory, default_model = PSF, DCD, "adk-dims"
    else:
        shipped = Path(__file__).resolve().parents[1] / "trajectories" / "adk-obc"
        topology, trajectory, default_model = shipped / "adk_obc.pdb", shipped / "adk_obc.xtc", "adk-backbone"
    print(f"data: {trajectory} ({data})")
    calc = FastEGNNCalculator(args.checkpoint or default_model)
    selection = calc.predictor.spec.selection or "backbone"
    universe = open_universe(topology, trajectory)
    atoms_group = select_atoms(universe, selection)

    # The frame one jump earlier, for the backward velocity of the first jump.
    frame_dt = float(universe.trajectory.dt)
    stride = int(round(calc.dt_ps / frame_dt))
    previous = None
    if stride >= 1 and abs(stride * frame_dt - calc.dt_ps) < 1e-3 * calc.dt_ps and args.frame - stride >= 0:
        previous = atoms_from_mdanalysis(atoms_group, frame=args.frame - stride).get_positions()
    atoms = atoms_from_mdanalysis(atoms_group, frame=args.frame)
    if previous is not None:
        calc.set_previous_positions(previous, atoms.get_positions())
        atoms.set_velocities((atoms.get_positions() - previous) / calc.timestep)
        print(f"start: frame {args.frame}, history from frame {args.frame - stride} ({stride} frames = one jump)")
    else:
        print(f"start: frame {args.frame}, no frame one jump earlier; the first jump uses the Atoms' velocities")
    atoms.calc = calc
    print(f"{len(atoms)} atoms ({selection}), formula {atoms.get_chemical_formula()}, "
          f"jump Δt = {calc.dt_ps:.3f} ps = {calc.timestep:.4f} ASE time units")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    dyn = FastEGNNDynamics(atoms, calc, velocity_policy=args.policy, temperature_K=args.temperature,
                           seed=args.seed, trajectory=str(args.out), logfile=args.log)
    start = atoms.get_positions()

    def report() -> None:
        line = (f"jump {dyn.nsteps:3d}  t = {ase_time_to_ps(dyn.get_time()):8.3f} ps  "
                f"RMS displacement {dyn.last_rms_displacement:7.4f} Å  "
                f"RMSD from start {np.sqrt(np.mean(np.sum((atoms.get_positions() - start) ** 2, axis=1))):7.4f} Å")
        if "virtual_positions" in calc.results:  # the next jump's virtual nodes (Å)
            centre = calc.results["virtual_positions"].mean(axis=0)
            line += f"  virtual-node centre ({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f}) Å"
        print(line + f"  [v-input: {calc.last_velocity_source}]")

    dyn.attach(report, interval=1)
    dyn.run(args.jumps)
    frames = read(str(args.out), ":")
    print(f"wrote {len(frames)} frames to {args.out} ({calc.model_calls} model calls)")


def _has_test_files() -> bool:
    try:
        import MDAnalysisTests.datafiles  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
