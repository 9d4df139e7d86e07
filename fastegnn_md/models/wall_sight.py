"""Wall sight: two invariant node features that tell a moving particle where the nearest wall is.

Why: a learned SPH jump of 0.075 s moves falling water ~0.25 box lengths, the whole receptive
field of a 4-layer model at connectivity 0.064, so the particles that will hit the floor within
the jump have no wall particle among their neighbours when the jump starts
(benchmarks/RESULTS.md, "Where the water goes"). Edges out to one jump's travel would cost
hundreds of wall neighbours per particle; these features give each particle the one that matters.

For every moving node i of a graph with non-moving nodes (walls), with w_i the nearest wall node
of the same graph and d_i = |w_i − x_i|:

* ``distance`` = min(d_i, R) / R, the distance to the nearest wall as a fraction of the reach R;
* ``approach`` = (v_i · (w_i − x_i) / d_i) / R · (1 − min(d_i, R) / R), the speed towards that
  wall in reaches per unit time, tapered to 0 at the reach so the feature is continuous where
  the nearest wall leaves it. Inside a model (velocities on the jump's time scale) it is the
  fraction of the reach the particle would cover towards the wall in one jump.

Both are of order one whatever the units (zero-initialised input weights of a fine-tuned start
grow at the rate of its other inputs).

Both are invariant under rotations, reflections and translations of positions, velocities and
walls together, and permutation-equivariant (a node's features depend on its own position and
velocity and the set of wall positions). Non-moving nodes get (0, 0); graphs without walls give
every node (1, 0). Lengths and speeds are those of the batch it is given (`JumpModel` passes its
scaled batch and R in the same unit). Device-agnostic: distances by `torch.cdist` (from differences), in blocks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..graph import GraphBatch

#: Columns appended to the node features (``distance``, ``approach``).
WALL_FEATURES = 2

#: Differences, not |x|² + |w|² − 2 x·w: exact near a wall and the same whatever the block size.
_EXACT = "donot_use_mm_for_euclid_dist"

#: Moving nodes per `torch.cdist` block (bounds the (block, walls) distance matrix).
_BLOCK = 4096


def wall_features(positions: torch.Tensor, velocities: torch.Tensor, moving: torch.Tensor | None,
                  graph_sizes: torch.Tensor, reach: float) -> torch.Tensor:
    """(N, 2) ``[distance, approach]`` (module docstring) for nodes grouped into consecutive graphs.

    positions, velocities : (N, 3); moving : (N,) bool or None (None: no walls); graph_sizes :
    (B,) nodes per graph, in order; reach : R > 0, in the length unit of ``positions``.
    """
    n = positions.shape[0]
    distance = positions.new_ones(n)
    approach = positions.new_zeros(n)
    if moving is not None and not bool(moving.all()):
        start = 0
        for size in graph_sizes.tolist():
            stop = start + int(size)
            fluid = torch.nonzero(moving[start:stop]).squeeze(1) + start
            walls = torch.nonzero(~moving[start:stop]).squeeze(1) + start
            if len(fluid) and len(walls):
                wall_x = positions.index_select(0, walls)
                for block in fluid.split(_BLOCK):
                    x = positions.index_select(0, block)
                    nearest_distance, nearest = torch.cdist(x, wall_x, compute_mode=_EXACT).min(dim=1)
                    toward = (wall_x.index_select(0, nearest) - x) / nearest_distance.clamp_min(1e-12).unsqueeze(1)
                    fraction = nearest_distance.clamp(max=reach) / reach
                    speed = (velocities.index_select(0, block) * toward).sum(dim=1) / reach
                    distance = distance.index_copy(0, block, fraction)
                    approach = approach.index_copy(0, block, speed * (1.0 - fraction))
            start = stop
        held = ~moving
        distance = distance.masked_fill(held, 0.0)
        approach = approach.masked_fill(held, 0.0)
    return torch.stack([distance, approach], dim=1)


def with_wall_features(batch: "GraphBatch", reach: float) -> "GraphBatch":
    """``batch`` with `wall_features` appended to its node features (N, F) -> (N, F + 2)."""
    extra = wall_features(batch.positions, batch.velocities, batch.moving, batch.graph_sizes, reach)
    return replace(batch, node_features=torch.cat([batch.node_features, extra.to(batch.node_features.dtype)], dim=1))
