"""Model names -> classes, used by checkpoints, the trainer and the CLI."""

from __future__ import annotations

import inspect
from typing import Any

from .contract import JumpModel
from .egnn import EGNN, LinearDynamics, RadialField
from .fastegnn import FastEGNN, GlobalNodesFastEGNN

_REGISTRY: dict[str, type[JumpModel]] = {
    cls.name: cls for cls in (LinearDynamics, RadialField, EGNN, FastEGNN, GlobalNodesFastEGNN)
}


def available_models() -> list[str]:
    """Names accepted by `build_model`."""
    return list(_REGISTRY)


def model_class(name: str) -> type[JumpModel]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(_REGISTRY)}") from None


def model_hparams(name: str, **hparams: Any) -> dict[str, Any]:
    """The subset of ``hparams`` that model ``name`` takes (the CLI passes one shared set)."""
    accepted = inspect.signature(model_class(name).__init__).parameters
    return {k: v for k, v in hparams.items() if k in accepted}


def build_model(name: str, **hparams: Any) -> JumpModel:
    """Instantiate a registry model; hyperparameters it does not take are ignored.

    Every model takes what it needs from: node_features, edge_features, hidden, layers,
    virtual_nodes, dt, gravity_axis (see each class; every model takes gravity_axis, default
    None = no gravity term). ``length_scale`` and ``time_scale`` (every model; default 1) are the
    data length and time that become 1 inside the model (`JumpModel`).
    """
    length_scale = hparams.pop("length_scale", None)
    time_scale = hparams.pop("time_scale", None)
    model = model_class(name)(**model_hparams(name, **hparams))
    if length_scale is not None:
        model.set_length_scale(length_scale)
    if time_scale is not None:
        model.set_time_scale(time_scale)
    return model
