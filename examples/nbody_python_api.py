"""The Python API end to end on a small charged N-body set: data, training, checkpoint, prediction.

    python examples/nbody_python_api.py [--out runs/example] [--systems 60] [--epochs 3]

Everything is dimensionless (the N-body simulator's units). The same steps work for any data
you can turn into `FramePair`s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastegnn_md.data.nbody import generate_dataset, load_nbody
from fastegnn_md.datasets import open_dataset
from fastegnn_md.predictor import Predictor
from fastegnn_md.training import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    parser.add_argument("--systems", type=int, default=60, help="training systems")
    parser.add_argument("--particles", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    # 1. Simulate systems and write them as a dataset directory (train/valid/test .npz + metadata.json).
    data = generate_dataset(args.out / "data", num_train=args.systems, num_valid=args.systems // 4,
                            num_test=args.systems // 4, num_particles=args.particles, seed=1)

    # 2. FramePairs: frame 30 -> frame 40 of every system (a jump of dt = 1.0).
    dataset = open_dataset(data)
    train, valid = dataset.load("train"), dataset.load("valid")
    print(f"{len(train)} training pairs of {train[0].num_nodes} particles, jump dt = {train[0].metadata['dt']}")

    # 3. Train FastEGNN<3, 0.75>: 3 virtual nodes, the longest 75% of edges dropped, MMD weight 0.03.
    config = TrainConfig(model="fastegnn", virtual_nodes=3, drop_rate=0.75, sigma=1.5, mmd_weight=0.03,
                         batch_size=10, epochs=args.epochs, seed=0)
    summary = Trainer(config, train, valid, args.out / "run", dataset.spec_fields, str(data)).fit()
    print(f"best validation MSE {summary['best_valid_mse']:.4f} at epoch {summary['best_epoch']}")

    # 4. Predict with the saved checkpoint: numpy in, numpy out.
    predictor = Predictor.from_checkpoint(args.out / "run" / "best.pt")
    test = load_nbody(data, "test")[0]
    jump = predictor.predict(test.positions, test.velocities, node_attrs=test.node_attrs)
    error = np.mean((jump.positions - test.target_positions) ** 2)
    still = np.mean((test.positions - test.target_positions) ** 2)
    print(f"one test system: MSE {error:.4f} (not moving at all: {still:.4f}); "
          f"virtual nodes at\n{np.array2string(jump.virtual_positions, precision=3)}")


if __name__ == "__main__":
    main()
