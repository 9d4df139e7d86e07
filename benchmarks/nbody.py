"""The paper's Table 1, N-body column, on a budget that fits a 2-core CPU.

    python benchmarks/nbody.py --data data/nbody-bench --train 1000 --valid 200 --test 500 --epochs 30

Generates the charged N-body dataset if ``--data`` does not exist, trains every model of the
table with the same budget (resumable: run the same command again after an interruption),
then measures test MSE and the forward time of a full test traversal for every model in this
one process, EGNN included, and prints the table next to the paper's numbers.

Models: Linear, EGNN, EGNN* (EGNN with all edges dropped), RF, FastEGNN<C,p> for C in {1, 3}
and p in {0, 0.75, 1}. Hyperparameters follow Appendix C (sigma 1.5, lambda 0.03, lr 5e-4,
weight decay 1e-12, hidden 64, 4 layers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from model_table import Entry, add_run_arguments, measure, run_dir

from fastegnn_md.data.nbody import generate_dataset
from fastegnn_md.datasets import open_dataset
from fastegnn_md.runtime import tune_allocator
from fastegnn_md.training import TrainConfig, Trainer


ENTRIES = [
    Entry("Linear", "linear", paper_mse=12.66, paper_time=0.01),
    Entry("RF", "rf", paper_mse=5.76, paper_time=0.26),
    Entry("EGNN", "egnn", paper_mse=1.41, paper_time=1.00),
    Entry("EGNN*", "egnn", drop_rate=1.0, paper_mse=11.62, paper_time=0.03),
    Entry("FastEGNN<1,0>", "fastegnn", 0.0, 1, 1.05, 1.05),
    Entry("FastEGNN<1,0.75>", "fastegnn", 0.75, 1, 0.99, 0.33),
    Entry("FastEGNN<1,1>", "fastegnn", 1.0, 1, 9.72, 0.13),
    Entry("FastEGNN<3,0>", "fastegnn", 0.0, 3, 1.12, 1.07),
    Entry("FastEGNN<3,0.75>", "fastegnn", 0.75, 3, 1.10, 0.35),
    Entry("FastEGNN<3,1>", "fastegnn", 1.0, 3, 9.52, 0.15),
]


def nbody_splits(data: Path, train: int, valid: int, test: int, progress: bool):
    """(dataset, train, valid, test pairs) of the benchmark's N-body data in ``data``, generated
    there first (seed 0) if it holds none; each split cut to the given number of systems."""
    if not (data / "metadata.json").exists():
        generate_dataset(data, train, valid, test, seed=0, progress=progress)
    dataset = open_dataset(data)
    return dataset, dataset.load("train", train), dataset.load("valid", valid), dataset.load("test", test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/nbody-bench"))
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (weights, batch order, edge and MMD sampling); the data always uses seed 0")
    add_run_arguments(parser, runs="runs/nbody-bench", epochs=30, batch_size=50, repeats=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tune_allocator()
    dataset, train, valid, test = nbody_splits(args.data, args.train, args.valid, args.test, not args.quiet)

    entries = [e for e in ENTRIES if not args.only or e.label in args.only]
    for entry in entries:
        config = TrainConfig(
            model=entry.model,
            virtual_nodes=entry.virtual_nodes,
            drop_rate=entry.drop_rate,
            sigma=1.5,
            mmd_weight=0.03,
            batch_size=args.batch_size,
            epochs=args.epochs,
            patience=args.epochs,
            seed=args.seed,
        )
        start = time.perf_counter()
        summary = Trainer(config, train, valid, run_dir(args.runs, entry), dataset.spec_fields, str(args.data),
                          progress=not args.quiet).fit()
        print(f"{entry.label}: best valid MSE {summary['best_valid_mse']:.5f} after {summary['epochs']} epochs "
              f"({time.perf_counter() - start:.0f} s this call)", flush=True)

    if args.skip_eval:
        return
    measured, egnn_time = measure(entries, args.runs, test, None, args.batch_size, args.repeats)

    results = []
    print()
    print(f"N-body, {len(train)}/{len(valid)}/{len(test)} systems, {args.epochs} epochs, batch {args.batch_size}, "
          f"training seed {args.seed}, {args.threads} threads; relative time = median test traversal / EGNN's (same process)")
    print()
    print("| model | test MSE (x1e-2) | paper MSE (x1e-2) | relative time | paper relative time | best epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for entry in entries:
        row = measured[entry.label]
        results.append({"label": entry.label, **row})
        print(f"| {entry.label} | {100 * row['mse']:.2f} | {entry.paper_mse:.2f} | {row['relative_time']:.2f} | "
              f"{entry.paper_time:.2f} | {row['best_epoch']} |")
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "egnn_seconds": egnn_time, "results": results}, indent=2))


if __name__ == "__main__":
    main()
