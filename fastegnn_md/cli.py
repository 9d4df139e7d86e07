"""`fastegnn-md` command line.

    fastegnn-md nbody generate --out data/nbody [--train 5000 --valid 2000 --test 2000]
    fastegnn-md train --data data/nbody --model fastegnn --virtual-nodes 3 --drop-rate 0.75 --out runs/x
    fastegnn-md evaluate runs/x/best.pt --data data/nbody
    fastegnn-md train --data data/water --model fastegnn -C 3 --drop-rate 0.75 [--jump 15 --velocity backward] --out runs/w
    fastegnn-md evaluate runs/w/best.pt --data data/water
    fastegnn-md train --data md/adk.xtc [--topology md/adk.tpr] --selection backbone --jump 10 --out runs/adk
    fastegnn-md evaluate runs/adk/best.pt --data md/other.xtc --topology md/other.tpr
    fastegnn-md validate trajectories/adk-obc/adk_obc.pdb --jumps 10 --out validation
    fastegnn-md sph generate data/water [--train 6 --valid 1 --test 1 --frames 300 --particle-radius 0.0125]
    fastegnn-md rollout data/water --checkpoint runs/water/best.pt [--split test --trajectory 0 --start 20]

Every error a user can cause ends the program with one line
``fastegnn-md: error: <file or argument>: <what is wrong>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

PROG = "fastegnn-md"


class UsageError(Exception):
    """A command-line mistake; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + error on two lines; users get the error line only."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog.replace(PROG, '').strip() or 'arguments'}: {message}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _gravity_axis(text: str) -> str:
    """`--gravity-axis`: x, y or z (optionally signed: gravity points along −axis unless "+"), or none;
    checked here by `data.sources.parse_gravity_axis`, which reads it again when the data is opened."""
    from .data.sources import parse_gravity_axis
    from .errors import DataError

    value = text.strip().lower()
    if value != "none":
        try:
            parse_gravity_axis(value, "--gravity-axis")
        except DataError:
            raise argparse.ArgumentTypeError(f"must be x, y, z or none, got {text!r}") from None
    return value


def _add_md_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `--data TRAJ` shared by train and evaluate."""
    parser.add_argument(
        "--topology", type=Path, default=None,
        help="MD: topology file (default: TRAJ's stem with .tpr, .psf, .gro or .pdb beside it)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="MD: cache the frames read from the trajectory here (default: no cache)",
    )


def _add_force_field_arguments(parser: argparse.ArgumentParser) -> None:
    """Force field, integrator and start options shared by `simulate` and `validate` (SimulationSettings)."""
    parser.add_argument("--forcefield", default="amber99sb", help="amber99sb (default), amber14 or charmm36")
    parser.add_argument("--solvent", default="obc", help="obc (default, amber99sb), obc2/gbn2 (amber14) or vacuum")
    parser.add_argument("--cutoff", type=_nonneg_float, default=1.6, help="nonbonded cutoff in nm; 0 = none (default 1.6)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin collision rate, 1/ps (default 1)")
    parser.add_argument("--timestep", type=float, default=4.0, help="fs (default 4, with --hydrogen-mass 1.5)")
    parser.add_argument("--hydrogen-mass", type=_nonneg_float, default=1.5, help="amu; 0 keeps the force field's (default 1.5)")
    parser.add_argument("--equilibrate", type=_nonneg_float, default=10.0, help="unrecorded ps after minimisation (default 10)")
    parser.add_argument("--minimise", type=int, default=500, help="minimisation iterations, 0 = none (default 500)")
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> OneLineParser:
    from . import __version__
    from .models import available_models

    parser = OneLineParser(prog=PROG, description="Learned E(3)-equivariant jumps for molecular dynamics (FastEGNN).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser, required=True)

    nbody = sub.add_parser("nbody", help="charged N-body data (Satorras et al.)")
    nbody_sub = nbody.add_subparsers(dest="nbody_command", parser_class=OneLineParser, required=True)
    gen = nbody_sub.add_parser("generate", help="simulate and write a dataset directory")
    gen.add_argument("--out", required=True, type=Path, help="output directory")
    gen.add_argument("--train", type=_positive_int, default=5000, help="training systems (default 5000)")
    gen.add_argument("--valid", type=_positive_int, default=2000, help="validation systems (default 2000)")
    gen.add_argument("--test", type=_positive_int, default=2000, help="test systems (default 2000)")
    gen.add_argument("--particles", type=_positive_int, default=100, help="particles per system (default 100)")
    gen.add_argument("--frames", type=_positive_int, default=41, help="stored frames, 100 steps apart (default 41)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sph_parser(sub)

    train = sub.add_parser("train", help="train a model; resumes from OUT/last.pt if present")
    train.add_argument(
        "--data", required=True, type=Path,
        help="dataset directory (with metadata.json) or MD trajectory file (any format MDAnalysis reads)",
    )
    train.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics.jsonl)")
    train.add_argument("--model", default="fastegnn", choices=available_models())
    train.add_argument("--virtual-nodes", "-C", type=_positive_int, default=3, help="C, virtual nodes (FastEGNN)")
    train.add_argument("--drop-rate", "-p", type=_fraction, default=0.0, help="fraction of longest edges dropped")
    train.add_argument("--cutoff", type=float, default=None,
                       help="radius graph cutoff (default: dataset's; MD: 10 Å; SPH: metadata default_connectivity_radius)")
    train.add_argument("--sigma", type=float, default=1.5, help="MMD kernel bandwidth, length unit (default 1.5)")
    train.add_argument("--mmd-weight", type=float, default=None,
                       help="lambda of Eq. 11; 0 disables MMD (default 0.03; SPH: 0.01, the paper's Water-3D value)")
    train.add_argument("--mmd-samples", type=_positive_int, default=100, help="real nodes sampled per graph for MMD")
    train.add_argument("--hidden", type=_positive_int, default=64)
    train.add_argument("--layers", type=_positive_int, default=4)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=1e-12)
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="graphs per batch (default 50; SPH: 20, the authors' Water-3D script)")
    train.add_argument("--epochs", type=_positive_int, default=100)
    train.add_argument("--patience", type=_positive_int, default=50, help="early stopping: epochs without improvement")
    train.add_argument("--length-scale", type=float, default=None,
                       help="length that becomes 1 inside the model (default: 10 for Å data, 1 otherwise)")
    train.add_argument("--grad-clip", type=float, default=None, help="cap the gradient norm per step (default off)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N training examples")
    train.add_argument("--max-valid", type=_positive_int, default=None, help="use only the first N validation examples")
    train.add_argument(
        "--frames", type=int, nargs=2, default=None, metavar=("IN", "OUT"), help="N-body frames (default 30 40)"
    )
    _add_md_arguments(train)
    train.add_argument("--selection", default=None, help="MD: MDAnalysis selection of the graph nodes (default backbone)")
    train.add_argument("--jump", type=_positive_int, default=None,
                       help="MD: frames per learned jump, after --stride (default 1); SPH: frames per jump (default 15)")
    train.add_argument("--stride", type=_positive_int, default=None, help="MD: read every S-th frame (default 1)")
    train.add_argument(
        "--velocity", choices=("backward", "physical", "forward", "paper"), default=None,
        help="MD/SPH: input velocities from x_t - x_(t-jump) (backward, default), the file (physical, MD only) "
             "or x_(t+1) - x_t (forward, alias paper)",
    )
    train.add_argument("--gravity-axis", type=_gravity_axis, default=None, metavar="x|y|z|none",
                       help="SPH: axis of the learned gravity term (default: the dataset's metadata, else y)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    train.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    ro = sub.add_parser("rollout", help="learned jumps from a frame of a trajectory or SPH dataset, with a report")
    ro.add_argument("trajectory", type=Path, metavar="TRAJ",
                    help="any trajectory MDAnalysis reads (.xtc, .trr, .dcd, .pdb, ...), or an SPH dataset directory "
                         "(with metadata.json)")
    ro.add_argument("--topology", type=Path, default=None,
                    help="MD: topology (default: TRAJ's stem with .tpr/.psf/.gro/.pdb, else the checkpoint's)")
    ro.add_argument("--checkpoint", default=None,
                    help="shipped model name or path (MD default adk-backbone, or a shipped model that fits the atoms; "
                         "required for SPH)")
    ro.add_argument("--start", type=int, default=None, help="start frame (default: first with a frame one jump earlier)")
    ro.add_argument("--jumps", type=_positive_int, default=None, help="learned jumps (default: as many as TRAJ covers)")
    ro.add_argument("--out", type=Path, default=None,
                    help="predicted trajectory (default REPORT/predicted.<ext of TRAJ>; SPH: REPORT/predicted.h5)")
    ro.add_argument("--report", type=Path, default=None,
                    help="report directory (default ./<TRAJ stem>-rollout; SPH: ./<dir name>-<split><index>-rollout)")
    ro.add_argument("--max-displacement", type=float, default=None,
                    help="displacement of one atom/particle in one jump that stops the rollout (MD: Å, default 20; "
                         "SPH: dataset length units, default the diagonal of the dataset's bounds)")
    ro.add_argument("--split", default=None, help="SPH: split to read (default test)")
    ro.add_argument("--trajectory", dest="trajectory_index", type=int, default=None, metavar="I",
                    help="SPH: index of the trajectory in the split, in file order (default 0)")
    ro.add_argument("--sinkhorn-particles", type=_positive_int, default=None, metavar="K",
                    help="SPH: particles subsampled for the Sinkhorn divergence (default 500)")
    ro.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    ro.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    ro.add_argument("--quiet", action="store_true", help="no progress bars")

    sim = sub.add_parser("simulate", help="reference MD with OpenMM from a structure file (resumable)")
    sim.add_argument("structure", type=Path, help="PDB or PDBx/mmCIF structure (CHARMM names are fine)")
    sim.add_argument("--out", required=True, type=Path, help="trajectory file; format from the extension (.xtc, .trr, .dcd, ...)")
    _add_force_field_arguments(sim)
    sim.add_argument("--frame-interval", type=float, default=0.5, help="ps between frames (default 0.5)")
    sim.add_argument("--length", type=float, default=100.0, help="production length in ps (default 100)")
    sim.add_argument("--selection", default="protein", help="MDAnalysis selection written (default protein)")
    sim.add_argument("--threads", type=_positive_int, default=None, help="OpenMM CPU threads")
    sim.add_argument("--checkpoint-every", type=_nonneg_float, default=300.0, help="seconds between checkpoints (default 300)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")

    va = sub.add_parser("validate", help="learned OpenMM stepper vs ordinary MD of the same system (resumable)")
    va.add_argument("structure", type=Path, help="structure the checkpoint's system was built from (PDB/PDBx)")
    va.add_argument("--checkpoint", default="adk-backbone", help="checkpoint path or shipped model (default adk-backbone)")
    va.add_argument("--jumps", type=_positive_int, default=10, help="jumps of the checkpoint's Δt (default 10)")
    va.add_argument("--out", type=Path, default=Path("validation"), help="report directory (default ./validation)")
    _add_force_field_arguments(va)
    va.add_argument("--relax-steps", type=int, default=25, help="restrained integrator steps per jump (default 25)")
    va.add_argument("--descent-iterations", type=int, default=15, help="restrained descent iterations per jump (default 15)")
    va.add_argument("--restraint-k", type=float, default=5000.0, help="kJ/mol/nm² while relaxing (default 5000)")
    va.add_argument("--velocity-policy", default="thermal", help="thermal (default) or keep")
    va.add_argument("--unguarded", action="store_true", help="accept every jump (no energy check, no MD fallback)")
    va.add_argument("--threads", type=_positive_int, default=None, help="OpenMM CPU threads")
    va.add_argument("--quiet", action="store_true", help="no progress bars")

    ev = sub.add_parser("evaluate", help="test MSE and inference time relative to EGNN")
    ev.add_argument("checkpoint", help="checkpoint path or shipped model name")
    ev.add_argument("--data", required=True, type=Path, help="dataset directory or MD trajectory file")
    _add_md_arguments(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress bar while reading a trajectory")
    ev.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ev.add_argument("--max-examples", type=_positive_int, default=None)
    ev.add_argument("--batch-size", type=_positive_int, default=50)
    ev.add_argument("--repeats", type=_positive_int, default=3, help="timing repeats (median is reported)")
    ev.add_argument("--threads", type=_positive_int, default=None)
    ev.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _device(name: str) -> str:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: {name} requested but torch sees no CUDA device")
    return str(device)


def cmd_nbody_generate(args: argparse.Namespace) -> int:
    from .data.nbody import generate_dataset

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


def _add_sph_parser(sub: argparse._SubParsersAction) -> None:
    """`sph generate OUT_DIR`: SPlisHSPlasH "water falling in a box" data (adapters/splishsplash.py).

    Scene flags default to None so the values come from `SPHSceneSettings` (the numbers in the
    help texts are its defaults); the adapter is imported only when the command runs.
    """
    sph = sub.add_parser("sph", help="SPH reference data (SPlisHSPlasH, Water-3D style)")
    sph_sub = sph.add_subparsers(dest="sph_command", parser_class=OneLineParser, required=True)
    gen = sph_sub.add_parser(
        "generate", help="simulate water falling in a box and write an SPH dataset directory (h5 + tfrecord)"
    )
    gen.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output directory")
    gen.add_argument("--train", type=_positive_int, default=6, metavar="N", help="training trajectories (default 6)")
    gen.add_argument("--valid", type=_positive_int, default=1, metavar="N", help="validation trajectories (default 1)")
    gen.add_argument("--test", type=_positive_int, default=1, metavar="N", help="test trajectories (default 1)")
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
    gen.add_argument("--format", dest="formats", nargs="+", choices=("h5", "tfrecord"), default=None,
                     help="files to write per split (default: h5 tfrecord)")
    gen.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="solver OpenMP threads (default 1)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_sph_generate(args: argparse.Namespace) -> int:
    try:
        from .adapters.splishsplash import SPHSceneSettings, generate_sph_dataset
    except ImportError as exc:
        raise UsageError(f"sph generate: {exc}") from None

    names = ("num_frames", "seed", "particle_radius", "box_size", "connectivity_radius", "time_step",
             "frame_interval", "gravity", "block_size_range", "min_block_height", "initial_speed", "viscosity")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "block_size_range" in given:
        given["block_size_range"] = tuple(given["block_size_range"])
    settings = SPHSceneSettings(**given)
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


#: Default length scale of molecular data (Å): the paper's 10 Å cutoff, so neighbour distances
#: inside the model are at most 1 (fastegnn_md.models.base.JumpModel).
MOLECULAR_LENGTH_SCALE = 10.0


def _length_scale(requested: Optional[float], spec_fields: dict) -> float:
    if requested is not None:
        return requested
    return MOLECULAR_LENGTH_SCALE if spec_fields.get("units", {}).get("length") == "Å" else 1.0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .data.sources import open_dataset
    from .training import TrainConfig, Trainer

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames, md, sph = _train_data_options(args)
    dataset = open_dataset(args.data, frame_in=frames[0], frame_out=frames[1], md=md, sph=sph)
    cutoff = args.cutoff if args.cutoff is not None else dataset.spec_fields.get("cutoff")
    # SPH defaults: the paper's Water-3D lambda (Table 5) and the authors' batch of 20 large graphs.
    mmd_weight = args.mmd_weight if args.mmd_weight is not None else (0.01 if sph is not None else 0.03)
    batch_size = args.batch_size if args.batch_size is not None else (20 if sph is not None else 50)
    try:
        config = TrainConfig(
            model=args.model,
            hidden=args.hidden,
            layers=args.layers,
            virtual_nodes=args.virtual_nodes,
            cutoff=cutoff,
            drop_rate=args.drop_rate,
            sigma=args.sigma,
            mmd_weight=mmd_weight,
            mmd_samples=args.mmd_samples,
            lr=args.lr,
            weight_decay=args.weight_decay,
            batch_size=batch_size,
            epochs=args.epochs,
            patience=args.patience,
            grad_clip=args.grad_clip,
            length_scale=_length_scale(args.length_scale, dataset.spec_fields),
            gravity_axis=dataset.spec_fields.get("gravity_axis"),
            seed=args.seed,
            dtype=args.dtype,
            device=device,
        )
    except ValueError as exc:
        raise UsageError(f"train: {exc}") from None
    train_pairs = dataset.load("train", args.max_train)
    valid_pairs = dataset.load("valid", args.max_valid)
    trainer = Trainer(
        config, train_pairs, valid_pairs, args.out, dataset.spec_fields, str(args.data), progress=not args.quiet
    )
    summary = trainer.fit(resume=not args.no_resume)
    print(
        f"trained {config.model} for {summary['epochs']} epochs; best valid MSE "
        f"{summary['best_valid_mse']:.6g} at epoch {summary['best_epoch']}; "
        f"checkpoint {args.out / 'best.pt'}"
    )
    return 0


def _train_data_options(args: argparse.Namespace):
    """(N-body frames, MDOptions or None, SPHOptions or None) for `train`; a flag of another kind
    of data is a UsageError."""
    import math

    from .data.sources import MDOptions, SPHOptions, is_sph_directory, is_trajectory_path

    md_only = {"--topology": args.topology, "--selection": args.selection, "--stride": args.stride,
               "--cache-dir": args.cache_dir}
    md_or_sph = {"--jump": args.jump, "--velocity": args.velocity}
    velocity = "forward" if args.velocity == "paper" else args.velocity
    if args.cutoff is not None and not (math.isfinite(args.cutoff) and args.cutoff > 0):
        raise UsageError(f"--cutoff: must be a positive length, got {args.cutoff}")  # before any slow read
    if not is_trajectory_path(args.data):
        if is_sph_directory(args.data):
            given = [flag for flag, value in md_only.items() if value is not None]
            if given:
                raise UsageError(
                    f"{given[0]}: applies to MD trajectory files, but --data {args.data} is an SPH dataset directory"
                )
            if args.frames is not None:
                raise UsageError(f"--frames: applies to N-body dataset directories; use --jump for SPH dataset {args.data}")
            if velocity == "physical":
                raise UsageError(f"--velocity: SPH dataset {args.data} stores no velocities; use backward or forward")
            sph = SPHOptions()
            if args.gravity_axis is not None:
                sph.gravity_axis = None if args.gravity_axis == "none" else args.gravity_axis
            for name, value in (("jump", args.jump), ("velocity_convention", velocity), ("cutoff", args.cutoff)):
                if value is not None:
                    setattr(sph, name, value)
            return (30, 40), None, sph
        given = [flag for flag, value in {**md_only, **md_or_sph}.items() if value is not None]
        if given and args.data.is_dir():
            kind = "MD trajectory files and SPH dataset directories" if given[0] in md_or_sph else "MD trajectory files"
            raise UsageError(f"{given[0]}: applies to {kind}, but --data {args.data} is an N-body dataset directory")
        if args.gravity_axis is not None and args.data.is_dir():
            raise UsageError(
                f"--gravity-axis: applies to SPH dataset directories, but --data {args.data} is an N-body dataset directory"
            )
        return tuple(args.frames or (30, 40)), None, None
    if args.frames is not None:
        raise UsageError(f"--frames: applies to N-body dataset directories; use --jump/--stride for trajectory {args.data}")
    if args.gravity_axis is not None:
        raise UsageError(
            f"--gravity-axis: applies to SPH dataset directories, but --data {args.data} is an MD trajectory file"
        )
    md = MDOptions(topology=args.topology, cache_dir=args.cache_dir, progress=not args.quiet)
    for name, value in (("selection", args.selection), ("jump", args.jump), ("stride", args.stride),
                        ("velocity_convention", velocity), ("cutoff", args.cutoff)):
        if value is not None:
            setattr(md, name, value)
    return (30, 40), md, None


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .data.sources import open_for_checkpoint
    from .evaluation import evaluate_checkpoint

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data.is_dir():
        given = [flag for flag, value in (("--topology", args.topology), ("--cache-dir", args.cache_dir)) if value]
        if given:
            raise UsageError(
                f"{given[0]}: applies to MD trajectory files, but --data {args.data} is a dataset directory"
            )
    ckpt = load_checkpoint(args.checkpoint)
    dataset = open_for_checkpoint(
        args.data, ckpt.data_spec, topology=args.topology, cache_dir=args.cache_dir, progress=not args.quiet
    )
    pairs = dataset.load(args.split, args.max_examples)
    result = evaluate_checkpoint(ckpt, pairs, batch_size=args.batch_size, repeats=args.repeats, device=device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']} on {len(pairs)} {args.split} examples: MSE {result['mse']:.6g} "
            f"({ckpt.data_spec.units['length']}^2); inference {result['seconds']:.3f} s, "
            f"{result['relative_time']:.3f}x EGNN ({result['egnn_seconds']:.3f} s, same process)"
        )
    return 0


def _simulation_settings(args: argparse.Namespace, settings_class: Any, **extra: Any) -> Any:
    """SimulationSettings from the `_add_force_field_arguments` options (+ command-specific fields)."""
    return settings_class(
        forcefield=args.forcefield, solvent=args.solvent, cutoff_nm=args.cutoff or None,
        temperature_k=args.temperature, friction_per_ps=args.friction, timestep_fs=args.timestep,
        hydrogen_mass_amu=args.hydrogen_mass or None, equilibration_ps=args.equilibrate,
        minimise_iterations=args.minimise, seed=args.seed, **extra,
    )


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        from .adapters.openmm import SimulationSettings
        from .adapters.openmm_validate import validate
    except ImportError as exc:
        raise UsageError(f"validate: {exc}") from None
    if not args.structure.is_file():
        raise UsageError(f"{args.structure}: no such structure file")
    settings = _simulation_settings(args, SimulationSettings)
    options = {"relax_steps": args.relax_steps, "minimise_iterations": args.descent_iterations,
               "restraint_k": args.restraint_k, "velocity_policy": args.velocity_policy,
               "guarded": not args.unguarded}
    result = validate(args.structure, args.out, args.checkpoint, settings, jumps=args.jumps, threads=args.threads,
                      stepper_options=options, progress=not args.quiet)
    print(result.summary())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        from .adapters.openmm import SimulationSettings, simulate
    except ImportError as exc:
        raise UsageError(f"simulate: {exc}") from None

    settings = _simulation_settings(args, SimulationSettings, length_ps=args.length,
                                    frame_interval_ps=args.frame_interval, selection=args.selection)
    result = simulate(
        args.structure, args.out, settings, threads=args.threads,
        checkpoint_seconds=args.checkpoint_every, progress=not args.quiet,
    )
    print(result.summary())
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    import torch

    from .data.sources import is_sph_directory
    from .rollout import DEFAULT_MAX_DISPLACEMENT
    from .trajectory_rollout import rollout_trajectory

    path = args.trajectory
    if path.is_dir():
        if not is_sph_directory(path):
            raise UsageError(f"{path}: is a directory without metadata.json and an SPH split file (train/valid/test "
                             ".h5 or .tfrecord); rollout takes a trajectory file or an SPH dataset directory")
        return _rollout_sph(args)
    sph_flags = {"--split": args.split, "--trajectory": args.trajectory_index,
                 "--sinkhorn-particles": args.sinkhorn_particles}
    given = [flag for flag, value in sph_flags.items() if value is not None]
    if given:
        raise UsageError(f"{given[0]}: applies to SPH dataset directories, but {path} is a trajectory file")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    max_displacement = args.max_displacement if args.max_displacement is not None else DEFAULT_MAX_DISPLACEMENT
    outputs = rollout_trajectory(
        args.trajectory, topology=args.topology, checkpoint=args.checkpoint, start=args.start,
        jumps=args.jumps, out=args.out, report_dir=args.report, max_displacement=max_displacement,
        device=device, progress=not args.quiet,
    )
    report = outputs.report
    print(f"predicted trajectory: {outputs.predicted} (topology {outputs.predicted_topology})")
    if outputs.virtual is not None:
        print(f"virtual nodes: {outputs.virtual} (topology {outputs.virtual_topology}, arrays {outputs.virtual_arrays})")
    mean = report["summary"]["mean_rmsd"]
    if report["summary"]["jumps"]:
        scores = ", ".join(f"{name} {value:.3f} Å" for name, value in mean.items() if value is not None)
        print(f"mean Kabsch RMSD over {report['summary']['jumps']} jumps with reference frames: {scores}")
    else:
        print("no jump time has a reference frame in the trajectory: the report lists the jumps without metrics")
    if outputs.stopped:
        print(f"rollout stopped early: {outputs.stopped}", file=sys.stderr)
    print(f"report: {outputs.report_files['markdown']}")
    return 1 if outputs.stopped else 0  # frames and report are kept; scripts still see the stop


def _rollout_sph(args: argparse.Namespace) -> int:
    """`rollout DATASET_DIR`: the SPH rollout (fastegnn_md/sph_rollout.py) and its summary lines."""
    import torch

    from .particle_metrics import SINKHORN_MAX_PARTICLES
    from .sph_rollout import rollout_sph

    path = args.trajectory
    if args.topology is not None:
        raise UsageError(f"--topology: applies to MD trajectory files, but {path} is an SPH dataset directory")
    if args.checkpoint is None:
        raise UsageError(f"--checkpoint: required for the SPH dataset {path} (no SPH model is shipped)")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    outputs = rollout_sph(
        path, args.checkpoint, split=args.split or "test",
        trajectory=args.trajectory_index if args.trajectory_index is not None else 0,
        start=args.start, jumps=args.jumps, out=args.out, report_dir=args.report,
        max_displacement=args.max_displacement,
        sinkhorn_particles=args.sinkhorn_particles or SINKHORN_MAX_PARTICLES, device=device, progress=not args.quiet,
    )
    report = outputs.report
    print(f"predicted trajectory: {outputs.predicted} (LagrangeBench HDF5, start + {report['model_jumps']} jumps)")
    horizons = report["horizons"]["mse_at"]
    scores = "; ".join(
        f"{name} " + " / ".join("–" if per[name] is None else f"{per[name]:.3g}" for per in horizons.values())
        for name in report["predictors"]
    )
    print(f"MSE at {' / '.join(horizons)} jumps: {scores}")
    if outputs.stopped:
        print(f"rollout stopped early: {outputs.stopped}", file=sys.stderr)
    print(f"report: {outputs.report_files['markdown']}")
    return 1 if outputs.stopped else 0  # frames and report are kept; scripts still see the stop


COMMANDS = {
    "rollout": cmd_rollout, "train": cmd_train, "evaluate": cmd_evaluate, "simulate": cmd_simulate,
    "sph": cmd_sph_generate, "validate": cmd_validate,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .errors import FastEGNNError

    try:
        args = build_parser().parse_args(argv)
        from .runtime import tune_allocator

        tune_allocator()
        if args.command == "nbody":
            return cmd_nbody_generate(args)
        return COMMANDS[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
