"""Fit a checkpoint's jump spread on data it did not train on, and measure its calibration.

`calibrate_checkpoint(ckpt, fit_pairs, heldout_pairs)` runs the model's mean jump over both
lists of examples, fits a `JumpSpread` (`fastegnn_md.spread`) to the residuals of ``fit_pairs``
(the checkpoint's validation blocks: the model never trained on them) and measures it on
``heldout_pairs`` (a replica never used at all). `save_with_spread` writes a new checkpoint, the
same model and data spec plus the spread, which `Predictor.sample` draws from.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from . import spec_keys
from .checkpoint import Checkpoint, save_checkpoint
from .graph import FramePair
from .inference import predict_positions
from .local_geometry import MOLECULAR_GEOMETRY_CUTOFF
from .spread import JumpSpread, Residuals, calibration, collect_residuals, fit_spread

#: ρ of the packing invariant when the checkpoint has no cutoff (length unit; Å for MD).
DEFAULT_PACKING_RADIUS = 5.0


def packing_radius(ckpt: Checkpoint) -> float:
    """Half the checkpoint's graph cutoff (the neighbourhood its messages see), else 5 length units."""
    cutoff = ckpt.data_spec.cutoff
    return 0.5 * float(cutoff) if cutoff else DEFAULT_PACKING_RADIUS


def pair_residuals(pairs: Sequence[FramePair], means: Sequence, dt: float, radius: float) -> Residuals:
    """`Residuals` of ``pairs`` given the model's mean positions for each (moving nodes only;
    grouped by each pair's source file)."""
    return collect_residuals(
        [p.positions for p in pairs], means, [p.target_positions for p in pairs], [p.velocities for p in pairs],
        [p.node_attrs for p in pairs], float(dt), radius,
        moving=[p.moving for p in pairs], groups=[str(p.metadata.get("source", "")) for p in pairs],
    )


def residuals_of(ckpt: Checkpoint, pairs: Sequence[FramePair], batch_size: int = 20, radius: Optional[float] = None,
                 model: Optional[torch.nn.Module] = None) -> Residuals:
    """The checkpoint's mean jump on ``pairs`` and its `Residuals` (moving nodes only)."""
    model = model if model is not None else ckpt.build_model()
    spec = ckpt.data_spec
    means = predict_positions(model, pairs, spec.cutoff, spec.drop_rate, batch_size=batch_size)
    return pair_residuals(pairs, means, spec.dt, packing_radius(ckpt) if radius is None else radius)


def calibrate_checkpoint(
    ckpt: Checkpoint, fit_pairs: Sequence[FramePair], heldout_pairs: Sequence[FramePair] = (),
    fitted_on: Optional[dict[str, Any]] = None, seed: int = 0,
) -> tuple[JumpSpread, dict[str, Any]]:
    """Fit the spread on ``fit_pairs``; returns it and ``{"fit": ..., "heldout": ...}`` calibration
    figures (`fastegnn_md.spread.calibration`; ``heldout`` is None without held-out pairs). The
    held-out figures are stored in the spread (``spread.calibration``)."""
    if not fit_pairs:
        raise ValueError("calibrate: no examples to fit the spread on")
    model = ckpt.build_model()
    radius = packing_radius(ckpt)
    fit_residuals = residuals_of(ckpt, fit_pairs, radius=radius, model=model)
    spread = fit_spread(fit_residuals, radius, seed=seed, fitted_on=fitted_on)
    spread.geometry_cutoff = MOLECULAR_GEOMETRY_CUTOFF if ckpt.data_spec.is_molecular else None
    report = {"fit": calibration(spread, fit_residuals), "heldout": None}
    if heldout_pairs:
        report["heldout"] = calibration(spread, residuals_of(ckpt, heldout_pairs, radius=radius, model=model))
    spread.calibration = report
    return spread, report


def save_with_spread(ckpt: Checkpoint, spread: JumpSpread, out: Union[str, Path]) -> Path:
    """A new checkpoint at ``out``: the same model, weights, training record and data spec, with
    ``spread`` in ``data_spec.extra[spec_keys.SPREAD]`` (written atomically)."""
    spec = copy.deepcopy(ckpt.data_spec)
    spec.extra[spec_keys.SPREAD] = spread.as_dict()
    training = dict(ckpt.training, calibrated_from=str(ckpt.path) if ckpt.path else None)
    return save_checkpoint(out, ckpt.model_name, ckpt.hparams, ckpt.build_model(), spec, training=training)
