"""Test-set evaluation as in the paper's Table 1: MSE and inference time relative to EGNN.

Beside the model, every evaluation scores the two predictors that need no training — "no
motion" (x_{t+Δt} = x_t) and "constant velocity" (x_t + v·Δt, with the input velocity of the
data's convention) — in the lab frame and Kabsch-aligned per frame (`metrics.aligned_mse`), so a
model's number is always read against what not learning gives.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from . import metrics, spec_keys
from .checkpoint import Checkpoint
from .graph import FramePair, feature_dims
from .models import build_model
from .rollout import TRIVIAL_PREDICTORS, StartState
from .inference import predict_positions
from .calibration import pair_residuals
from .spread import JumpSpread, calibration
from .training import time_inference


def reference_egnn(ckpt: Checkpoint) -> torch.nn.Module:
    """An EGNN the size of the checkpoint's model (hidden, layers), for timing only.

    Its forward cost does not depend on the weights, so an untrained EGNN times the same as a
    trained one; it runs on the same graphs with no edges dropped (the paper's reference).
    """
    node_features, edge_features = feature_dims(ckpt.data_spec.num_node_attrs)
    hidden = int(ckpt.hparams.get("hidden", 64))
    layers = int(ckpt.hparams.get("layers", 4))
    torch.manual_seed(0)
    return build_model("egnn", node_features=node_features, edge_features=edge_features, hidden=hidden, layers=layers)


def _scored(pair: FramePair, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and target restricted to the nodes the model predicts (``moving``)."""
    target = np.asarray(pair.target_positions, dtype=np.float64)
    if pair.moving is not None:
        return positions[pair.moving], target[pair.moving]
    return positions, target


def trivial_guesses(pairs: Sequence[FramePair], dt: float) -> dict[str, list[np.ndarray]]:
    """One jump of the rollout's `TRIVIAL_PREDICTORS` from every pair's input frame:
    ``{"no_motion" | "constant_velocity": [(N_i, 3) per pair]}``, the data's length unit. ``dt``:
    the jump in the source's time unit, used where a pair carries no ``metadata["dt"]``."""
    guesses = {}
    for name, predict in TRIVIAL_PREDICTORS.items():
        guesses[name.replace(" ", "_")] = [
            predict(StartState(np.asarray(pair.positions, dtype=np.float64), pair.velocities), 1,
                    float(pair.metadata.get("dt", dt)))[0]
            for pair in pairs
        ]
    return guesses


def jump_scores(pairs: Sequence[FramePair], predicted: Sequence[np.ndarray], dt: float) -> dict[str, dict[str, float]]:
    """Lab-frame and aligned MSE of ``predicted`` and of `TRIVIAL_PREDICTORS` on ``pairs``.

    ``predicted``: the model's positions per pair, (N_i, 3), the data's length unit. ``dt``: the
    jump in the source's time unit, used where a pair carries no ``metadata["dt"]``. Returns
    ``{"model" | "no_motion" | "constant_velocity": {"mse", "aligned_mse"}}`` in length unit².
    ``mse`` pools every scored coordinate (the paper's metric, as `training.evaluate_mse`);
    ``aligned_mse`` is the mean over pairs of the MSE after the rigid superposition of each
    prediction onto its target, which removes the rigid motion no model can predict.
    """
    if len(predicted) != len(pairs):
        raise ValueError(f"{len(predicted)} predictions for {len(pairs)} pairs")
    guesses = {"model": list(predicted), **trivial_guesses(pairs, dt)}
    scores = {}
    for name, positions in guesses.items():
        scored = [_scored(pair, np.asarray(guess, dtype=np.float64)) for pair, guess in zip(pairs, positions)]
        squared = sum(float(np.sum((guess - target) ** 2)) for guess, target in scored)
        count = sum(guess.size for guess, _ in scored)
        aligned = [metrics.aligned_mse(guess, target) if len(guess) >= 3 else float("nan") for guess, target in scored]
        scores[name] = {"mse": squared / max(count, 1), "aligned_mse": float(np.mean(aligned))}
    return scores


def evaluate_checkpoint(
    ckpt: Checkpoint, pairs: Sequence[FramePair], batch_size: int = 50, repeats: int = 3, device: str = "cpu",
    precision: str = "full",
) -> dict[str, Any]:
    """MSE of the checkpoint on ``pairs`` beside the trivial predictors, and its forward time as a
    ratio to EGNN's.

    ``mse``/``aligned_mse`` are the model's; ``baselines`` holds the same two numbers for "no
    motion" and "constant velocity" (`jump_scores`), and ``gain_over_no_motion`` is
    1 − model/no-motion for each (positive: the model is better). Both models are timed in this
    process on the same examples (median over ``repeats`` full traversals each); times exclude
    graph building. Units: MSE in the data's length unit squared. A checkpoint with a fitted
    spread also gets ``spread_calibration`` (`fastegnn_md.spread.calibration` on these pairs),
    else None. ``precision`` (`fastegnn_md.models.precision`) is both models' (scores and times).
    """
    spec = ckpt.data_spec
    spec.check_fits(pairs[0].node_attrs.shape[1], None, where="dataset")
    model = ckpt.build_model().to(device)
    egnn = reference_egnn(ckpt).to(device)
    predicted = predict_positions(model, pairs, spec.cutoff, spec.drop_rate, batch_size, device=device,
                                  precision=precision)
    scores = jump_scores(pairs, predicted, spec.dt)
    model_scores, no_motion = scores.pop("model"), scores["no_motion"]
    spread_figures = None
    if spec.extra.get(spec_keys.SPREAD) is not None:  # a calibrated checkpoint: how well its spread fits here
        spread = JumpSpread.from_dict(spec.extra[spec_keys.SPREAD])
        spread_figures = calibration(spread, pair_residuals(pairs, predicted, spec.dt, spread.packing_radius))
    seconds = time_inference(model, pairs, spec.cutoff, spec.drop_rate, batch_size, repeats=repeats, device=device,
                             precision=precision)
    egnn_seconds = time_inference(egnn, pairs, spec.cutoff, 0.0, batch_size, repeats=repeats, device=device,
                                  precision=precision)
    return {
        "model": ckpt.model_name,
        "examples": len(pairs),
        "mse": model_scores["mse"],
        "aligned_mse": model_scores["aligned_mse"],
        "baselines": scores,
        "gain_over_no_motion": {key: 1.0 - model_scores[key] / no_motion[key] if no_motion[key] > 0 else float("nan")
                                for key in ("mse", "aligned_mse")},
        "seconds": seconds,
        "egnn_seconds": egnn_seconds,
        "relative_time": seconds / egnn_seconds,
        "drop_rate": spec.drop_rate,
        "virtual_nodes": ckpt.hparams.get("virtual_nodes"),
        "threads": torch.get_num_threads(),
        "device": device,
        "precision": precision,
        "spread_calibration": spread_figures,
    }
