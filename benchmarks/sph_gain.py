"""`sph_leak.py` with the learned jump's displacement scaled: does the mean jump's damping come off?

    python benchmarks/sph_gain.py --gain 1.05 water-box --scenes data/water-scenes-rest --scene valid:0 --jumps 38

Every moving (water) particle's predicted position becomes x + g (μ − x), μ the model's mean
jump, walls untouched; everything else is `sph_leak.py` with the remaining arguments. An
experiment on the shipped model's lost kinetic energy (benchmarks/RESULTS.md, sixteenth session),
not a feature: the package never rescales a jump. The scaling wraps `Predictor.predict` for this
process only.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

from fastegnn_md.predictor import Predictor


def scaled_predict(gain: float):
    """`Predictor.predict` with the moving nodes' displacement multiplied by ``gain``."""
    original = Predictor.predict

    def predict(self, positions, velocities, node_attrs=None, *, moving=None, kinematic_positions=None):
        jump = original(self, positions, velocities, node_attrs, moving=moving, kinematic_positions=kinematic_positions)
        start = np.asarray(positions, np.float64)
        if moving is None:
            attrs = self.default_node_attrs(start.shape[-2]) if node_attrs is None else np.asarray(node_attrs)
            moving = self.default_moving(attrs)
        scaled = start + gain * (jump.positions - start)
        if moving is not None:
            fixed = ~np.asarray(moving, bool)
            scaled[..., fixed, :] = jump.positions[..., fixed, :]
        jump.positions = scaled
        return jump

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gain", type=float, required=True, help="factor on every water particle's displacement")
    args, rest = parser.parse_known_args()
    Predictor.predict = scaled_predict(args.gain)
    sys.argv = ["sph_leak.py", *rest]
    runpy.run_path(str(Path(__file__).with_name("sph_leak.py")), run_name="__main__")


if __name__ == "__main__":
    main()
