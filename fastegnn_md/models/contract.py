"""The model contract every registry model follows: `ModelOutput`, `JumpModel` and its hooks.

Contract
--------
``model(batch: GraphBatch) -> ModelOutput``

Inputs (from `fastegnn_md.graph.GraphBatch`; N nodes, E edges, B graphs):
    positions (N, 3), velocities (N, 3), node_features (N, F_node), edge_index (2, E)
    receiver-first and sorted by receiver, edge_features (E, F_edge), batch (N,), graph_sizes (B,).
Outputs (`ModelOutput`):
    positions (N, 3): predicted positions one jump later, same length unit as the input.
    virtual_positions (B, C, 3) or None: virtual-node coordinates (FastEGNN family only).
    velocities (N, 3) or None: predicted velocities, for models that predict them.

Models are E(3)-equivariant in positions and velocities and permutation-equivariant in nodes;
`tests/models/test_equivariance.py` checks that for every registered model.

Two optional behaviours live here, once for every model:

* **Gravity term** (``gravity_axis``, a unit 3-vector ĝ; None = off): the predicted positions
  get ``phi_g(c_i, v_i . ĝ) ĝ`` added once, after the last layer (`JumpModel.add_gravity`), where
  c_i is the model's per-node invariant context (EGNN/FastEGNN: the hidden state h_i the last
  layer reads; RF: |v_i|; Linear: nothing, so its term is affine in v_i . ĝ). The model is then
  equivariant only to rotations about ĝ, reflections through planes containing ĝ, translations
  and node permutations (`tests/models/test_gravity.py`).
* **Moving mask** (``batch.moving``): `JumpModel.forward` returns, for nodes with
  ``moving == False`` (walls, kinematic particles), ``batch.target_positions`` when the batch
  carries targets (their prescribed positions) and their input positions otherwise. Such
  nodes are graph inputs only; the loss never scores them.

The neural building blocks the models share live in `fastegnn_md.models.blocks`, the CPU
aggregation kernels in `fastegnn_md.models.kernels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import nn

from ..geometry import unit_gravity_axis  # noqa: F401  (re-exported: the models' name for it)
from .blocks import GravityHead

if TYPE_CHECKING:
    from ..graph import GraphBatch


@dataclass
class ModelOutput:
    positions: torch.Tensor
    virtual_positions: Optional[torch.Tensor] = None
    velocities: Optional[torch.Tensor] = None


class JumpModel(nn.Module):
    """Base class: subclasses set ``name`` and implement ``jump(batch) -> ModelOutput``.

    ``length_scale`` L (data length unit, default 1): `forward` divides positions, velocities,
    the distance edge feature and the speed node feature by L, calls `jump`, and multiplies the
    predicted positions, velocities and virtual positions by L. ``time_scale`` T (data time
    unit, default 1; `set_time_scale`) further multiplies the velocities and the speed feature
    by T on the way in and divides predicted velocities by T on the way out. The model therefore sees
    coordinates of order one whatever the unit; scaling commutes with rotations, reflections and
    translations, so equivariance is unchanged, and L = 1 is exactly the paper's model. Molecular
    data in Å need it: with raw Å, squared distances to the virtual nodes reach ~10^3 and the
    first Adam step blows the outputs up (docs/architecture.md).
    """

    name: str = ""
    length_scale: float = 1.0
    time_scale: float = 1.0

    def set_length_scale(self, length_scale: float) -> None:
        if not length_scale > 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        self.length_scale = float(length_scale)

    def set_time_scale(self, time_scale: float) -> None:
        """T (data time unit): the model sees velocities as v·T/L, the displacement over T in its
        own lengths; T = the jump's Δt makes the velocity term start at the size of a
        constant-velocity jump whatever the data's time unit (SPH data: box units per second
        with Δt = 0.075 s). T = 1 is exactly the paper's model."""
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive time, got {time_scale}")
        self.time_scale = float(time_scale)

    def forward(self, batch: "GraphBatch") -> ModelOutput:
        length, time = self.length_scale, self.time_scale
        if length == 1.0 and time == 1.0:
            out = self.jump(batch)
        else:
            out = self.jump(_scaled_batch(batch, 1.0 / length, time / length))
            out = ModelOutput(
                positions=out.positions * length,
                virtual_positions=None if out.virtual_positions is None else out.virtual_positions * length,
                velocities=None if out.velocities is None else out.velocities * (length / time),
            )
        return _hold_fixed_nodes(out, batch)

    def jump(self, batch: "GraphBatch") -> ModelOutput:
        raise NotImplementedError

    # ----------------------------------------------------------------- gravity term
    def _init_gravity(self, gravity_axis: Optional[Sequence[float]], context_width: int, hidden: int) -> None:
        """Set up the gravity term; every registry model calls this from ``__init__``.

        gravity_axis : direction of gravity (any nonzero 3-vector, stored normalised), or None
            for no term (the model is then exactly as without this feature, and its state_dict
            has no gravity weights, so older checkpoints load unchanged).
        context_width : width of the per-node invariant context the model passes to
            `add_gravity` (0 for none).
        hidden : hidden width of phi_g; 0 makes phi_g one affine layer.
        """
        if gravity_axis is None:
            self.gravity_axis: Optional[list[float]] = None
            self.gravity_head = None
            return
        # A hyperparameter (checkpoint hparams), not a weight: kept as Python floats and made a
        # tensor of the input's dtype per call, so float64 runs see the exact float64 axis.
        self.gravity_axis = unit_gravity_axis(gravity_axis)
        self.gravity_head = GravityHead(context_width + 1, hidden)

    def add_gravity(
        self, positions: torch.Tensor, batch: "GraphBatch", context: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``positions + phi_g([context_i, v_i . ĝ]) ĝ`` (N, 3); ``positions`` unchanged without gravity.

        context : (N, K) per-node features invariant under every rotation/reflection (or None);
            v_i . ĝ, the velocity along gravity, is invariant under the rotations about ĝ and
            the reflections that keep ĝ, so phi_g may use it.
        """
        head = self.gravity_head
        if head is None:
            return positions
        g = torch.tensor(self.gravity_axis, dtype=positions.dtype, device=positions.device)
        along = (batch.velocities @ g).unsqueeze(1)
        inputs = along if context is None else torch.cat([context, along], dim=1)
        return positions + head(inputs) * g


def _hold_fixed_nodes(out: ModelOutput, batch: "GraphBatch") -> ModelOutput:
    """Non-moving nodes (``batch.moving`` False) get their prescribed positions: the batch's
    target positions (for walls and kinematic particles these are inputs, known in advance;
    a Predictor passes the input positions there unless told otherwise)."""
    moving = batch.moving
    if moving is None or bool(moving.all()):
        return out
    fixed = batch.target_positions if batch.target_positions is not None else batch.positions
    positions = torch.where(moving.unsqueeze(1), out.positions, fixed.to(out.positions.dtype))
    return ModelOutput(positions=positions, virtual_positions=out.virtual_positions, velocities=out.velocities)


def _scaled_batch(batch: "GraphBatch", factor: float, velocity_factor: Optional[float] = None) -> "GraphBatch":
    """``batch`` with every length (positions, the distance feature) times ``factor`` and every
    velocity (velocities, the |v| feature) times ``velocity_factor`` (default ``factor``).

    Relies on the feature recipe of `fastegnn_md.graph`: node feature 0 is |v|, edge feature 0 is
    the distance; the other columns (node attributes and their products) are not lengths.
    """
    from dataclasses import replace

    velocity_factor = factor if velocity_factor is None else velocity_factor
    node_features = batch.node_features.clone()
    node_features[:, 0] *= velocity_factor
    edge_features = batch.edge_features.clone()
    edge_features[:, 0] *= factor
    return replace(
        batch,
        positions=batch.positions * factor,
        velocities=batch.velocities * velocity_factor,
        node_features=node_features,
        edge_features=edge_features,
        target_positions=None if batch.target_positions is None else batch.target_positions * factor,
        target_velocities=None if batch.target_velocities is None else batch.target_velocities * velocity_factor,
    )
