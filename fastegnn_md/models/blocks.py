"""The neural building blocks the models share: `act`, `MLP`, `ScalarHeads`, `EdgeBlock`,
`NodeUpdate` and `GravityHead` (phi_g of the gravity term, `fastegnn_md.models.contract`).

Shapes: N nodes, E edges, H hidden width. Edge work runs over the chunks of an `EdgeContext`
(`fastegnn_md.models.kernels`), which also does the segment sums.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from .kernels import EdgeContext


def act(t: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is recorded (saves an allocation per call at inference)."""
    return F.silu(t, inplace=not t.requires_grad)


# oneDNN's Linear with SiLU ("swish") applied in the matmul's epilogue: one pass over the output
# instead of a matmul writing it and SiLU reading and writing it again (measured on a
# (16384, 64) x (64, 128) float32 product: 1.1 against 2.6 ms; benchmarks/RESULTS.md). It has no
# backward, so only inference uses it, and only where this torch build has it.
_FUSED_LINEAR = (
    getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None) if torch.backends.mkldnn.is_available()
    else None
)


def linear_act(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """SiLU(layer(x)), x (..., in) -> (..., out); fused into the matmul at CPU inference.

    Under CPU autocast (bf16-mixed precision) the operands are cast to autocast's dtype
    first, as autocast would for the Linear. Elsewhere (under autograd, on CUDA, in float64,
    inside ``torch.compile``, whose Inductor cannot lower the kernel and fuses on its own, or on
    builds without the kernel) it is ``act(layer(x))``.
    """
    records_grad = x.requires_grad or (torch.is_grad_enabled() and layer.weight.requires_grad)
    if (
        _FUSED_LINEAR is None or records_grad or torch.compiler.is_compiling()
        or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16)
    ):
        return act(layer(x))
    weight, bias = layer.weight, layer.bias
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    elif weight.dtype != x.dtype:
        return act(layer(x))
    return _FUSED_LINEAR(x, weight, bias, "swish", [], "")


class MLP(nn.Module):
    """Linear -> SiLU -> Linear, the shape every phi in the paper has."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, hidden)
        self.second = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(linear_act(x, self.first))



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
        a = linear_act(m, self.hidden)
        if self.count == 1:
            return a @ self.out.view(-1, 1)
        # Block-diagonal (kH, k) weight: head k only sees its own H hidden units.
        block = torch.block_diag(*self.out.unbind(0)).t()
        return a @ block


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
            pre = chunk.gather_pairs(table)
            pre = pre.addmm_(geo.to(pre.dtype), geo_weight.to(pre.dtype))
            m = linear_act(act(pre), self.second)
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
            pre = pre.addmm_(extra.to(pre.dtype), self.extra.weight.t().to(pre.dtype))
        if neighbours is not None:
            pre = pre.addmm_(neighbours.to(pre.dtype), self.neighbours.weight.t().to(pre.dtype))
        return h + self.second(act(pre))


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
