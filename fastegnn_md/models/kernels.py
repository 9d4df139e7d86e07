"""The CPU aggregation kernels: segment sums (`Segments`), edge chunks and the per-forward
edge constants (`EdgeChunk`, `EdgeContext`), node chunks and per-graph pooling (`NodeChunk`,
`GraphPool`).

`EDGE_CHUNK` is read from this module at call time (tests monkeypatch it here).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Optional

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from ..graph import GraphBatch


# Edges (or node-channel rows) processed per chunk: an (EDGE_CHUNK, 64) float32 block is 4 MB,
# so a chunk's whole message MLP stays in cache instead of streaming (E, H) tensors through
# memory once per operation. Chunking changes no result, only the order of float additions.
EDGE_CHUNK = 16384



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
            # bfloat16 messages (bf16-mixed precision) are added into out's dtype: index_add_
            # would round the running sum at every row.
            return out.index_add_(0, self.index, values.to(out.dtype))
        if self.single is not None:
            out[self.single] += values.sum(dim=0)
            return out
        # embedding_bag accumulates bfloat16 rows in float32 and rounds each sum once.
        sums = F.embedding_bag(self.rows, values, self.offsets, mode="sum")
        return out.index_add_(0, self.values, sums.to(out.dtype))


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
    """Per-forward constants of a graph: receivers, senders, degree and 1/degree, edge chunks.

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
        self.degree = degree.unsqueeze(1)  # (N, 1) incoming edges per node
        # Isolated nodes get mean 0 over their (empty) neighbourhood.
        self.inv_degree = 1.0 / self.degree.clamp(min=1.0)
        self.has_edges = self.num_edges > 0
        self._chunks: Optional[list[EdgeChunk]] = None

    def sum_over_neighbours(self, values: torch.Tensor) -> torch.Tensor:
        """(E, K) edge values -> (N, K) sum over each receiver's incoming edges (0 if none)."""
        out = values.new_zeros((self.num_nodes, values.shape[1]))
        for chunk in self.chunks():
            chunk.by_receiver.sum_into(out, values[chunk.rows])
        return out

    def mean_over_neighbours(self, values: torch.Tensor) -> torch.Tensor:
        """(E, K) edge values -> (N, K) mean over each receiver's incoming edges."""
        return self.sum_over_neighbours(values) * self.inv_degree

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
