"""Test-set evaluation as in the paper's Table 1: MSE and inference time relative to EGNN."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .checkpoint import Checkpoint
from .graph import FramePair, feature_dims
from .models import build_model
from .training import evaluate_mse, time_inference


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


def evaluate_checkpoint(
    ckpt: Checkpoint, pairs: Sequence[FramePair], batch_size: int = 50, repeats: int = 3, device: str = "cpu"
) -> dict[str, Any]:
    """MSE of the checkpoint on ``pairs`` and its forward time as a ratio to EGNN's.

    Both models are timed in this process on the same examples (median over ``repeats`` full
    traversals each); times exclude graph building. Units: MSE in the data's length unit squared.
    """
    spec = ckpt.data_spec
    spec.check_fits(pairs[0].node_attrs.shape[1], None, where="dataset")
    model = ckpt.build_model().to(device)
    egnn = reference_egnn(ckpt).to(device)
    mse = evaluate_mse(model, pairs, spec.cutoff, spec.drop_rate, batch_size, device=device)
    seconds = time_inference(model, pairs, spec.cutoff, spec.drop_rate, batch_size, repeats=repeats, device=device)
    egnn_seconds = time_inference(egnn, pairs, spec.cutoff, 0.0, batch_size, repeats=repeats, device=device)
    return {
        "model": ckpt.model_name,
        "examples": len(pairs),
        "mse": mse,
        "seconds": seconds,
        "egnn_seconds": egnn_seconds,
        "relative_time": seconds / egnn_seconds,
        "drop_rate": spec.drop_rate,
        "virtual_nodes": ckpt.hparams.get("virtual_nodes"),
        "threads": torch.get_num_threads(),
        "device": device,
    }
