"""Where each reference replica's equilibration ends (`fastegnn_md.equilibration`), as a table.

    python benchmarks/equilibration.py trajectories/adk/adk_seed1.xtc trajectories/adk/adk_seed2.xtc

For every file (topology beside it, backbone atoms): block means of the backbone's radius of
gyration and of its number of residue contacts (8 Å, |i − j| ≥ 3), the band that last half's
block means span (mean ± z SD), and the discard: the start of the first block whose means are
inside their bands. The discard for a set of replicas is the largest of theirs
(`fastegnn-md train --discard PS`), so every replica is cut where it stopped drifting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastegnn_md.adapters.mdanalysis.reading import open_universe, resolve_md_files, select_atoms, trajectory_frames
from fastegnn_md.equilibration import equilibration_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trajectories", nargs="+", type=Path)
    parser.add_argument("--selection", default="backbone")
    parser.add_argument("--block", type=float, default=25.0, help="block length, ps (default 25)")
    parser.add_argument("--z", type=float, default=2.0, help="half-width of the band in SD of block means (default 2)")
    args = parser.parse_args()
    print(f"criterion: blocks of {args.block:g} ps; band = mean ± {args.z:g} SD of the last half's block means; "
          "discard = start of the first block whose mean Rg and mean residue contacts both lie in their bands")
    chosen = []
    for path in args.trajectories:
        topology, trajectory = resolve_md_files(path, None)
        universe = open_universe(topology, trajectory)
        atoms = select_atoms(universe, args.selection)
        frames, _, frame_dt = trajectory_frames(universe, atoms, 1, False, False)
        try:
            check = equilibration_time(frames, frame_dt, atoms.resindices, args.block, args.z)
        except ValueError as exc:  # too short for the criterion: say so and go on with the others
            print(f"\n{path.name}: not judged: {exc}")
            continue
        chosen.append(check.discard_ps)
        (rg_low, rg_high), (c_low, c_high) = check.bands["rg"], check.bands["contacts"]
        print(f"\n{path.name}: {len(frames)} frames, {frame_dt:g} ps apart; bands: Rg {rg_low:.3f}–{rg_high:.3f} Å, "
              f"contacts {c_low:.1f}–{c_high:.1f}")
        print("| block start (ps) | Rg (Å) | contacts | in band |")
        print("|---:|---:|---:|---|")
        for i, start in enumerate(check.block_starts):
            rg, contacts = check.block_means["rg"][i], check.block_means["contacts"][i]
            inside = rg_low <= rg <= rg_high and c_low <= contacts <= c_high
            print(f"| {start:g} | {rg:.3f} | {contacts:.1f} | {'yes' if inside else 'no'} |")
        print(f"discard {check.discard_ps:g} ps" + ("; the last half itself still drifts: a lower bound, run longer"
                                                   if check.drifting else "; the last half does not drift"))
    if chosen:
        print(f"\ndiscard for these replicas together: {max(chosen):g} ps")


if __name__ == "__main__":
    main()
