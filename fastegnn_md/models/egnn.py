"""The baselines of the paper's Table 1: EGNN (with velocity), Linear dynamics, Radial Field.

EGNN* (the paper's EGNN with all edges dropped) is not a separate class: it is ``egnn`` run on
graphs collated with ``drop_rate=1.0``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..graph import GraphBatch
from .blocks import MLP, EdgeBlock, NodeUpdate
from .contract import JumpModel, ModelOutput
from .kernels import EdgeContext


class EGNNLayer(nn.Module):
    """One E_GCL_vel layer of Satorras et al. (2021), with mean aggregation on both streams.

    x_i <- x_i + mean_j (x_i - x_j) phi_x(m_ij) + phi_v(h_i) v_i
    h_i <- h_i + phi_h(h_i, mean_j m_ij)
    """

    def __init__(self, hidden: int, edge_features: int) -> None:
        super().__init__()
        self.edges = EdgeBlock(hidden, edge_features)
        self.velocity_head = MLP(hidden, hidden, 1)
        self.node_update = NodeUpdate(hidden)

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor, e: torch.Tensor, ctx: EdgeContext, final: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer; with ``final`` the h update nobody reads is skipped."""
        x_new = x + self.velocity_head(h) * v
        m_agg = None
        if ctx.has_edges:
            dx, m_agg = self.edges(h, x, e, ctx, need_messages=not final)
            x_new = x_new + dx
        if final:
            return h, x_new
        return self.node_update(h, neighbours=m_agg), x_new


class EGNN(JumpModel):
    """E(n)-equivariant GNN with velocity (Satorras et al., 2021), the paper's main baseline.

    Hyperparameters: node_features, edge_features (input widths), hidden=64, layers=4,
    gravity_axis=None (`JumpModel.add_gravity`, context: the hidden state the last layer reads).
    """

    name = "egnn"

    def __init__(
        self,
        node_features: int,
        edge_features: int,
        hidden: int = 64,
        layers: int = 4,
        gravity_axis: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Linear(node_features, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_features) for _ in range(layers))
        self._init_gravity(gravity_axis, hidden, hidden)

    def jump(self, batch: GraphBatch) -> ModelOutput:
        ctx = EdgeContext(batch)
        x, v, e = batch.positions, batch.velocities, batch.edge_features
        # The residual stream h stays in the batch's dtype under bf16-mixed autocast (whose
        # Linears return bfloat16): each layer adds a rounded update, not a rounded sum.
        h = self.embedding(batch.node_features).to(x.dtype)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h, x = layer(h, x, v, e, ctx, final=index == last)
        return ModelOutput(positions=self.add_gravity(x, batch, h))


class LinearDynamics(JumpModel):
    """x' = x + alpha * v with one learned scalar alpha (the paper's "Linear").

    ``dt`` initialises alpha: with velocities in length/time and a jump of dt time units,
    alpha = dt is constant-velocity extrapolation. With ``gravity_axis`` ĝ the update becomes
    x + alpha v + (beta_0 + beta_1 v . ĝ) ĝ (both betas start at 0): still linear in v, with a
    learned constant drop along gravity (ballistic motion has beta_0 = g dt^2 / 2).
    """

    name = "linear"

    def __init__(self, dt: float = 1.0, gravity_axis: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([float(dt)]))
        self._init_gravity(gravity_axis, 0, 0)

    def jump(self, batch: GraphBatch) -> ModelOutput:
        x = batch.positions + self.alpha.to(batch.positions.dtype) * batch.velocities
        return ModelOutput(positions=self.add_gravity(x, batch))


class RadialFieldLayer(nn.Module):
    def __init__(self, hidden: int, edge_features: int) -> None:
        super().__init__()
        out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(out.weight, gain=0.001)  # start near zero, as in Satorras et al.'s RF
        self.field = nn.Sequential(nn.Linear(1 + edge_features, hidden), nn.SiLU(), out, nn.Tanh())
        self.velocity_head = MLP(1, hidden, 1)

    def forward(self, x: torch.Tensor, v: torch.Tensor, e: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        speed = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        x_new = x + self.velocity_head(speed) * v
        if ctx.has_edges:
            diff, r2 = ctx.relative(x)
            x_new = x_new + ctx.mean_over_neighbours(diff * self.field(torch.cat([r2, e], dim=1)))
        return x_new


class RadialField(JumpModel):
    """Radial Field (Köhler et al., 2019) with velocity, as in Satorras et al.'s baselines.

    x_i <- x_i + phi_v(|v_i|) v_i + mean_j (x_i - x_j) phi(|x_i - x_j|^2, e_ij); no hidden node state.
    Hyperparameters: edge_features, hidden=64, layers=4, gravity_axis=None (context |v_i|, what
    phi_v reads).
    """

    name = "rf"

    def __init__(
        self, edge_features: int, hidden: int = 64, layers: int = 4, gravity_axis: Optional[Sequence[float]] = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(RadialFieldLayer(hidden, edge_features) for _ in range(layers))
        self._init_gravity(gravity_axis, 1, hidden)

    def jump(self, batch: GraphBatch) -> ModelOutput:
        ctx = EdgeContext(batch)
        x, v, e = batch.positions, batch.velocities, batch.edge_features
        for layer in self.layers:
            x = layer(x, v, e, ctx)
        if self.gravity_head is not None:
            x = self.add_gravity(x, batch, torch.linalg.vector_norm(v, dim=1, keepdim=True))
        return ModelOutput(positions=x)


__all__ = ["EGNN", "LinearDynamics", "RadialField"]
