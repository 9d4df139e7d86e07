"""Geometric graphs: one example (`FramePair`), a batch of them (`GraphBatch`), and `collate`.

Everything here is unit-agnostic: positions and velocities arrive in whatever unit the
adapter that produced them documents (Å and Å/ps for molecular data, dimensionless for the
N-body and SPH data), and the cutoff radius must be in the same length unit.

Feature recipe (the paper's, Sec. 5.1 / Satorras et al.), stored in checkpoints as
``FEATURE_RECIPE``:

* node features ``h_i = [|v_i|, a_i]`` where ``a_i`` are the node attributes (charge, type, ...);
* edge features ``e_ij = [|x_i - x_j|, a_i * a_j]`` (elementwise product of the attributes;
  for the charged N-body system this is the charge product ``c_i c_j``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

FEATURE_RECIPE = "speed+attrs/dist+attr_products"


@dataclass
class FramePair:
    """One training/evaluation example: a frame and the frame one jump later.

    Attributes
    ----------
    positions : (N, 3) float array, length unit of the source (Å for MD).
    velocities : (N, 3) float array, length/time (Å/ps for MD); meaning set by the
        dataset's velocity convention (see docs/architecture.md).
    target_positions : (N, 3) positions after the jump ``metadata["dt"]``.
    node_attrs : (N, F) per-node attributes (charges, particle types, ...). ``F`` may be 0.
    target_velocities : optional (N, 3) velocities after the jump.
    masses : optional (N,) masses in amu.
    moving : optional (N,) bool, True for the nodes the model predicts and the loss scores;
        False marks boundary/kinematic nodes (SPH walls) that are inputs only. None: all move.
    metadata : free-form dict; ``dt`` (jump length in the source's time unit), ``source``,
        ``frames`` (input and target frame indices) are the conventional keys.
    """

    positions: np.ndarray
    velocities: np.ndarray
    target_positions: np.ndarray
    node_attrs: np.ndarray
    target_velocities: Optional[np.ndarray] = None
    masses: Optional[np.ndarray] = None
    moving: Optional[np.ndarray] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions)
        self.velocities = np.asarray(self.velocities)
        self.target_positions = np.asarray(self.target_positions)
        self.node_attrs = np.asarray(self.node_attrs)
        if self.node_attrs.ndim == 1:
            self.node_attrs = self.node_attrs[:, None]
        n = self.positions.shape[0]
        for name in ("positions", "velocities", "target_positions"):
            arr = getattr(self, name)
            if arr.shape != (n, 3):
                raise ValueError(f"FramePair.{name} must have shape ({n}, 3), got {arr.shape}")
        if self.node_attrs.ndim != 2 or self.node_attrs.shape[0] != n:
            raise ValueError(
                f"FramePair.node_attrs must have shape ({n}, F), got {self.node_attrs.shape}"
            )
        if self.moving is not None:
            self.moving = np.asarray(self.moving, dtype=bool)
            if self.moving.shape != (n,):
                raise ValueError(f"FramePair.moving must have shape ({n},), got {self.moving.shape}")

    @property
    def num_nodes(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class GraphBatch:
    """B geometric graphs concatenated node-wise (the model contract's input).

    Attributes (N = total nodes, E = total directed edges, B = graphs)
    ------------------------------------------------------------------
    positions : (N, 3) input positions.
    velocities : (N, 3) input velocities.
    node_features : (N, 1 + F) ``[|v|, node_attrs]``.
    edge_index : (2, E) long, ``edge_index[0]`` = receiver i, ``edge_index[1]`` = sender j;
        message j -> i. Sorted by receiver. Never contains self loops or cross-graph edges.
    edge_features : (E, 1 + F) ``[|x_i - x_j|, a_i * a_j]``.
    batch : (N,) long, graph id of each node.
    num_graphs : B.
    graph_sizes : (B,) long, nodes per graph.
    target_positions, target_velocities : optional (N, 3) training targets.
    moving : optional (N,) bool, the nodes that are predicted and scored (None: all).
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    node_features: torch.Tensor
    edge_index: torch.Tensor
    edge_features: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    graph_sizes: torch.Tensor
    target_positions: Optional[torch.Tensor] = None
    target_velocities: Optional[torch.Tensor] = None
    moving: Optional[torch.Tensor] = None

    @property
    def num_nodes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "GraphBatch":
        """Move to a device and/or cast the floating tensors to ``dtype``."""

        def move(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return GraphBatch(
            positions=move(self.positions),
            velocities=move(self.velocities),
            node_features=move(self.node_features),
            edge_index=move(self.edge_index),
            edge_features=move(self.edge_features),
            batch=move(self.batch),
            num_graphs=self.num_graphs,
            graph_sizes=move(self.graph_sizes),
            target_positions=move(self.target_positions),
            target_velocities=move(self.target_velocities),
            moving=move(self.moving),
        )


def full_edges(num_nodes: int) -> np.ndarray:
    """All directed edges i != j of one graph: (2, n(n-1)) int64, sorted by receiver."""
    return _full_edges(num_nodes).copy()


@lru_cache(maxsize=16)
def _full_edges(num_nodes: int) -> np.ndarray:
    # Cached: every N-body batch asks for the same template.
    receivers, senders = np.nonzero(~np.eye(num_nodes, dtype=bool))
    return np.stack([receivers, senders]).astype(np.int64)


def radius_edges(positions: np.ndarray, cutoff: float) -> np.ndarray:
    """Directed edges between nodes closer than ``cutoff`` (same length unit as positions).

    Uses a KD-tree (O(N log N), never an N x N matrix). Returns (2, E) int64 with both
    directions of each pair, no self loops.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    # query_pairs keeps d <= r; the largest float below the cutoff makes it strict (d < cutoff).
    radius = float(np.nextafter(cutoff, 0.0))
    pairs = cKDTree(positions).query_pairs(radius, output_type="ndarray")
    if pairs.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    pairs = pairs.astype(np.int64)
    return np.concatenate([pairs.T, pairs.T[::-1]], axis=1)


def local_pairs(
    positions: np.ndarray, graph_sizes: Sequence[int], cutoff: float, moving: Optional[np.ndarray] = None
) -> np.ndarray:
    """Pairs (i < j) of nodes of the same graph closer than ``cutoff``, in batch numbering.

    positions (N, 3) of B graphs concatenated node-wise with ``graph_sizes`` (B,) nodes each;
    ``moving`` (N,) bool keeps only pairs of two predicted nodes. Returns (2, P) int64. The
    pairs of `fastegnn_md.losses.local_distance_loss` (bonds, angles, CA–CA of a protein at 4 Å).
    """
    blocks, offset = [], 0
    for size in graph_sizes:
        size = int(size)
        edges = radius_edges(positions[offset : offset + size], cutoff) if size > 1 else np.zeros((2, 0), np.int64)
        blocks.append(edges[:, edges[0] < edges[1]] + offset)
        offset += size
    pairs = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.int64)
    if moving is not None:
        pairs = pairs[:, moving[pairs[0]] & moving[pairs[1]]]
    return pairs


def drop_longest_edges(edge_index: np.ndarray, lengths: np.ndarray, drop_rate: float) -> np.ndarray:
    """Keep the shortest ``floor((1 - drop_rate) * E)`` edges of one graph (paper Sec. 5.1).

    Ties are broken by the original edge order (stable sort), so the result is deterministic.
    Returns the kept edges sorted by (receiver, sender).
    """
    check_drop_rate(drop_rate)
    num_edges = edge_index.shape[1]
    keep = int(np.floor((1.0 - drop_rate) * num_edges + 1e-9))
    if keep < num_edges:
        order = np.argsort(lengths, kind="stable")[:keep]
        edge_index = edge_index[:, order]
    return sort_by_receiver(edge_index)


def check_drop_rate(drop_rate: float) -> None:
    if not 0.0 <= drop_rate <= 1.0:  # also rejects NaN
        raise ValueError(f"drop_rate must be in [0, 1], got {drop_rate}")


def sort_by_receiver(edge_index: np.ndarray) -> np.ndarray:
    order = np.lexsort((edge_index[1], edge_index[0]))
    return edge_index[:, order]


def build_edges(
    positions: np.ndarray, cutoff: Optional[float], drop_rate: float = 0.0, moving: Optional[np.ndarray] = None
) -> np.ndarray:
    """Edges of one graph: full (``cutoff=None``) or radius graph, then edge dropping.

    ``moving`` (N,) bool: edges between two non-moving nodes (wall to wall) are left out before
    dropping. **Departure** (docs/architecture.md, "Walls"): they would carry only the static
    geometry of the walls to themselves; an SPH box has 2–5 times as many wall as fluid
    particles near its walls, so they would be most of the graph."""
    check_drop_rate(drop_rate)
    n = positions.shape[0]
    edges = _full_edges(n) if cutoff is None else radius_edges(positions, cutoff)
    if moving is not None and edges.shape[1] > 0 and not moving.all():
        edges = edges[:, moving[edges[0]] | moving[edges[1]]]
    if drop_rate > 0.0 and edges.shape[1] > 0:
        lengths = np.linalg.norm(positions[edges[0]] - positions[edges[1]], axis=1)
        return drop_longest_edges(edges, lengths, drop_rate)
    return sort_by_receiver(edges) if cutoff is not None else edges


def collate(
    pairs: Sequence[FramePair],
    cutoff: Optional[float] = None,
    drop_rate: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> GraphBatch:
    """Batch FramePairs into one GraphBatch.

    Parameters
    ----------
    pairs : the examples; graphs may have different sizes but must share the attribute count.
    cutoff : radius (length unit of the positions) for the radius graph; ``None`` = fully
        connected.
    drop_rate : fraction p of each graph's edges to drop, longest first (0 keeps all, 1 none).
    dtype : floating dtype of the returned tensors.
    """
    if len(pairs) == 0:
        raise ValueError("collate needs at least one FramePair")
    attr_dims = {p.node_attrs.shape[1] for p in pairs}
    if len(attr_dims) != 1:
        raise ValueError(f"FramePairs in one batch have different node_attrs widths: {sorted(attr_dims)}")

    edge_blocks = []
    offset = 0
    for pair in pairs:
        edges = build_edges(np.asarray(pair.positions, dtype=np.float64), cutoff, drop_rate, pair.moving)
        edge_blocks.append(edges + offset)
        offset += pair.num_nodes

    positions = np.concatenate([p.positions for p in pairs]).astype(np.float64)
    velocities = np.concatenate([p.velocities for p in pairs]).astype(np.float64)
    attrs = np.concatenate([p.node_attrs for p in pairs]).astype(np.float64)
    edge_index = np.concatenate(edge_blocks, axis=1) if edge_blocks else np.zeros((2, 0), np.int64)
    sizes = np.array([p.num_nodes for p in pairs], dtype=np.int64)

    node_features = np.concatenate([np.linalg.norm(velocities, axis=1, keepdims=True), attrs], axis=1)
    receivers, senders = edge_index
    distance = np.linalg.norm(positions[receivers] - positions[senders], axis=1, keepdims=True)
    edge_features = np.concatenate([distance, attrs[receivers] * attrs[senders]], axis=1)

    targets = np.concatenate([p.target_positions for p in pairs]).astype(np.float64)
    target_velocities = None
    if all(p.target_velocities is not None for p in pairs):
        target_velocities = torch.as_tensor(np.concatenate([p.target_velocities for p in pairs]), dtype=dtype)

    moving = None
    if any(p.moving is not None for p in pairs):
        moving = torch.as_tensor(np.concatenate([
            p.moving if p.moving is not None else np.ones(p.num_nodes, dtype=bool) for p in pairs
        ]))

    return GraphBatch(
        positions=torch.as_tensor(positions, dtype=dtype),
        velocities=torch.as_tensor(velocities, dtype=dtype),
        node_features=torch.as_tensor(node_features, dtype=dtype),
        edge_index=torch.as_tensor(edge_index, dtype=torch.long),
        edge_features=torch.as_tensor(edge_features, dtype=dtype),
        batch=torch.repeat_interleave(torch.arange(len(pairs)), torch.as_tensor(sizes)),
        num_graphs=len(pairs),
        graph_sizes=torch.as_tensor(sizes),
        target_positions=torch.as_tensor(targets, dtype=dtype),
        target_velocities=target_velocities,
        moving=moving,
    )


def feature_dims(num_node_attrs: int) -> tuple[int, int]:
    """(node_features, edge_features) widths that `collate` produces for F node attributes."""
    return 1 + num_node_attrs, 1 + num_node_attrs
