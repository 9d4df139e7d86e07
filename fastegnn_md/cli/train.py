"""`fastegnn-md train`: train a model on any kind of data; resumes from OUT/last.pt if present.

The kind of data is the registry's (`fastegnn_md.data.kinds`): it decides which flags apply, how
the data are read and the training defaults (λ of the MMD term, batch size, length scale).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..conventions import CONVENTION_ALIASES, VELOCITY_CONVENTIONS
from .common import (
    UsageError, add_device_arguments, fraction, nonneg_float, positive_int, set_torch_threads, torch_device,
)

#: Flags that only some kinds of data take (each kind declares its own in ``train_flags``).
KIND_FLAGS = {
    "--topology": "topology", "--selection": "selection", "--jump": "jump", "--stride": "stride",
    "--velocity": "velocity", "--cache-dir": "cache_dir", "--frames": "frames", "--gravity-axis": "gravity_axis",
    "--node-attrs": "node_attrs", "--replica": "replica", "--fit": "fit",
    "--discard": "discard", "--starts": "starts", "--start-window": "start_window",
}


def gravity_axis(text: str) -> str:
    """`--gravity-axis`: x, y or z (optionally signed: gravity points along −axis unless "+"), or none;
    checked here by `parse_gravity_axis`, which reads it again when the data is opened."""
    from ..adapters.sph.kind import parse_gravity_axis
    from ..errors import DataError

    value = text.strip().lower()
    if value != "none":
        try:
            parse_gravity_axis(value, "--gravity-axis")
        except DataError:
            raise argparse.ArgumentTypeError(f"must be x, y, z or none, got {text!r}") from None
    return value


gravity_axis.__name__ = "gravity axis"


def add_md_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `--data TRAJ` shared by train and evaluate."""
    parser.add_argument(
        "--topology", type=Path, default=None,
        help="MD: topology file (default: TRAJ's stem with .tpr, .psf, .gro or .pdb beside it)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="MD: cache the frames read from the trajectory here (default: no cache)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..models import available_models

    train = sub.add_parser("train", help="train a model; resumes from OUT/last.pt if present")
    train.add_argument(
        "--data", required=True, type=Path,
        help="dataset directory (with metadata.json) or MD trajectory file (any format MDAnalysis reads)",
    )
    train.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics.jsonl)")
    train.add_argument("--model", default="fastegnn", choices=available_models())
    train.add_argument("--virtual-nodes", "-C", type=positive_int, default=3, help="C, virtual nodes (FastEGNN)")
    train.add_argument("--drop-rate", "-p", type=fraction, default=0.0, help="fraction of longest edges dropped")
    train.add_argument("--cutoff", type=float, default=None,
                       help="radius graph cutoff (default: dataset's; MD: 10 Å; SPH: metadata default_connectivity_radius)")
    train.add_argument("--sigma", type=float, default=1.5, help="MMD kernel bandwidth, length unit (default 1.5)")
    train.add_argument("--mmd-weight", type=float, default=None,
                       help="lambda of Eq. 11; 0 disables MMD (default 0.03; SPH: 0.01, the paper's Water-3D value)")
    train.add_argument("--mmd-samples", type=positive_int, default=100, help="real nodes sampled per graph for MMD")
    train.add_argument("--hidden", type=positive_int, default=64)
    train.add_argument("--layers", type=positive_int, default=4)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=1e-12)
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="graphs per batch (default 50; SPH: 20, the authors' Water-3D script)")
    train.add_argument("--epochs", type=positive_int, default=100)
    train.add_argument("--patience", type=positive_int, default=50, help="early stopping: epochs without improvement")
    train.add_argument("--length-scale", type=float, default=None,
                       help="length that becomes 1 inside the model (default: 10 for Å data, 1 otherwise)")
    train.add_argument("--time-scale", default=None, metavar="T|jump",
                       help="time that becomes 1 inside the model, in the data's time unit, or 'jump' = the jump's "
                            "dt, so the velocity term starts at a constant-velocity jump's size (default: jump for "
                            "SPH data, 1 otherwise)")
    train.add_argument("--grad-clip", type=float, default=None, help="cap the gradient norm per step (default off)")
    train.add_argument("--input-noise", type=float, default=0.0, metavar="SIGMA",
                       help="random-walk noise of SIGMA (length unit) on each input's velocity history, "
                            "targets moved with it, as GNS trains for rollouts (default 0: off)")
    train.add_argument("--noise-correction", type=float, default=0.0, metavar="GAMMA",
                       help="the fraction (0..1) of --input-noise's position offset the target does not follow, so "
                            "the model learns to take it back (as MeshGraphNets; default 0: the target follows "
                            "all of it, as GNS)")
    train.add_argument("--unroll", type=positive_int, default=None, metavar="K",
                       help="pushforward: each batch first runs 0..K-1 jumps (drawn uniformly) on the model's "
                            "own outputs without gradient, then learns the next one (1: off; default MD with "
                            "backward velocities: 3, else 1)")
    train.add_argument("--local-distance-weight", type=float, default=None, metavar="W",
                       help="add W x the squared error of the distances between atoms closer than "
                            "--local-distance-cutoff, so repeated jumps keep bonds and angles; with "
                            "--position-loss energy-score, of the two samples' mean distance (a variogram "
                            "score, which trains neighbours' noise to move together) (0: off; default MD: 10, "
                            "else 0)")
    train.add_argument("--local-distance-cutoff", type=float, default=None, metavar="R",
                       help="pairs of the local-distance term: closer than R (length unit) in the input frame "
                            "(default 2.6: a protein backbone's bonds and bond angles)")
    # models.fastegnn.VIRTUAL_INITS, spelled out so the parser does not import torch (a test keeps them equal)
    train.add_argument("--virtual-init", choices=("centroid", "weighted"), default="centroid",
                       help="where FastEGNN's virtual nodes start: every one at the centre of mass (the paper; "
                            "default) or each at its own learned weighted centre, so the MMD term can spread them")
    train.add_argument("--noise-channels", type=int, default=0, metavar="K",
                       help="FastEGNN: make the jump a sample, driven by K random inputs per node (see "
                            "--noise-into; 0: the paper's deterministic jump, the default); train it with "
                            "--position-loss energy-score")
    # models.fastegnn.NOISE_INPUTS, spelled out so the parser does not import torch (a test keeps them equal)
    train.add_argument("--noise-into", choices=("coordinates", "features"), default="coordinates",
                       help="where --noise-channels enter: random vectors weighted into every layer's coordinate "
                            "update (default), or random scalars added to the node features")
    # models.fastegnn.NOISE_GATES, likewise
    train.add_argument("--noise-gate", choices=("none", "speed"), default="none",
                       help="what --noise-channels are multiplied by per node: nothing (default), or the "
                            "node's speed, so that particles at rest get no noise")
    train.add_argument("--noise-smoothing", type=int, default=0, metavar="S",
                       help="sum each node's --noise-channels with its graph neighbours' S times, so that "
                            "neighbours move together (default 0: independent per node)")
    # training.POSITION_LOSSES, likewise
    train.add_argument("--position-loss", choices=("mse", "energy-score"), default="mse",
                       help="the loss's position term: MSE (the paper; default) or the energy score of two "
                            "samples, which trains a sampled jump's spread (needs --noise-channels)")
    train.add_argument("--init", metavar="CKPT", default=None,
                       help="start from this checkpoint's weights (path or shipped name) instead of a random "
                            "start: fine-tuning, e.g. rollout training (--unroll, --input-noise) of a model "
                            "trained on single jumps; its model settings and data kind must be this run's")
    train.add_argument("--radial-distance-weight", type=float, default=None, metavar="W",
                       help="add W x the squared error of each atom's distance to the structure's centroid, "
                            "so repeated jumps keep the radius of gyration (0: off; default MD: 1, else 0)")
    train.add_argument("--gyration-weight", type=float, default=0.0, metavar="W",
                       help="add W x the squared error of each structure's radius of gyration, which sees the "
                            "small inward drift per jump the per-atom terms average away (0: off, the default)")
    train.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                       help="validate and save an exponential moving average of the weights with this decay per "
                            "optimizer step (e.g. 0.99; 0: off, the default), as NequIP and MACE do")
    train.add_argument("--box-weight", type=float, default=0.0, metavar="W",
                       help="add W x the mean squared distance by which predicted particles lie outside the data's box "
                            "(SPH metadata bounds; 0: off, the default)")
    train.add_argument("--box-margin", type=float, default=0.0, metavar="M",
                       help="move the box of --box-weight M (length unit) inwards from every face, so the term "
                            "acts on water closer to a wall than the data comes (generated SPH water keeps one "
                            "particle radius; default 0)")
    train.add_argument("--energy-weight", type=float, default=0.0, metavar="W",
                       help="add W x the squared log-ratio of each graph's predicted to observed RMS displacement over "
                            "the jump (its kinetic energy), against damped fast motion and jitter where the data "
                            "rest (0: off, the default)")
    train.add_argument("--density-weight", type=float, default=0.0, metavar="W",
                       help="add W x the squared error of each predicted particle's neighbour density (SPH's poly6 "
                            "kernel shape, unnormalised) against the target frame's, so repeated jumps do not "
                            "compress water into clumps (0: off, the default)")
    train.add_argument("--density-radius", type=float, default=None, metavar="H",
                       help="the kernel radius of --density-weight, length unit (default: the graph's cutoff)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-train", type=positive_int, default=None, help="use only the first N training examples")
    train.add_argument("--max-valid", type=positive_int, default=None, help="use only the first N validation examples")
    train.add_argument(
        "--frames", type=int, nargs=2, default=None, metavar=("IN", "OUT"), help="N-body frames (default 30 40)"
    )
    add_md_arguments(train)
    train.add_argument("--selection", default=None, help="MD: MDAnalysis selection of the graph nodes (default backbone)")
    train.add_argument("--jump", type=positive_int, default=None,
                       help="MD: frames per learned jump, after --stride (default 1); SPH: frames per jump (default 15)")
    train.add_argument("--stride", type=positive_int, default=None, help="MD: read every S-th frame (default 1)")
    train.add_argument("--node-attrs", choices=("charge", "identity"), default=None,
                       help="MD: node attributes from partial charges (charge, default) or from each atom's identity: "
                            "backbone role, residue type, element (identity: one model for any protein and naming)")
    train.add_argument(
        "--replica", type=Path, action="append", default=None, metavar="TRAJ",
        help="MD: another trajectory to train on (repeat for more): a replica of the same system, or, with "
             "--node-attrs identity, another protein; each file is split into its own train/valid/test "
             "blocks and no pair spans two files",
    )
    train.add_argument(
        "--fit", choices=("none", "first-frame"), default=None,
        help="MD: remove the molecule's rigid motion before pairs are made: superpose every frame onto "
             "its file's first (first-frame), or keep the lab frame (none, default)",
    )
    train.add_argument(
        "--discard", type=nonneg_float, default=None, metavar="PS",
        help="MD: leave out the first PS ps of every trajectory file (equilibration; default 0); "
             "evaluate reads the checkpoint's data the same way",
    )
    train.add_argument(
        "--velocity", choices=(*VELOCITY_CONVENTIONS, *CONVENTION_ALIASES), default=None,
        help="MD/SPH: input velocities from x_t - x_(t-jump) (backward, default), the file (physical, MD only) "
             "or x_(t+1) - x_t (forward; 'paper' is its deprecated name)",
    )
    train.add_argument("--starts", type=positive_int, default=None, metavar="N",
                       help="SPH: random input frames per trajectory (default 15, the authors' recipe; a number above the "
                            "frames in the window takes all of them)")
    train.add_argument("--start-window", type=positive_int, default=None, metavar="FRAMES",
                       help="SPH: draw the input frames among the first FRAMES of each trajectory (default 250, the "
                            "authors'; larger reaches water at rest in long scenes)")
    train.add_argument("--gravity-axis", type=gravity_axis, default=None, metavar="x|y|z|none",
                       help="SPH: axis of the learned gravity term (default: the dataset's metadata, else y)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    add_device_arguments(train)
    train.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=run)


def data_options(args: argparse.Namespace, kind: Any) -> Any:
    """The kind's reading options from the flags (a flag of another kind is a one-line error)."""
    from ..data.kinds import check_flags

    given = {flag: getattr(args, attribute) for flag, attribute in KIND_FLAGS.items()}
    check_flags(kind, given, f"--data {args.data}")
    values = {kind.train_flags[flag]: value for flag, value in given.items() if flag in kind.train_flags}
    values.update(cutoff=args.cutoff, progress=not args.quiet)
    return kind.make_options(values, str(args.data))


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _time_scale(text: str) -> "float | str":
    """``--time-scale``: "jump" or a positive number (TrainConfig checks the number)."""
    if text == "jump":
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--time-scale: must be a positive time or 'jump', got {text!r}") from None


def default_unroll(defaults: Any, spec_fields: dict) -> int:
    """The kind's pushforward default, where it can run: only backward velocities come from positions."""
    from ..conventions import BACKWARD

    return defaults.unroll if spec_fields.get("velocity_convention") == BACKWARD else 1


def run(args: argparse.Namespace) -> int:
    from ..datasets import kind_for_path
    from ..errors import DataError
    from ..training import TrainConfig, Trainer

    device = torch_device(args.device)
    set_torch_threads(args.threads)
    if args.cutoff is not None and not (math.isfinite(args.cutoff) and args.cutoff > 0):
        raise UsageError(f"--cutoff: must be a positive length, got {args.cutoff}")  # before any slow read
    if not args.data.exists():
        raise DataError(f"{args.data}: no such dataset directory or trajectory file")
    kind = kind_for_path(args.data)
    dataset = kind.open(args.data, data_options(args, kind))
    defaults = kind.training
    cutoff = args.cutoff if args.cutoff is not None else dataset.spec_fields.get("cutoff")
    try:
        config = TrainConfig(
            model=args.model,
            hidden=args.hidden,
            layers=args.layers,
            virtual_nodes=args.virtual_nodes,
            cutoff=cutoff,
            drop_rate=args.drop_rate,
            sigma=args.sigma,
            mmd_weight=args.mmd_weight if args.mmd_weight is not None else defaults.mmd_weight,
            mmd_samples=args.mmd_samples,
            lr=args.lr,
            weight_decay=args.weight_decay,
            batch_size=args.batch_size if args.batch_size is not None else defaults.batch_size,
            epochs=args.epochs,
            patience=args.patience,
            grad_clip=args.grad_clip,
            input_noise=args.input_noise,
            noise_correction=args.noise_correction,
            unroll=args.unroll if args.unroll is not None else default_unroll(defaults, dataset.spec_fields),
            local_distance_weight=_given(args.local_distance_weight, defaults.local_distance_weight),
            local_distance_cutoff=_given(args.local_distance_cutoff, defaults.local_distance_cutoff),
            radial_distance_weight=_given(args.radial_distance_weight, defaults.radial_distance_weight),
            gyration_weight=args.gyration_weight,
            box_weight=args.box_weight,
            box_margin=args.box_margin,
            energy_weight=args.energy_weight,
            density_weight=args.density_weight,
            density_radius=args.density_radius,
            ema_decay=args.ema,
            virtual_init=args.virtual_init,
            noise_channels=args.noise_channels,
            noise_into=args.noise_into,
            noise_gate=args.noise_gate,
            noise_smoothing=args.noise_smoothing,
            position_loss=args.position_loss,
            init=args.init,
            length_scale=args.length_scale if args.length_scale is not None else defaults.length_scale,
            time_scale=_time_scale(args.time_scale) if args.time_scale is not None else defaults.time_scale,
            gravity_axis=dataset.spec_fields.get("gravity_axis"),
            seed=args.seed,
            dtype=args.dtype,
            precision=args.precision,
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
    best = f"best valid MSE {summary['best_valid_mse']:.6g}"
    if "best_valid_energy_score" in summary:  # chosen by the score; the MSE is that epoch's
        best = f"best valid energy score {summary['best_valid_energy_score']:.6g} (MSE {summary['best_valid_mse']:.6g})"
    print(
        f"trained {config.model} for {summary['epochs']} epochs; {best} at epoch {summary['best_epoch']}; "
        f"checkpoint {args.out / 'best.pt'}"
    )
    return 0
