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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Optional, Sequence

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
    """Base class: subclasses set ``name`` and implement ``jump(batch) -> ModelOutput``.

    ``length_scale`` L (data length unit, default 1): `forward` divides positions, velocities,
    the distance edge feature and the speed node feature by L, calls `jump`, and multiplies the
    predicted positions, velocities and virtual positions by L. The model therefore sees
    coordinates of order one whatever the unit; scaling commutes with rotations, reflections and
    translations, so equivariance is unchanged, and L = 1 is exactly the paper's model. Molecular
    data in Å need it: with raw Å, squared distances to the virtual nodes reach ~10^3 and the
    first Adam step blows the outputs up (docs/architecture.md).
    """

    name: str = ""
    length_scale: float = 1.0

    def set_length_scale(self, length_scale: float) -> None:
        if not length_scale > 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        self.length_scale = float(length_scale)

    def forward(self, batch: "GraphBatch") -> ModelOutput:
        scale = self.length_scale
        if scale == 1.0:
            out = self.jump(batch)
        else:
            out = self.jump(_scaled_batch(batch, 1.0 / scale))
            out = ModelOutput(
                positions=out.positions * scale,
                virtual_positions=None if out.virtual_positions is None else out.virtual_positions * scale,
                velocities=None if out.velocities is None else out.velocities * scale,
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


def unit_gravity_axis(axis: Sequence[float]) -> list[float]:
    """A finite nonzero 3-vector as a unit vector (list of 3 floats); ValueError otherwise."""
    try:
        values = [float(a) for a in axis]
    except (TypeError, ValueError):
        raise ValueError(f"gravity_axis must be a 3-vector, got {axis!r}") from None
    norm = math.sqrt(sum(v * v for v in values))
    if len(values) != 3 or not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"gravity_axis must be a finite nonzero 3-vector, got {axis!r}")
    return [v / norm for v in values]


class GravityHead(nn.Module):
    """phi_g of the gravity term: (n, K) invariants -> (n, 1) displacement along ĝ.

    With ``hidden`` > 0: Linear(K, hidden) -> SiLU -> Linear(hidden, 1), the last layer starting
    at gain 1e-3 with zero bias like every coordinate head, so turning the term on leaves a
    fresh model's predictions almost unchanged. With ``hidden`` = 0: one affine layer starting
    at zero (keeps Linear dynamics linear in v).
    """

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        if hidden > 0:
            out = nn.Linear(hidden, 1)
            nn.init.xavier_uniform_(out.weight, gain=0.001)
            nn.init.zeros_(out.bias)
            self.net: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), out)
        else:
            self.net = nn.Linear(in_features, 1)
            nn.init.zeros_(self.net.weight)
            nn.init.zeros_(self.net.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)


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


def _scaled_batch(batch: "GraphBatch", factor: float) -> "GraphBatch":
    """``batch`` with every length (positions, velocities, |v| and distance features) times ``factor``.

    Relies on the feature recipe of `fastegnn_md.graph`: node feature 0 is |v|, edge feature 0 is
    the distance; the other columns (node attributes and their products) are not lengths.
    """
    from dataclasses import replace

    node_features = batch.node_features.clone()
    node_features[:, 0] *= factor
    edge_features = batch.edge_features.clone()
    edge_features[:, 0] *= factor
    return replace(
        batch,
        positions=batch.positions * factor,
        velocities=batch.velocities * factor,
        node_features=node_features,
        edge_features=edge_features,
        target_positions=None if batch.target_positions is None else batch.target_positions * factor,
        target_velocities=None if batch.target_velocities is None else batch.target_velocities * factor,
    )


# Edges (or node-channel rows) processed per chunk: an (EDGE_CHUNK, 64) float32 block is 4 MB,
# so a chunk's whole message MLP stays in cache instead of streaming (E, H) tensors through
# memory once per operation. Chunking changes no result, only the order of float additions.
EDGE_CHUNK = 16384


def act(t: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is recorded (saves an allocation per call at inference)."""
    return F.silu(t, inplace=not t.requires_grad)


class MLP(nn.Module):
    """Linear -> SiLU -> Linear, the shape every phi in the paper has."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, hidden)
        self.second = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(act(self.first(x)))



class ScalarHeads(nn.Module):
    """k phi_x-style heads on one input: Linear(H, H) -> SiLU -> Linear(H, 1, no bias) each.

    Computed as one (H -> kH) matmul and one block-diagonal (kH -> k) matmul. The last layer
    starts tiny (gain 1e-3, as in EGNN) so every coordinate update starts near zero, which
    keeps deep stacks stable at initialisation. Output (..., k).
    """

    def __init__(self, hidden: int, count: int = 1) -> None:
        super().__init__()
        self.count, self.width = count, hidden
        self.hidden = nn.Linear(hidden, count * hidden)
        self.out = nn.Parameter(torch.empty(count, hidden))
        for k in range(count):
            nn.init.xavier_uniform_(self.out.data[k : k + 1], gain=0.001)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        a = act(self.hidden(m))
        if self.count == 1:
            return a @ self.out.view(-1, 1)
        # Block-diagonal (kH, k) weight: head k only sees its own H hidden units.
        block = torch.block_diag(*self.out.unbind(0)).t()
        return a @ block


class Segments:
    """Runs of equal consecutive values in an index (receivers of edges, graphs of nodes).

    ``sum_into(out, values)`` is ``out.index_add_(0, index, values)``: it sums each run's rows
    with one `embedding_bag` pass and scatters one row per run. For a sorted index (edges sorted
    by receiver, nodes grouped by graph, as `collate` makes them) that is about 3x faster on CPU
    than index_add_'s scatter of every row; any other index gives the same sums, just with more
    runs. When ``values`` needs a gradient it is index_add_ itself, whose backward (a gather) is
    much cheaper than embedding_bag's.
    """

    def __init__(self, index: torch.Tensor, row_numbers: Optional[torch.Tensor] = None) -> None:
        """row_numbers: an arange of at least len(index) to share between chunks (saves memory)."""
        self.index = index
        self.values, counts = torch.unique_consecutive(index, return_counts=True)
        self.offsets = torch.cumsum(counts, 0) - counts
        if row_numbers is None or row_numbers.shape[0] < index.shape[0]:
            row_numbers = torch.arange(index.shape[0], device=index.device)
        self.rows = row_numbers[: index.shape[0]]
        # One run (a single graph, one receiver): a plain column sum is cheaper still.
        self.single = int(self.values[0]) if self.values.shape[0] == 1 else None

    def sum_into(self, out: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """out (M, K) += per-run sums of values (len(index), K); returns out."""
        if self.rows.numel() == 0:
            return out
        if values.requires_grad:
            return out.index_add_(0, self.index, values)
        if self.single is not None:
            out[self.single] += values.sum(dim=0)
            return out
        sums = F.embedding_bag(self.rows, values, self.offsets, mode="sum")
        return out.index_add_(0, self.values, sums)


class EdgeChunk:
    """One chunk of receiver-sorted edges and the index tensors the edge MLP needs for it."""

    def __init__(
        self, rows: slice, receivers: torch.Tensor, senders: torch.Tensor, row_numbers: torch.Tensor,
        pair_offsets: torch.Tensor,
    ) -> None:
        """row_numbers and pair_offsets (= 2 * row_numbers): aranges at least as long as the
        chunk, shared by the chunks of one EdgeContext."""
        self.rows = rows
        self.receivers = receivers
        self.senders = senders
        self.pair_offsets = pair_offsets[: receivers.shape[0]]
        self.by_receiver = Segments(receivers, row_numbers)

    @cached_property
    def pair_index(self) -> torch.Tensor:
        """Bags of two rows of the (2N, H) receiver/sender projection table, rows 2i and 2j + 1
        (`EdgeBlock.node_table`), so one embedding_bag pass gathers and adds both node parts.
        Built on first use: the training path never needs it."""
        return torch.stack([2 * self.receivers, 2 * self.senders + 1], dim=1).reshape(-1)

    def gather_pairs(self, table: torch.Tensor) -> torch.Tensor:
        """(E_chunk, H): table[2 i] + table[2 j + 1] for each edge (i receiver, j sender).

        One embedding_bag pass at inference; two gathers and an add when training, because
        embedding_bag's backward is several times slower than index_select's.
        """
        if table.requires_grad:
            return table.index_select(0, 2 * self.receivers).add_(table.index_select(0, 2 * self.senders + 1))
        return F.embedding_bag(self.pair_index, table, self.pair_offsets, mode="sum")


class EdgeContext:
    """Per-forward constants of a graph: receivers, senders, 1/degree, edge chunks.

    Built once per forward pass and shared by all layers. Sums over each receiver's edges are
    fastest with edges sorted by receiver, as the batch contract has them (`Segments`).
    """

    def __init__(self, batch: "GraphBatch") -> None:
        self.receivers = batch.edge_index[0]
        self.senders = batch.edge_index[1]
        self.num_nodes = batch.positions.shape[0]
        self.num_edges = int(self.receivers.shape[0])
        dtype = batch.positions.dtype
        degree = torch.zeros(self.num_nodes, dtype=dtype, device=batch.positions.device)
        degree.index_add_(0, self.receivers, torch.ones_like(self.receivers, dtype=dtype))
        # Isolated nodes get mean 0 over their (empty) neighbourhood.
        self.inv_degree = (1.0 / degree.clamp(min=1.0)).unsqueeze(1)
        self.has_edges = self.num_edges > 0
        self._chunks: Optional[list[EdgeChunk]] = None

    def mean_over_neighbours(self, values: torch.Tensor) -> torch.Tensor:
        """(E, K) edge values -> (N, K) mean over each receiver's incoming edges."""
        out = values.new_zeros((self.num_nodes, values.shape[1]))
        for chunk in self.chunks():
            chunk.by_receiver.sum_into(out, values[chunk.rows])
        return out * self.inv_degree

    def relative(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_i - x_j) per edge (E, 3) and its squared length (E, 1)."""
        diff = x.index_select(0, self.receivers) - x.index_select(0, self.senders)
        return diff, (diff * diff).sum(dim=1, keepdim=True)

    def chunks(self) -> list[EdgeChunk]:
        """Edges in chunks of at most EDGE_CHUNK, with their index tensors (built on first use)."""
        if self._chunks is None:
            step = EDGE_CHUNK
            row_numbers = torch.arange(min(step, self.num_edges), device=self.receivers.device)
            pair_offsets = 2 * row_numbers
            self._chunks = [
                EdgeChunk(
                    slice(s, min(s + step, self.num_edges)), self.receivers[s : s + step], self.senders[s : s + step],
                    row_numbers, pair_offsets,
                )
                for s in range(0, self.num_edges, step)
            ]
        return self._chunks


class EdgeBlock(nn.Module):
    """Real-real messages and their coordinate update (EGNN Eq. 3 and the edge term of Eq. 6).

        m_ij  = phi_1(h_i, h_j, |x_i - x_j|^2, e_ij)       SiLU after both layers
        dx_i  = mean_j (x_i - x_j) phi_x(m_ij)
        out   = (dx (N, 3), mean_j m_ij (N, H))

    The first linear layer on the concatenation is split into receiver, sender and geometric
    parts; the node parts are computed once per node (N x H) and gathered, which is the same
    function with ~3x fewer FLOPs on the edges. Edges are processed in chunks (EDGE_CHUNK) so
    each chunk's MLP runs in cache; per chunk, one embedding_bag pass gathers and adds the two
    node parts, and the sums over each receiver's edges are segment sums (`Segments`).
    """

    def __init__(self, hidden: int, edge_features: int) -> None:
        super().__init__()
        self.receiver = nn.Linear(hidden, hidden)
        self.sender = nn.Linear(hidden, hidden, bias=False)
        self.geometric = nn.Linear(1 + edge_features, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)
        self.coord_head = ScalarHeads(hidden, 1)

    def node_table(self, h: torch.Tensor) -> torch.Tensor:
        """(2N, H): row 2i = receiver part of node i (with the bias), row 2i + 1 = its sender part.

        One (N, H) x (H, 2H) matmul; viewing its (N, 2H) result as (2N, H) interleaves the two.
        """
        weight = torch.cat([self.receiver.weight, self.sender.weight])
        bias = torch.cat([self.receiver.bias, self.receiver.bias.new_zeros(self.receiver.bias.shape)])
        return torch.addmm(bias, h, weight.t()).view(2 * h.shape[0], h.shape[1])

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, e: torch.Tensor, ctx: EdgeContext, need_messages: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Returns (dx (N, 3), mean_j m_ij (N, H) or None when ``need_messages`` is False)."""
        table = self.node_table(h)
        geo_weight = self.geometric.weight.t()
        dx = x.new_zeros((ctx.num_nodes, 3))
        m_sum = h.new_zeros((ctx.num_nodes, h.shape[1]))
        for chunk in ctx.chunks():
            diff = x.index_select(0, chunk.receivers) - x.index_select(0, chunk.senders)
            geo = torch.cat([(diff * diff).sum(dim=1, keepdim=True), e[chunk.rows]], dim=1)
            pre = chunk.gather_pairs(table).addmm_(geo, geo_weight)
            m = act(self.second(act(pre)))
            chunk.by_receiver.sum_into(dx, diff * self.coord_head(m))
            if need_messages:
                chunk.by_receiver.sum_into(m_sum, m)
        return dx * ctx.inv_degree, (m_sum * ctx.inv_degree if need_messages else None)


class NodeUpdate(nn.Module):
    """phi_h: h_i += MLP([h_i, extra_i, mean_j m_ij]) (Eq. 7; EGNN's node model without extra).

    The first layer is split by input block, so a graph without edges (mean_j m_ij = 0) skips
    that block's matmul instead of multiplying zeros.
    """

    def __init__(self, hidden: int, extra_width: int = 0) -> None:
        super().__init__()
        self.own = nn.Linear(hidden, hidden)
        self.extra = nn.Linear(extra_width, hidden, bias=False) if extra_width else None
        self.neighbours = nn.Linear(hidden, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)

    def forward(
        self, h: torch.Tensor, extra: Optional[torch.Tensor] = None, neighbours: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        pre = self.own(h)
        if self.extra is not None:
            pre = pre.addmm_(extra, self.extra.weight.t())
        if neighbours is not None:
            pre = pre.addmm_(neighbours, self.neighbours.weight.t())
        return h + self.second(act(pre))


class NodeChunk:
    """A range of nodes, the graph of each, and the runs of equal graphs (`Segments`)."""

    def __init__(self, rows: slice, graph: torch.Tensor, row_numbers: Optional[torch.Tensor] = None) -> None:
        self.rows = rows
        self.graph = graph
        self.by_graph = Segments(graph, row_numbers)


class GraphPool:
    """Per-graph sums and means over nodes, (N, K) -> (B, K), and node chunks for the per-node
    work of FastEGNN's virtual nodes."""

    def __init__(self, batch_index: torch.Tensor, graph_sizes: torch.Tensor, dtype: torch.dtype) -> None:
        self.index = batch_index
        self.num_nodes = int(batch_index.shape[0])
        self.num_graphs = int(graph_sizes.shape[0])
        self.inv_size = (1.0 / graph_sizes.to(dtype).clamp(min=1.0)).unsqueeze(1)
        self.by_graph = Segments(batch_index)
        self._chunks: dict[int, list[NodeChunk]] = {}

    def sum_into(self, out: torch.Tensor, values: torch.Tensor, chunk: Optional[NodeChunk] = None) -> torch.Tensor:
        """out (B, K) += per-graph sums of values ((N, K), or the chunk's (n, K) rows)."""
        return (self.by_graph if chunk is None else chunk.by_graph).sum_into(out, values)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros((self.num_graphs, values.shape[1]))
        return self.sum_into(out, values) * self.inv_size

    def chunks(self, rows_per_node: int) -> list[NodeChunk]:
        """Node ranges whose (nodes x rows_per_node) rows fit one EDGE_CHUNK-sized chunk."""
        if rows_per_node not in self._chunks:
            step = max(1, EDGE_CHUNK // rows_per_node)
            row_numbers = self.by_graph.rows  # arange(N), long enough for any chunk
            self._chunks[rows_per_node] = [
                NodeChunk(slice(i, min(i + step, self.num_nodes)), self.index[i : i + step], row_numbers)
                for i in range(0, self.num_nodes, step)
            ]
        return self._chunks[rows_per_node]
