"""Plain reference implementations of FastEGNN (paper Sec. 4, Eqs. 2-9) and EGNN, to check the
fast path against.

The models in `fastegnn` and `egnn` split first layers into per-node and per-edge parts, gather
and sum with embedding bags, skip dead work and run in chunks (docs/architecture.md,
"Performance"). The functions here compute the same function the way the paper writes it: one
concatenated input per message, one MLP call on it, ``index_add_`` for every sum over
neighbours, channels or a graph's nodes, and every layer in full (the last layer's h and s
updates are computed although nothing reads them). They are plain, not slow on purpose: every
tensor is built whole, with no chunking and no Python loop over nodes or edges.

They hold no weights of their own: each reads the parameters of an already-built fast model,
so ``reference_forward(model, batch)`` and ``model(batch)`` can be compared on identical weights,
outputs and gradients alike (tests/test_reference_model.py). Where the fast model departs from
the paper, the reference follows the fast model's documented behaviour (docs/architecture.md)
and says so in a comment marked **Departure**; its job is to check the fast path, not to
re-derive the paper.

Shapes: N nodes, E directed edges, B graphs, C virtual nodes per graph, H hidden width,
F_node / F_edge input feature widths. Lengths are in the batch's unit (see the length scale).

Public names: `reference_forward`, `ReferenceModel`, `reference_edges`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..graph import GraphBatch
from .blocks import EdgeBlock, NodeUpdate, ScalarHeads
from .contract import JumpModel, ModelOutput
from .egnn import EGNN
from .fastegnn import FastEGNN, FastEGNNLayer

__all__ = ["reference_forward", "ReferenceModel", "reference_edges"]


def _silu(t: torch.Tensor) -> torch.Tensor:
    """SiLU, never in place (the fast path's `act` overwrites its input at inference).

    A module-level name so a test can swap it for a version with the same values and a wrong
    gradient, and see the gradient comparison fail."""
    return F.silu(t)


# ---------------------------------------------------------------------------------- MLPs
def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _mlp(x: torch.Tensor, first: nn.Linear, second: nn.Linear) -> torch.Tensor:
    """Linear -> SiLU -> Linear (the shape of every phi; `blocks.MLP`)."""
    return _linear(_silu(_linear(x, first)), second)


def _first_layer(inputs: list[torch.Tensor], weights: list[torch.Tensor], bias: Optional[torch.Tensor]) -> torch.Tensor:
    """One linear layer on the concatenation of ``inputs`` (last dims), its weight the
    concatenation of the fast model's split weights in the same order: exactly the layer the
    fast path computes block by block."""
    return F.linear(torch.cat(inputs, dim=-1), torch.cat(weights, dim=1), bias)


def _scalar_head(m: torch.Tensor, heads: ScalarHeads, k: int) -> torch.Tensor:
    """Head k of a `ScalarHeads` (a phi_x-type MLP): Linear(H, H) -> SiLU -> Linear(H, 1, no bias).

    m (..., H) -> (..., 1). The fast path runs all heads as one (H -> kH) matmul and one
    block-diagonal matmul; here each head is its own MLP, as the paper writes them.
    """
    width = heads.width
    rows = slice(k * width, (k + 1) * width)
    hidden = _silu(F.linear(m, heads.hidden.weight[rows], heads.hidden.bias[rows]))
    return hidden @ heads.out[k].unsqueeze(1)


def _node_update(
    h: torch.Tensor, extra: Optional[torch.Tensor], neighbours: torch.Tensor, phi_h: NodeUpdate
) -> torch.Tensor:
    """Eq. 7 / EGNN's node model: h + MLP([h_i, extra_i, mean_j m_ij]) (N, H).

    The fast path skips the neighbour block when the batch has no edges; here mean_j m_ij is
    simply zero then, the same function.
    """
    inputs, weights = [h], [phi_h.own.weight]
    if phi_h.extra is not None:
        inputs.append(extra)
        weights.append(phi_h.extra.weight)
    inputs.append(neighbours)
    weights.append(phi_h.neighbours.weight)
    return h + _linear(_silu(_first_layer(inputs, weights, phi_h.own.bias)), phi_h.second)


# ------------------------------------------------------------------------- aggregation
class _Sums:
    """Sums and means by ``index_add_``: over each receiver's edges, over each graph's nodes."""

    def __init__(self, batch: GraphBatch) -> None:
        dtype, device = batch.positions.dtype, batch.positions.device
        self.num_nodes = batch.positions.shape[0]
        self.num_graphs = int(batch.num_graphs)
        self.receivers, self.senders = batch.edge_index[0], batch.edge_index[1]
        self.graph = batch.batch
        # alpha_i = 1/|N(i)| (Eqs. 6, 7). **Departure** (documented in `kernels.EdgeContext`): a
        # node without neighbours, where the paper's alpha is undefined, gets a zero mean.
        degree = torch.zeros(self.num_nodes, dtype=dtype, device=device).index_add_(
            0, self.receivers, torch.ones(self.receivers.shape[0], dtype=dtype, device=device))
        self.alpha = 1.0 / degree.clamp(min=1.0)
        # N of Eqs. 8, 9 and of the centre of mass: counted from the node -> graph index here,
        # independently of the batch's graph_sizes, which the fast path reads.
        size = torch.zeros(self.num_graphs, dtype=dtype, device=device).index_add_(
            0, self.graph, torch.ones(self.num_nodes, dtype=dtype, device=device))
        self.inv_size = 1.0 / size.clamp(min=1.0)

    def neighbour_mean(self, per_edge: torch.Tensor) -> torch.Tensor:
        """(E, K) -> (N, K): alpha_i sum_{j in N(i)} of the edge values."""
        total = per_edge.new_zeros((self.num_nodes,) + per_edge.shape[1:]).index_add_(0, self.receivers, per_edge)
        return total * self.alpha.unsqueeze(1)

    def graph_sum(self, per_node: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, ...): sum over each graph's nodes."""
        return per_node.new_zeros((self.num_graphs,) + per_node.shape[1:]).index_add_(0, self.graph, per_node)

    def graph_mean(self, per_node: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, ...): 1/N sum over each graph's nodes."""
        total = self.graph_sum(per_node)
        return total * self.inv_size.view((-1,) + (1,) * (total.dim() - 1))


# ------------------------------------------------------------------ real-real messages
def _real_messages(
    layer_edges: EdgeBlock, h: torch.Tensor, x: torch.Tensor, e: torch.Tensor, sums: _Sums
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 and the edge term of Eq. 6 (EGNN's edge and coordinate models).

        m_ij = phi_1([h_i, h_j, |x_i - x_j|^2, e_ij])      SiLU after both layers (EGNN's code)
        dx_i = alpha_i sum_j (x_i - x_j) phi_x^r(m_ij)

    ``layer_edges`` is the fast layer's `EdgeBlock` (its weights only). Returns (dx (N, 3),
    alpha_i sum_j m_ij (N, H)).
    """
    i, j = sums.receivers, sums.senders
    diff = x[i] - x[j]  # (E, 3)
    r2 = (diff * diff).sum(dim=1, keepdim=True)
    # The fast EdgeBlock's geometric weight reads [r^2, e_ij]: the concatenation order of Eq. 3.
    pre = _first_layer(
        [h[i], h[j], r2, e],
        [layer_edges.receiver.weight, layer_edges.sender.weight, layer_edges.geometric.weight],
        layer_edges.receiver.bias,
    )
    m = _silu(_linear(_silu(pre), layer_edges.second))  # (E, H)
    dx = sums.neighbour_mean(diff * _scalar_head(m, layer_edges.coord_head, 0))
    return dx, sums.neighbour_mean(m)


# -------------------------------------------------------------------------- FastEGNN
def _virtual_start(model: FastEGNN, x: torch.Tensor, h: torch.Tensor, sums: _Sums) -> torch.Tensor:
    """Z^(0) (B, C, 3), Eq. 2.

    "centroid": the paper's, every channel at the centre of mass (1/N sum_i x_i).
    "weighted" (**Departure**, an option, docs/architecture.md "Models"): channel c at
    sum_i w_ic x_i, w_ic the softmax over the graph's nodes of the invariant logits of h_i;
    one shared logit column for the unordered ablation.
    """
    channels = model.virtual_nodes
    if model.virtual_init == "centroid":
        return sums.graph_mean(x).unsqueeze(1).expand(sums.num_graphs, channels, 3)
    logits = F.linear(h, model.virtual_weighting.weight)  # (N, C') with C' = C or 1
    width = logits.shape[1]
    # Shift by each graph's largest logit before exp, only against overflow: the softmax does not
    # depend on it, so it is taken without gradient.
    index = sums.graph.unsqueeze(1).expand(-1, width)
    top = logits.new_full((sums.num_graphs, width), float("-inf")).scatter_reduce_(
        0, index, logits.detach(), reduce="amax")
    weights = torch.exp(logits - top[sums.graph])
    weights = weights / sums.graph_sum(weights)[sums.graph]  # softmax over the graph's nodes
    z = sums.graph_sum(weights.unsqueeze(-1) * x.unsqueeze(1))  # (B, C', 3)
    return z.expand(sums.num_graphs, channels, 3)


def _fastegnn_layer(
    layer: FastEGNNLayer, ordered: bool, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
    z: torch.Tensor, s: torch.Tensor, sums: _Sums,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer, Eqs. 3-9: (h, x, z, s) -> (h', x', z', s'), all four computed in full.

    h (N, H), x and v (N, 3) (v is the input velocity v^(0) in every layer), e (E, F_edge),
    z (B, C, 3), s (B, C, H). ``layer`` is the fast `FastEGNNLayer` (its weights only).
    """
    num_nodes, hidden = h.shape
    channels = z.shape[1]
    graph = sums.graph

    # Eq. 4: m^v = (Z - xbar 1^T)^T (Z - xbar 1^T), (B, C, C), symmetric, so its c-th column is
    # its c-th row.
    centred = z - sums.graph_mean(x).unsqueeze(1)
    gram = centred @ centred.transpose(1, 2)
    if ordered:
        channel_geometry = gram  # m^v_c, the c-th column: (B, C, C)
    else:
        # **Departure** (Table 2 ablation "global nodes", docs/architecture.md): an unordered set
        # sees only channel-permutation-equivariant summaries, diag(m^v) and its row means.
        channel_geometry = torch.stack([torch.diagonal(gram, dim1=1, dim2=2), gram.mean(dim=2)], dim=-1)

    # Eq. 3 (real-real messages) and the edge term of Eq. 6.
    dx_real, m_real = _real_messages(layer.edges, h, x, e, sums)

    # Eq. 5, the per-channel form the paper reports trains better:
    #   m_ic = phi_2([h_i, s_c, |x_i - z_c|^2, m^v_c]), one phi_2 for every channel (as the
    #   authors' code), SiLU after both layers.
    to_virtual = x.unsqueeze(1) - z[graph]  # (N, C, 3): x_i - z_c of node i's graph
    d2 = (to_virtual * to_virtual).sum(dim=-1, keepdim=True)  # (N, C, 1)
    phi_2 = layer.virtual_message
    pre = _first_layer(
        [h.unsqueeze(1).expand(num_nodes, channels, hidden), s[graph], d2, channel_geometry[graph]],
        [phi_2.real.weight, phi_2.virtual.weight, phi_2.distance.weight, phi_2.gram.weight],
        phi_2.real.bias,
    )
    m_virtual = _silu(_linear(_silu(pre), phi_2.second))  # (N, C, H)
    phi_xv = _scalar_head(m_virtual, layer.virtual_heads, 0)  # (N, C, 1)
    phi_z = _scalar_head(m_virtual, layer.virtual_heads, 1)  # (N, C, 1)

    # Eq. 6: x_i + alpha_i sum_j (x_i - x_j) phi_x^r + 1/C sum_c (x_i - z_c) phi_x^v + phi_v(h_i) v_i^(0)
    phi_v = _mlp(h, layer.velocity_head.first, layer.velocity_head.second)  # (N, 1)
    x_new = x + dx_real + (to_virtual * phi_xv).sum(dim=1) / channels + phi_v * v

    # Eq. 7: h_i + phi_h([h_i, (+)_c m_ic, alpha_i sum_j m_ij]); (+)_c concatenates the channels
    # in order. **Departure** for the unordered ablation: the mean over channels instead.
    virtual_part = m_virtual.reshape(num_nodes, channels * hidden) if ordered else m_virtual.mean(dim=1)
    h_new = _node_update(h, virtual_part, m_real, layer.node_update)

    # Eq. 8: z_c + 1/N sum_i (z_c - x_i) phi_Z(m_ic), each channel from its own messages.
    z_new = z + sums.graph_mean(-to_virtual * phi_z)
    # Eq. 9: s_c + phi_S([s_c, 1/N sum_i m_ic]).
    s_new = s + _mlp(torch.cat([s, sums.graph_mean(m_virtual)], dim=-1), layer.virtual_update.first,
                     layer.virtual_update.second)
    return h_new, x_new, z_new, s_new


def _fastegnn_jump(model: FastEGNN, batch: GraphBatch) -> ModelOutput:
    """FastEGNN on a batch already in model units (length scale applied)."""
    sums = _Sums(batch)
    x, v, e = batch.positions, batch.velocities, batch.edge_features
    # h^(0): a linear embedding of the node features (the paper leaves it open; EGNN's code).
    h = _linear(batch.node_features, model.embedding)
    z = _virtual_start(model, x, h, sums)
    # S^(0): learnable per-channel features; **Departure** for the unordered ablation: one
    # feature shared by all channels (its parameter has one row).
    features = model.virtual_features.to(x.dtype)
    s = features.unsqueeze(0).expand(sums.num_graphs, model.virtual_nodes, features.shape[1])
    context = h
    for layer in model.layers:
        context = h  # the hidden state the last layer reads (gravity term below)
        h, x, z, s = _fastegnn_layer(layer, model.ordered, h, x, v, e, z, s, sums)
    # h^(L) and s^(L) are computed above and not used: the fast path skips them.
    return ModelOutput(positions=_add_gravity(model, x, v, context), virtual_positions=z)


# ------------------------------------------------------------------------------ EGNN
def _egnn_jump(model: EGNN, batch: GraphBatch) -> ModelOutput:
    """EGNN with velocity (Satorras et al.), mean aggregation on both streams
    (**Departure** in h, docs/architecture.md: as FastEGNN's Eq. 7)."""
    sums = _Sums(batch)
    x, v, e = batch.positions, batch.velocities, batch.edge_features
    h = _linear(batch.node_features, model.embedding)
    context = h
    for layer in model.layers:
        context = h
        dx, m_mean = _real_messages(layer.edges, h, x, e, sums)
        x_new = x + dx + _mlp(h, layer.velocity_head.first, layer.velocity_head.second) * v
        h = _node_update(h, None, m_mean, layer.node_update)
        x = x_new
    return ModelOutput(positions=_add_gravity(model, x, v, context))


# ---------------------------------------------------------------- the contract's parts
def _add_gravity(model: JumpModel, x: torch.Tensor, v: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """**Departure** (gravity term, docs/architecture.md): x_i + phi_g([c_i, v_i . g]) g once after
    the last layer, c_i the hidden state the last layer reads. Unchanged without gravity."""
    head = model.gravity_head
    if head is None:
        return x
    g = torch.tensor(model.gravity_axis, dtype=x.dtype, device=x.device)
    inputs = torch.cat([context, (v @ g).unsqueeze(1)], dim=1)
    net = head.net
    phi_g = _linear(inputs, net) if isinstance(net, nn.Linear) else _mlp(inputs, net[0], net[2])
    return x + phi_g * g


def _in_model_units(batch: GraphBatch, length_scale: float, time_scale: float = 1.0) -> GraphBatch:
    """**Departure** (length and time scales, `contract.JumpModel`): positions and the distance
    edge feature (column 0) divided by L; velocities and the speed node feature (column 0) times T / L."""
    if length_scale == 1.0 and time_scale == 1.0:
        return batch
    speed = time_scale / length_scale
    node_features = torch.cat([batch.node_features[:, :1] * speed, batch.node_features[:, 1:]], dim=1)
    edge_features = torch.cat([batch.edge_features[:, :1] / length_scale, batch.edge_features[:, 1:]], dim=1)
    return GraphBatch(
        positions=batch.positions / length_scale,
        velocities=batch.velocities * speed,
        node_features=node_features,
        edge_index=batch.edge_index,
        edge_features=edge_features,
        batch=batch.batch,
        num_graphs=batch.num_graphs,
        graph_sizes=batch.graph_sizes,
    )


def reference_forward(model: JumpModel, batch: GraphBatch) -> ModelOutput:
    """What ``model(batch)`` computes, recomputed from ``model``'s parameters the plain way.

    model : a `FastEGNN` (incl. `GlobalNodesFastEGNN`) or an `EGNN`; read, never changed.
    batch : the model contract's input (`fastegnn_md.models.contract`).

    Returns `ModelOutput` with positions (N, 3) and, for FastEGNN, virtual_positions (B, C, 3),
    in the batch's length unit; velocities None (neither model predicts them). Gradients flow
    to the model's parameters and to the batch's tensors as they would through ``model(batch)``.
    """
    if isinstance(model, FastEGNN):
        jump: Callable[[JumpModel, GraphBatch], ModelOutput] = _fastegnn_jump
    elif isinstance(model, EGNN):
        jump = _egnn_jump
    else:
        raise TypeError(f"no reference implementation for {type(model).__name__}")
    scale = float(model.length_scale)
    out = jump(model, _in_model_units(batch, scale, float(model.time_scale)))
    positions = out.positions * scale
    virtual = None if out.virtual_positions is None else out.virtual_positions * scale
    moving = batch.moving
    if moving is not None:
        # **Departure** (moving mask, docs/architecture.md): a non-moving node (wall, kinematic
        # particle) is an input only; its output is its prescribed target, else its input.
        fixed = batch.target_positions if batch.target_positions is not None else batch.positions
        positions = torch.where(moving.unsqueeze(1), positions, fixed.to(positions.dtype))
    return ModelOutput(positions=positions, virtual_positions=virtual)


class ReferenceModel(nn.Module):
    """``ReferenceModel(fast_model)(batch)`` == `reference_forward`: the reference as a module.

    It holds the fast model as its only submodule, so its parameters *are* the fast model's:
    a backward pass through the reference fills the same ``.grad`` fields.
    """

    def __init__(self, model: JumpModel) -> None:
        super().__init__()
        if not isinstance(model, (FastEGNN, EGNN)):
            raise TypeError(f"no reference implementation for {type(model).__name__}")
        self.model = model

    def forward(self, batch: GraphBatch) -> ModelOutput:
        return reference_forward(self.model, batch)


# ----------------------------------------------------------------------------- edges
def reference_edges(positions: np.ndarray, cutoff: Optional[float] = None, drop_rate: float = 0.0) -> np.ndarray:
    """The directed edges of one graph the paper's way, by brute force: every ordered pair i != j
    (``cutoff`` None) or those with |x_i - x_j| < cutoff, then the longest p = ``drop_rate`` of
    them dropped (Sec. 5.1), i.e. the shortest floor((1 - p) E) kept.

    positions : (n, 3) in the cutoff's length unit. Returns (2, E_kept) int64, receiver first.
    p is read as the decimal it prints as (0.7 is 7/10), so floor((1 - p) E) is exact. Of two
    edges of equal length the paper does not say which goes; both directions of a pair have the
    same length, so compare edge sets up to such ties.
    """
    x = np.asarray(positions, dtype=np.float64)
    distance = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)  # (n, n), fine for tests
    candidate = ~np.eye(x.shape[0], dtype=bool)
    if cutoff is not None:
        candidate &= distance < cutoff
    receivers, senders = np.nonzero(candidate)
    keep = int((1 - Fraction(repr(float(drop_rate)))) * receivers.shape[0])  # floor of a non-negative Fraction
    order = np.argsort(distance[receivers, senders], kind="stable")[:keep]
    return np.stack([receivers[order], senders[order]]).astype(np.int64)
