"""`fastegnn-md` command line.

    fastegnn-md nbody generate --out data/nbody [--train 5000 --valid 2000 --test 2000]
    fastegnn-md train --data data/nbody --model fastegnn --virtual-nodes 3 --drop-rate 0.75 --out runs/x
    fastegnn-md evaluate runs/x/best.pt --data data/nbody

Every error a user can cause ends the program with one line
``fastegnn-md: error: <file or argument>: <what is wrong>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

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

    train = sub.add_parser("train", help="train a model; resumes from OUT/last.pt if present")
    train.add_argument("--data", required=True, type=Path, help="dataset directory (with metadata.json)")
    train.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics.jsonl)")
    train.add_argument("--model", default="fastegnn", choices=available_models())
    train.add_argument("--virtual-nodes", "-C", type=_positive_int, default=3, help="C, virtual nodes (FastEGNN)")
    train.add_argument("--drop-rate", "-p", type=_fraction, default=0.0, help="fraction of longest edges dropped")
    train.add_argument("--cutoff", type=float, default=None, help="radius graph cutoff (default: dataset's)")
    train.add_argument("--sigma", type=float, default=1.5, help="MMD kernel bandwidth, length unit (default 1.5)")
    train.add_argument("--mmd-weight", type=float, default=0.03, help="lambda of Eq. 11; 0 disables MMD")
    train.add_argument("--mmd-samples", type=_positive_int, default=100, help="real nodes sampled per graph for MMD")
    train.add_argument("--hidden", type=_positive_int, default=64)
    train.add_argument("--layers", type=_positive_int, default=4)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=1e-12)
    train.add_argument("--batch-size", type=_positive_int, default=50)
    train.add_argument("--epochs", type=_positive_int, default=100)
    train.add_argument("--patience", type=_positive_int, default=50, help="early stopping: epochs without improvement")
    train.add_argument("--grad-clip", type=float, default=None, help="cap the gradient norm per step (default off)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N training examples")
    train.add_argument("--max-valid", type=_positive_int, default=None, help="use only the first N validation examples")
    train.add_argument("--frames", type=int, nargs=2, default=(30, 40), metavar=("IN", "OUT"), help="N-body frames")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    train.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    ev = sub.add_parser("evaluate", help="test MSE and inference time relative to EGNN")
    ev.add_argument("checkpoint", help="checkpoint path or shipped model name")
    ev.add_argument("--data", required=True, type=Path, help="dataset directory")
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


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .data.sources import open_dataset
    from .training import TrainConfig, Trainer

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data, frame_in=args.frames[0], frame_out=args.frames[1])
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
            mmd_weight=args.mmd_weight,
            mmd_samples=args.mmd_samples,
            lr=args.lr,
            weight_decay=args.weight_decay,
            batch_size=args.batch_size,
            epochs=args.epochs,
            patience=args.patience,
            grad_clip=args.grad_clip,
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .data.sources import open_dataset
    from .evaluation import evaluate_checkpoint

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    extra = ckpt.data_spec.extra
    dataset = open_dataset(args.data, frame_in=extra.get("frame_in", 30), frame_out=extra.get("frame_out", 40))
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


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate}


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
