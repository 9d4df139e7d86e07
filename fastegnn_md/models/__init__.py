"""The FastEGNN family and its baselines; see `contract` for the contract every model follows."""

from .contract import JumpModel, ModelOutput
from .egnn import EGNN, LinearDynamics, RadialField
from .fastegnn import FastEGNN, GlobalNodesFastEGNN
from .registry import available_models, build_model, model_class, model_hparams
from .reference import ReferenceModel, reference_edges, reference_forward  # plain Eqs. 2-9, for tests

__all__ = [
    "JumpModel",
    "ModelOutput",
    "EGNN",
    "LinearDynamics",
    "RadialField",
    "FastEGNN",
    "GlobalNodesFastEGNN",
    "available_models",
    "build_model",
    "model_class",
    "model_hparams",
]
