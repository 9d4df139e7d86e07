"""A model's predicted positions for a list of examples, batch by batch (no gradient)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .graph import FramePair, collate
from .models import JumpModel
from .models.precision import precision_context

__all__ = ["predict_positions"]


@torch.no_grad()
def predict_positions(
    model: JumpModel,
    pairs: Sequence[FramePair],
    cutoff: Optional[float],
    drop_rate: float,
    batch_size: int = 50,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    precision: str = "full",
) -> list[np.ndarray]:
    """The model's predicted positions (N_i, 3) for each of ``pairs``, in order, as float64.

    Runs without autograd, in ``precision`` (`fastegnn_md.models.precision`). Leaves the model
    in eval mode (callers that train restore their own mode).
    """
    model.eval()
    predicted = []
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start : start + batch_size], cutoff=cutoff, drop_rate=drop_rate, dtype=dtype)
        with torch.inference_mode(), precision_context(precision, device, dtype):
            out = model(batch.to(device)).positions.cpu().double().numpy()
        sizes = batch.graph_sizes.cpu().numpy()
        predicted.extend(np.split(out, np.cumsum(sizes)[:-1]))
    return predicted
