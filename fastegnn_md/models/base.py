"""Compatibility module: its contents moved, by job, to

* `fastegnn_md.models.contract`: the model contract (`ModelOutput`, `JumpModel`,
  `unit_gravity_axis`) and its description (inputs/outputs, shapes, units);
* `fastegnn_md.models.blocks`: the neural building blocks (`act`, `MLP`, `ScalarHeads`,
  `EdgeBlock`, `NodeUpdate`, `GravityHead`);
* `fastegnn_md.models.kernels`: the CPU aggregation kernels (`EDGE_CHUNK`, `Segments`,
  `EdgeChunk`, `EdgeContext`, `NodeChunk`, `GraphPool`).

The names are re-exported here so old imports keep working. ``EDGE_CHUNK`` here is a copy:
the kernels read ``kernels.EDGE_CHUNK``, so patch it there.
"""

from .blocks import MLP, EdgeBlock, GravityHead, NodeUpdate, ScalarHeads, act
from .contract import JumpModel, ModelOutput, unit_gravity_axis
from .kernels import EDGE_CHUNK, EdgeChunk, EdgeContext, GraphPool, NodeChunk, Segments

__all__ = [
    "ModelOutput",
    "JumpModel",
    "unit_gravity_axis",
    "act",
    "MLP",
    "ScalarHeads",
    "EdgeBlock",
    "NodeUpdate",
    "GravityHead",
    "EDGE_CHUNK",
    "Segments",
    "EdgeChunk",
    "EdgeContext",
    "NodeChunk",
    "GraphPool",
]
