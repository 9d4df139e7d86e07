"""One-jump MSE of SPH checkpoints on the same pairs: every input frame of every trajectory, with
"no motion" and "constant velocity" beside them (issue 16, item 4).

Usage (from the repository root)::

    python benchmarks/sph_one_jump.py water-box runs/wb-starts60/best.pt --data data/water3d-bench --split valid test

A checkpoint's own validation MSE (`fastegnn-md train`'s ``valid_mse``) is measured on the input
frames its training drew (``--starts``, 15 random frames per trajectory by default), so two
checkpoints trained with different ``--starts`` are scored on different pairs. Here every
checkpoint is scored on all frames that have a pair (the checkpoint's jump and velocity
convention; the first checkpoint's, which all must share), so the numbers compare. MSE pools
every water coordinate (box units²), as training does; walls are inputs only.

Beside the MSE, the one-jump **density error**: `losses.density_loss` of each prediction against
its target (each water particle's neighbour density within the first checkpoint's graph cutoff,
walls counted as neighbours), averaged over pairs: how far a single jump moves the water's local
density from the data's, which position MSE barely sees. And the **displacement energy ratio**
Σ|x̂ − x|² / Σ|y − x|² over every water particle of every pair (x the input, y the target, x̂ the
prediction): the share of the data's squared jump the prediction carries, 1 for a jump as
energetic as the data's. A conditional-mean jump carries less: where it is unbiased,
E|x̂ − x|² = E|y − x|² − E|y − x̂|², so its ratio is about 1 − MSE / E|y − x|², and a rollout of
such jumps loses kinetic energy jump after jump (benchmarks/RESULTS.md, fifteenth session).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from fastegnn_md import spec_keys
from fastegnn_md.datasets import open_for_checkpoint
from fastegnn_md.errors import CheckpointError, DataError
from fastegnn_md.evaluation import jump_scores, trivial_guesses
from fastegnn_md.losses import frame_density_loss
from fastegnn_md.predictor import Predictor

#: More input frames than any trajectory has: `paper_starts` then returns all of them.
EVERY_FRAME = 10**9


def every_frame_pairs(data: Path, data_spec, split: str) -> list:
    """The split's pairs at every input frame, read as the checkpoint's data spec says otherwise."""
    spec = copy.deepcopy(data_spec)
    spec.extra[spec_keys.NUM_STARTS] = EVERY_FRAME
    spec.extra[spec_keys.START_WINDOW] = EVERY_FRAME
    return list(open_for_checkpoint(data, spec).load(split))


def load_predictors(checkpoints: list[str]) -> dict[str, Predictor]:
    """{name: Predictor}, each checkpoint read once; all must share the first's jump and velocities."""
    predictors = {name: Predictor.from_checkpoint(name) for name in checkpoints}
    first = predictors[checkpoints[0]].spec
    for name, predictor in predictors.items():
        spec = predictor.spec
        if (spec.dt, spec.frame_stride, spec.velocity_convention) != (first.dt, first.frame_stride, first.velocity_convention):
            raise SystemExit(f"sph_one_jump.py: {name}: another jump or velocity convention than {checkpoints[0]}")
    return predictors


def density_error(pairs: list, predicted: list, radius: float) -> float:
    """Mean over pairs of `losses.frame_density_loss` (walls at their targets, water scored)."""
    errors = []
    for pair, guess in zip(pairs, predicted):
        target = np.asarray(pair.target_positions, dtype=np.float64)
        frame = np.array(guess, dtype=np.float64)
        moving = np.ones(len(target), dtype=bool) if pair.moving is None else np.array(pair.moving, dtype=bool)
        frame[~moving] = target[~moving]
        errors.append(float(frame_density_loss(torch.as_tensor(frame), torch.as_tensor(target), [len(frame)], radius,
                                               torch.as_tensor(moving))))
    return float(np.mean(errors))


def energy_ratio(pairs: list, predicted: list) -> float:
    """Σ|x̂ − x|² / Σ|y − x|² over the water of every pair (module docstring)."""
    carried = total = 0.0
    for pair, guess in zip(pairs, predicted):
        x = np.asarray(pair.positions, dtype=np.float64)
        moving = np.ones(len(x), dtype=bool) if pair.moving is None else np.asarray(pair.moving, dtype=bool)
        carried += float(((np.asarray(guess, dtype=np.float64) - x)[moving] ** 2).sum())
        total += float(((np.asarray(pair.target_positions, dtype=np.float64) - x)[moving] ** 2).sum())
    return carried / total


def score(predictors: dict[str, Predictor], data: Path, split: str) -> tuple[dict[str, tuple[float, float, float]], int]:
    """({name: (one-jump MSE (box units²), density error, displacement energy ratio)} for "no
    motion", "constant velocity" and each checkpoint, the number of pairs)."""
    spec = next(iter(predictors.values())).spec
    radius = float(spec.cutoff)
    pairs = every_frame_pairs(data, spec, split)
    if not pairs:
        raise SystemExit(f"sph_one_jump.py: {data}: the {split} split has no pairs")
    results: dict[str, tuple[float, float, float]] = {}
    for name, predictor in predictors.items():
        predicted = [
            predictor.predict(pair.positions, pair.velocities, pair.node_attrs, moving=pair.moving,
                              kinematic_positions=pair.target_positions).positions
            for pair in pairs
        ]
        scores = jump_scores(pairs, predicted, spec.dt)  # the trivial predictors come with every call
        if not results:
            for trivial, guesses in trivial_guesses(pairs, spec.dt).items():
                results[trivial.replace("_", " ")] = (scores[trivial]["mse"], density_error(pairs, guesses, radius),
                                                      energy_ratio(pairs, guesses))
        results[name] = (scores["model"]["mse"], density_error(pairs, predicted, radius), energy_ratio(pairs, predicted))
    return results, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="SPH checkpoints (paths or shipped names) of one jump")
    parser.add_argument("--data", type=Path, required=True, help="SPH dataset directory")
    parser.add_argument("--split", nargs="+", default=["valid", "test"], choices=("train", "valid", "test"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        predictors = load_predictors(args.checkpoints)
        for split in args.split:
            results, count = score(predictors, args.data, split)
            print(f"{args.data} {split}: {count} pairs (every input frame), one-jump MSE x1e-4 | density error | "
                  "displacement energy ratio")
            for name, (mse, density, ratio) in results.items():
                print(f"  {name}: {mse * 1e4:.3f} | {density:.4f} | {ratio:.3f}")
    except (CheckpointError, DataError) as exc:
        raise SystemExit(f"sph_one_jump.py: {exc}") from None


if __name__ == "__main__":
    main()
