"""What bf16-mixed precision costs in accuracy and saves in time, trained for real.

    python benchmarks/precision.py --data data/nbody-bench --seeds 0 1 2
    python benchmarks/precision.py --drop-rate 0 --epochs 15     # FastEGNN<3,0> instead

On the charged N-body data of the paper's Table 1 (`benchmarks/nbody.py`'s data, generated if
``--data`` does not exist; the budget of its recorded table: 1,000 / 200 / 500 systems, 15
epochs of batch 10), each seed
trains FastEGNN⟨3, p⟩ twice in this process, in full precision and in bf16-mixed
(`fastegnn_md.models.precision`), one after the other with the same seed, data and settings.
Reported per seed and precision: the best validation MSE, the test MSE of the best checkpoint
predicted in full precision and in bf16-mixed, the median seconds per training epoch, and the
ratio of the two runs' epoch times. Times are only comparable inside one run of this script
(the machine is shared); the spread over seeds is what says whether a difference in MSE is one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

# A quiet machine's OpenMP default (see benchmarks/speed.py); set before fastegnn_md is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import torch  # noqa: E402

from nbody import nbody_splits  # noqa: E402  (benchmarks/nbody.py: the same data and budget)

from fastegnn_md.checkpoint import load_checkpoint  # noqa: E402
from fastegnn_md.evaluation import jump_scores  # noqa: E402
from fastegnn_md.inference import predict_positions  # noqa: E402
from fastegnn_md.models.precision import PRECISIONS, native_bf16  # noqa: E402
from fastegnn_md.runtime import tune_allocator  # noqa: E402
from fastegnn_md.training import BEST, METRICS, TrainConfig, Trainer  # noqa: E402


def test_mse(best: Path, pairs, batch_size: int, precision: str) -> float:
    """Position MSE of the checkpoint on ``pairs`` (`jump_scores`: the paper's pooled MSE)."""
    ckpt = load_checkpoint(best)
    spec = ckpt.data_spec
    predicted = predict_positions(ckpt.build_model(), pairs, spec.cutoff, spec.drop_rate, batch_size,
                                  precision=precision)
    return jump_scores(pairs, predicted, spec.dt)["model"]["mse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/nbody-bench"))
    parser.add_argument("--runs", type=Path, default=Path("runs/precision"))
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--drop-rate", type=float, default=0.75)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tune_allocator()
    dataset, train, valid, test = nbody_splits(args.data, args.train, args.valid, args.test, not args.quiet)
    label = f"FastEGNN<3,{args.drop_rate:g}>"
    print(f"{label} on N-body, {len(train)}/{len(valid)}/{len(test)} systems, {args.epochs} epochs, batch "
          f"{args.batch_size}, {args.threads} threads; CPU multiplies bfloat16 natively: {native_bf16('cpu')}; "
          f"torch {torch.__version__}")
    print()
    print("| seed | training precision | best valid MSE (x1e-2) | test MSE, full inference (x1e-2) "
          "| test MSE, bf16-mixed inference (x1e-2) | s per epoch (median) | epoch time bf16 / full |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    rows = []
    for seed in args.seeds:
        epoch_seconds = {}
        for precision in PRECISIONS:
            config = TrainConfig(model="fastegnn", virtual_nodes=3, drop_rate=args.drop_rate, sigma=1.5,
                                 mmd_weight=0.03, batch_size=args.batch_size, epochs=args.epochs,
                                 patience=args.epochs, seed=seed, precision=precision)
            out = args.runs / f"seed{seed}-{precision}"
            summary = Trainer(config, train, valid, out, dataset.spec_fields, str(args.data),
                              progress=not args.quiet).fit()
            log = [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line.strip()]
            epoch_seconds[precision] = float(np.median([record["seconds"] for record in log]))
            row = {
                "seed": seed, "precision": precision, "best_valid_mse": summary["best_valid_mse"],
                "test_mse_full": test_mse(out / BEST, test, args.batch_size, "full"),
                "test_mse_bf16": test_mse(out / BEST, test, args.batch_size, "bf16-mixed"),
                "epoch_seconds": epoch_seconds[precision],
            }
            rows.append(row)
            ratio = (f"{epoch_seconds['bf16-mixed'] / epoch_seconds['full']:.2f}"
                     if precision == "bf16-mixed" else "")
            print(f"| {seed} | {precision} | {100 * row['best_valid_mse']:.3f} | {100 * row['test_mse_full']:.3f} "
                  f"| {100 * row['test_mse_bf16']:.3f} | {row['epoch_seconds']:.1f} | {ratio} |", flush=True)
    print()
    for precision in PRECISIONS:
        mine = [r["test_mse_full"] for r in rows if r["precision"] == precision]
        print(f"{precision}: test MSE (full inference) {100 * np.mean(mine):.3f} ± {100 * np.std(mine):.3f} x1e-2 "
              f"over seeds {args.seeds} (mean ± std)")
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
