"""The model contract every registry model follows, and the pieces the models share.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from ..graph import GraphBatch


@dataclass
class ModelOutput:
    positions: torch.Tensor
    virtual_positions: Optional[torch.Tensor] = None
    velocities: Optional[torch.Tensor] = None


class JumpModel(nn.Module):
    """Base class: subclasses set ``name`` and implement ``forward(batch) -> ModelOutput``."""

    name: str = ""


def mlp(in_dim: int, hidden: int, out_dim: int, final_activation: bool = False) -> nn.Sequential:
    """Two-layer MLP with SiLU, the shape every phi in the paper has."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim)]
    if final_activation:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class ScalarHead(nn.Module):
    """phi_x-style head: Linear(H, H) -> SiLU -> Linear(H, 1, no bias), last layer tiny.

    The small initial gain (as in EGNN) makes every coordinate update start near zero, which
    keeps deep stacks stable at initialisation.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.out.weight, gain=0.001)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.hidden(m)))


class PairMessage(nn.Module):
    """phi_1 / phi_e of EGNN: m_ij = MLP([h_i, h_j, |x_i - x_j|^2, e_ij]) with SiLU after both layers.

    The first linear layer on the concatenation is split into a receiver part, a sender part and
    a geometric part. The two node parts are computed once per node (N x H) and gathered, instead
    of multiplying an (E, 2H + ...) concatenation: the same function, ~3x fewer FLOPs on the
    edges, and no (E, 2H) temporary.
    """

    def __init__(self, node_dim: int, geo_dim: int, hidden: int) -> None:
        super().__init__()
        self.receiver = nn.Linear(node_dim, hidden)
        self.sender = nn.Linear(node_dim, hidden, bias=False)
        self.geometric = nn.Linear(geo_dim, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)

    def forward(
        self, h: torch.Tensor, geo: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor
    ) -> torch.Tensor:
        pre = self.geometric(geo)
        pre += self.receiver(h).index_select(0, receivers)
        pre += self.sender(h).index_select(0, senders)
        return F.silu(self.second(F.silu(pre)))


class EdgeContext:
    """Per-forward constants of a graph: receivers, senders, 1/degree, graph sizes."""

    def __init__(self, batch: "GraphBatch") -> None:
        self.receivers = batch.edge_index[0]
        self.senders = batch.edge_index[1]
        self.num_nodes = batch.positions.shape[0]
        dtype = batch.positions.dtype
        degree = torch.zeros(self.num_nodes, dtype=dtype, device=batch.positions.device)
        degree.index_add_(0, self.receivers, torch.ones_like(self.receivers, dtype=dtype))
        # Isolated nodes get mean 0 over their (empty) neighbourhood.
        self.inv_degree = (1.0 / degree.clamp(min=1.0)).unsqueeze(1)
        self.has_edges = self.receivers.numel() > 0

    def mean_over_neighbours(self, values: torch.Tensor) -> torch.Tensor:
        """(E, K) edge values -> (N, K) mean over each receiver's incoming edges."""
        out = values.new_zeros((self.num_nodes, values.shape[1]))
        out.index_add_(0, self.receivers, values)
        return out * self.inv_degree

    def relative(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_i - x_j) per edge (E, 3) and its squared length (E, 1)."""
        diff = x.index_select(0, self.receivers) - x.index_select(0, self.senders)
        return diff, (diff * diff).sum(dim=1, keepdim=True)


class GraphPool:
    """Means over the nodes of each graph: (N, K) -> (B, K)."""

    def __init__(self, batch_index: torch.Tensor, graph_sizes: torch.Tensor, dtype: torch.dtype) -> None:
        self.index = batch_index
        self.num_graphs = int(graph_sizes.shape[0])
        self.inv_size = (1.0 / graph_sizes.to(dtype).clamp(min=1.0)).unsqueeze(1)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros((self.num_graphs, values.shape[1]))
        out.index_add_(0, self.index, values)
        return out * self.inv_size

