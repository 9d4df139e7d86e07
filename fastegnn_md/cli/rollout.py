"""`fastegnn-md rollout`: learned jumps from a frame of a trajectory or an SPH dataset, with a report.

One command for every kind of data that has a rollout case (`fastegnn_md.rollouts`): the path's
kind picks the case, the case reads its own flags, `run_rollout` does the rest. Exit status 1
when the rollout stopped early (frames and report are kept; scripts still see the stop).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..conventions import UNPHYSICAL
from .common import add_device_arguments, positive_int, set_torch_threads, torch_device

#: Flags that only some kinds of data take (each kind declares its own in ``rollout_flags``).
KIND_FLAGS = {"--topology": "topology", "--split": "split", "--trajectory": "trajectory_index",
              "--sinkhorn-particles": "sinkhorn_particles", "--keep-in-box": "keep_in_box",
              "--keep-density": "keep_density", "--particle-radius": "particle_radius"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    ro = sub.add_parser("rollout", help="learned jumps from a frame of a trajectory or SPH dataset, with a report")
    ro.add_argument("trajectory", type=Path, metavar="TRAJ",
                    help="any trajectory MDAnalysis reads (.xtc, .trr, .dcd, .pdb, ...), or an SPH dataset directory "
                         "(with metadata.json)")
    ro.add_argument("--topology", type=Path, default=None,
                    help="MD: topology (default: TRAJ's stem with .tpr/.psf/.gro/.pdb, else the checkpoint's)")
    ro.add_argument("--checkpoint", default=None,
                    help="shipped model name or path (MD default protein-backbone, any protein backbone; "
                         "required for SPH)")
    ro.add_argument("--start", type=int, default=None, help="start frame (default: first with a frame one jump earlier)")
    ro.add_argument("--jumps", type=positive_int, default=None, help="learned jumps (default: as many as TRAJ covers)")
    ro.add_argument("--out", type=Path, default=None,
                    help="predicted trajectory (default REPORT/predicted.<ext of TRAJ>; SPH: REPORT/predicted.h5)")
    ro.add_argument("--report", type=Path, default=None,
                    help="report directory (default ./<TRAJ stem>-rollout; SPH: ./<dir name>-<split><index>-rollout)")
    ro.add_argument("--max-displacement", type=float, default=None,
                    help="displacement of one atom/particle in one jump that stops the rollout (MD: Å, default 20; "
                         "SPH: dataset length units, default the diagonal of the dataset's bounds)")
    ro.add_argument("--unphysical", choices=UNPHYSICAL, default="stop",
                    help="a frame outside the physical range (MD: a kind of backbone bond off its start length by "
                         "more than 10 %%, or consecutive CA atoms closer than 2.5 Å): stop (default; frames kept, "
                         "exit 1) or warn and roll on")
    ro.add_argument("--split", default=None, help="SPH: split to read (default test)")
    ro.add_argument("--trajectory", dest="trajectory_index", type=int, default=None, metavar="I",
                    help="SPH: index of the trajectory in the split, in file order (default 0)")
    ro.add_argument("--sinkhorn-particles", type=positive_int, default=None, metavar="K",
                    help="SPH: particles subsampled for the Sinkhorn divergence (default 500)")
    ro.add_argument("--keep-in-box", type=float, default=None, metavar="M",
                    help="SPH: after every jump, move water that lies outside the dataset's box, or nearer a face "
                         "than M (length unit, e.g. the particle radius), back to M from that face, in the model's "
                         "rollout and the trivial predictors' alike; the report counts the particles moved (default "
                         "off: the model alone)")
    ro.add_argument("--keep-density", action="store_true", default=None,
                    help="SPH: after every jump, push water apart until none is denser than at rest (the solver's "
                         "cubic kernel, support 4 particle radii, walls as neighbours; position-based fluids), in the "
                         "model's rollout and the trivial predictors' alike; the report counts the particles moved "
                         "and the model's densest water before the push (default off)")
    ro.add_argument("--particle-radius", type=float, default=None, metavar="R",
                    help="SPH: the solver's particle radius (length unit), for --keep-density and the report's densest "
                         "water (default: metadata.json generator.settings.particle_radius, which `fastegnn-md sph "
                         "generate` records; without either, no densest-water readout)")
    add_device_arguments(ro)
    ro.add_argument("--sample", action="store_true",
                    help="draw each jump from the checkpoint's fitted spread (fastegnn-md calibrate) instead of its mean")
    ro.add_argument("--seed", type=int, default=0,
                    help="seed of sampled jumps: --sample's, or those of a model that samples (train --noise-channels) "
                         "(default 0)")
    ro.add_argument("--hold-geometry", action="store_true",
                    help="MD: after each mean jump, give atoms closer than 2.6 Å at its start (bonds and bond angles "
                         "of heavy atoms) and each peptide plane their start distances back, as bond constraints "
                         "do in MD (sampled jumps always do)")
    ro.add_argument("--quiet", action="store_true", help="no progress bars")
    ro.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.kinds import check_flags, kind_for_path
    from ..rollouts import rollout_case_for, rollout_kinds, run_rollout

    path = args.trajectory
    kind = kind_for_path(path, rollout_kinds(), purpose="rollout")
    check_flags(kind, {flag: getattr(args, name) for flag, name in KIND_FLAGS.items()}, str(path), "rollout_flags")
    case = rollout_case_for(kind).from_cli(args)
    device = torch_device(args.device)
    set_torch_threads(args.threads)
    outputs = run_rollout(case, args.checkpoint, device=device, progress=not args.quiet, seed=args.seed,
                          sample=args.sample, hold_geometry=args.hold_geometry, precision=args.precision)
    if args.sample:
        print(f"jumps sampled from the checkpoint's spread (seed {args.seed})")
    if args.hold_geometry:
        print("mean jumps with each start's bonds, bond angles and peptide planes held")
    if args.precision != "full":
        print(f"jumps computed in {args.precision} precision")
    for line in case.summary_lines(outputs):
        print(line)
    if outputs.stopped:
        print(f"rollout stopped early: {outputs.stopped}", file=sys.stderr)
    print(f"report: {outputs.report_files['markdown']}")
    return 1 if outputs.stopped else 0

