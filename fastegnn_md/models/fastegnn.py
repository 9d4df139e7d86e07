"""FastEGNN (Zhang et al., ICML 2024, Sec. 4): EGNN plus a small ordered set of virtual nodes.

Per layer l, with real nodes (x_i, h_i) and C virtual nodes (z_c, s_c) per graph:

    m_ij  = phi_1(h_i, h_j, |x_i - x_j|^2, e_ij)                           (Eq. 3)
    m^v   = (Z - xbar 1^T)^T (Z - xbar 1^T),  xbar = mean_i x_i            (Eq. 4, C x C)
    m_ic  = phi_2(h_i, s_c, |x_i - z_c|^2, m^v_c)                          (Eq. 5, per channel)
    x_i  += mean_j (x_i - x_j) phi_x^r(m_ij)
            + 1/C sum_c (x_i - z_c) phi_x^v(m_ic) + phi_v(h_i) v_i^(0)      (Eq. 6)
    h_i  += phi_h(h_i, (+)_c m_ic, mean_j m_ij)                             (Eq. 7)
    z_c  += 1/N sum_i (z_c - x_i) phi_Z(m_ic)                               (Eq. 8)
    s_c  += phi_S(s_c, 1/N sum_i m_ic)                                       (Eq. 9)

Virtual nodes start at the centre of mass of the input positions (Eq. 2), with learnable
per-channel features S. phi_2 is one MLP applied to every channel (as in the authors' code);
the channels stay distinguishable through their own s_c, the c-th column of m^v, and the
ordered concatenation (+)_c in Eq. 7. ``global_nodes`` is the ablation of Table 2 that drops
the ordering: one shared initial feature, a permutation-equivariant summary of m^v, and a mean
over channels in Eq. 7, so its virtual nodes are an unordered set.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..graph import GraphBatch
from .blocks import MLP, EdgeBlock, NodeUpdate, ScalarHeads, act, linear_act
from .contract import JumpModel, ModelOutput
from .kernels import EdgeContext, GraphPool

#: Where a sampled jump's noise enters (`FastEGNN.noise_into`): isotropic vectors weighted into every
#: layer's coordinate update, or invariant scalars added to the embedded node features.
NOISE_INPUTS = ("coordinates", "features")
#: What a sampled jump's noise is multiplied by, per node (`FastEGNN.noise_gate`): nothing, or the
#: node's speed (the constant-velocity displacement over the model's time scale).
NOISE_GATES = ("none", "speed")
#: How the virtual coordinates start (`FastEGNN.virtual_start`): the paper's centre of mass, or
#: a learned weighted centre per channel.
VIRTUAL_INITS = ("centroid", "weighted")


class VirtualMessage(nn.Module):
    """phi_2: m_ic = MLP([h_i, s_c, |x_i - z_c|^2, g_c]) -> (n, C, H), SiLU after both layers.

    g_c is the invariant description of channel c from the Gram matrix m^v. The first linear
    layer is split so the per-node part (N x H) and the per-channel part (B x C x H) are computed
    once and broadcast, never materialising the (N, C, 2H + C + 1) concatenation.
    """

    def __init__(self, hidden: int, gram_dim: int) -> None:
        super().__init__()
        self.real = nn.Linear(hidden, hidden)
        self.virtual = nn.Linear(hidden, hidden, bias=False)
        self.gram = nn.Linear(gram_dim, hidden, bias=False)
        self.distance = nn.Linear(1, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)

    def per_channel(self, s: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """First-layer contribution of (s_c, g_c): (B, C, H)."""
        return self.virtual(s) + self.gram(gram)

    def messages(self, channel_part: torch.Tensor, real_part: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        """m_ic for n nodes: channel_part (n, C, H) gathered per node, real_part = real(h) (n, H),
        d2 = |x_i - z_c|^2 (n, C)."""
        # channel_part is a fresh gather, so building the pre-activation in place is safe.
        pre = channel_part.add_(real_part.unsqueeze(1))
        pre = pre.addcmul_(d2.unsqueeze(-1), self.distance.weight.view(1, 1, -1))
        return linear_act(act(pre), self.second)


class FastEGNNLayer(nn.Module):
    def __init__(self, hidden: int, edge_features: int, virtual_nodes: int, ordered: bool = True,
                 noise_channels: int = 0) -> None:
        super().__init__()
        self.ordered = ordered
        self.edges = EdgeBlock(hidden, edge_features)  # phi_1 and phi_x^r
        self.virtual_message = VirtualMessage(hidden, virtual_nodes if ordered else 2)  # phi_2
        self.virtual_heads = ScalarHeads(hidden, 2)  # phi_x^v and phi_Z
        self.velocity_head = MLP(hidden, hidden, 1)  # phi_v
        virtual_width = virtual_nodes * hidden if ordered else hidden
        self.node_update = NodeUpdate(hidden, virtual_width)  # phi_h
        self.virtual_update = MLP(2 * hidden, hidden, hidden)  # phi_S
        # Sampled jumps (`FastEGNN.noise_channels`): per-node invariant weights of the noise vectors.
        # The output layer starts at zero, so a model fine-tuned from a deterministic checkpoint
        # starts as exactly that checkpoint.
        self.noise_head = MLP(hidden, hidden, noise_channels) if noise_channels > 0 else None
        if self.noise_head is not None:
            nn.init.zeros_(self.noise_head.second.weight)
            nn.init.zeros_(self.noise_head.second.bias)

    def channel_geometry(self, z: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        """Eq. 4: Gram matrix of centred virtual coordinates -> per-channel invariants (B, C, *)."""
        centred = z - xbar.unsqueeze(1)
        gram = centred @ centred.transpose(1, 2)  # (B, C, C); row c == column c
        if self.ordered:
            return gram
        # Unordered set: only channel-permutation-equivariant summaries of m^v.
        return torch.stack([torch.diagonal(gram, dim1=1, dim2=2), gram.mean(dim=2)], dim=-1)

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        v: torch.Tensor,
        e: torch.Tensor,
        z: torch.Tensor,
        s: torch.Tensor,
        ctx: EdgeContext,
        pool: GraphPool,
        final: bool = False,
        noise: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer; with ``final`` the feature updates nobody reads (h, s) are skipped.

        Shapes: h (N, H), x and v (N, 3), e (E, F_edge), z (B, C, 3), s (B, C, H); ``noise``
        (N, K, 3) standard-normal vectors when the model samples (K noise channels), else None.
        """
        hidden = h.shape[1]
        num_graphs, num_channels = z.shape[0], z.shape[1]

        channel_part = self.virtual_message.per_channel(s, self.channel_geometry(z, pool.mean(x)))
        real_part = self.virtual_message.real(h)

        # Real-real messages (Eq. 3 and the edge term of Eq. 6).
        x_new = x + self.velocity_head(h) * v
        if noise is not None:
            # sum_k a_k(h_i) eps_ik: invariant weights of isotropic noise, so the law of the sample
            # is equivariant; the later layers' messages see the moved nodes and can correlate it.
            x_new = x_new + (self.noise_head(h).to(x.dtype).unsqueeze(-1) * noise).sum(dim=1)
        m_agg = None
        if ctx.has_edges:
            dx, m_agg = self.edges(h, x, e, ctx, need_messages=not final)
            x_new = x_new + dx

        # Real-virtual messages (Eq. 5), in node chunks so each chunk's MLPs run in cache.
        z_shift = x.new_zeros((num_graphs, num_channels * 3))
        m_v_sum = h.new_zeros((num_graphs, num_channels * hidden))
        x_parts, h_parts = [], []
        for chunk in pool.chunks(num_channels):
            part = chunk.rows
            to_virtual = x[part].unsqueeze(1) - z.index_select(0, chunk.graph)  # (n, C, 3): x_i - z_c
            m_v = self.virtual_message.messages(
                channel_part.index_select(0, chunk.graph), real_part[part], (to_virtual * to_virtual).sum(-1)
            )  # (n, C, H)
            heads = self.virtual_heads(m_v)  # (n, C, 2): phi_x^v, phi_Z
            x_parts.append((to_virtual * heads[..., 0:1]).mean(dim=1))  # Eq. 6, 1/C sum_c
            pool.sum_into(z_shift, (to_virtual * heads[..., 1:2]).flatten(1).neg_(), chunk)  # Eq. 8
            if not final:
                pool.sum_into(m_v_sum, m_v.flatten(1), chunk)
                virtual_part = m_v.flatten(1) if self.ordered else m_v.mean(dim=1)
                neighbours = None if m_agg is None else m_agg[part]
                h_parts.append(self.node_update(h[part], virtual_part, neighbours))  # Eq. 7

        x_new = x_new + torch.cat(x_parts)
        z_new = z + (z_shift * pool.inv_size).view(num_graphs, num_channels, 3)
        if final:
            return h, x_new, z_new, s
        m_v_mean = (m_v_sum * pool.inv_size).view(num_graphs, num_channels, hidden)
        s_new = s + self.virtual_update(torch.cat([s, m_v_mean], dim=-1))  # Eq. 9
        return torch.cat(h_parts), x_new, z_new, s_new


def smooth_noise(noise: torch.Tensor, ctx: EdgeContext, passes: int) -> torch.Tensor:
    """Noise (N, K, 3) or (N, K) made spatially correlated: ``passes`` times, each node's noise
    becomes the sum of its own and its graph neighbours', over sqrt(1 + degree) so that i.i.d.
    standard-normal input keeps unit variance per node after one pass.

    Why: noise drawn independently per node moves neighbours apart, which packs and leaks SPH
    water; summed over a neighbourhood, nearby nodes share most of their noise and move together.
    Vectors are summed as vectors, so the law stays E(3)- and permutation-equivariant.
    """
    if not ctx.has_edges:
        return noise
    flat = noise.reshape(noise.shape[0], -1)
    scale = torch.rsqrt(1.0 + ctx.degree.to(flat.dtype))
    for _ in range(passes):
        flat = (flat + ctx.sum_over_neighbours(flat.index_select(0, ctx.senders))) * scale
    return flat.reshape(noise.shape)


class FastEGNN(JumpModel):
    """FastEGNN with C ordered virtual nodes.

    Hyperparameters: node_features, edge_features (input widths), hidden=64, layers=4,
    virtual_nodes=3 (C), gravity_axis=None (`JumpModel.add_gravity`, context: the hidden state
    the last layer reads), virtual_init="centroid" (the paper) or "weighted" (`virtual_start`),
    noise_channels=0 (the paper: a deterministic jump). With K > 0 noise channels the jump is a
    sample, trained with an energy score (`losses.energy_score`); ``noise_into`` says how the
    noise enters. "coordinates": every call draws K standard-normal vectors per node
    (`draw_noise`, (N, K, 3)) and every layer adds sum_k a_k(h_i) eps_ik to the coordinates, a_k an
    MLP of the invariant h_i (Eq. 6 with one more term, like the velocity term). "features": K
    standard-normal scalars per node ((N, K)) go through a linear map into the embedded h, so
    every message sees them and the displacements they cause are built from the relative
    positions of the neighbours and virtual nodes (Eqs. 6, 8), as the deterministic ones are.
    Either way the new weights start at zero: the model starts as its deterministic self.
    ``noise_gate`` "speed" multiplies each node's noise by its speed |v_i| (as the model sees it:
    the displacement over its time scale, `JumpModel.set_time_scale`), so a node at rest gets no
    noise: still water stays still, whatever the noise does where the flow moves ("none": the
    noise as drawn). ``noise_smoothing`` S > 0 passes the drawn noise S times over the radius graph
    before it enters (`smooth_noise`), so neighbours' noise is correlated over about S cutoffs
    (0: independent per node). Output virtual_positions has shape (B, C, 3).
    """

    name = "fastegnn"
    ordered = True

    def __init__(
        self,
        node_features: int,
        edge_features: int,
        hidden: int = 64,
        layers: int = 4,
        virtual_nodes: int = 3,
        gravity_axis: Optional[Sequence[float]] = None,
        virtual_init: str = "centroid",
        noise_channels: int = 0,
        noise_into: str = "coordinates",
        noise_gate: str = "none",
        noise_smoothing: int = 0,
    ) -> None:
        super().__init__()
        _check_at_least("noise_channels", noise_channels, 0)
        _check_one_of("noise_into", noise_into, NOISE_INPUTS)
        _check_one_of("noise_gate", noise_gate, NOISE_GATES)
        _check_at_least("noise_smoothing", noise_smoothing, 0)
        _check_at_least("virtual_nodes", virtual_nodes, 1)
        _check_one_of("virtual_init", virtual_init, VIRTUAL_INITS)
        self.noise_channels = noise_channels
        self.noise_into = noise_into
        self.noise_gate = noise_gate
        self.noise_smoothing = noise_smoothing
        if noise_channels > 0 and noise_into == "features":
            self.noise_embedding = nn.Linear(noise_channels, hidden, bias=False)
            nn.init.zeros_(self.noise_embedding.weight)
        layer_noise = noise_channels if noise_into == "coordinates" else 0
        self.virtual_nodes = virtual_nodes
        self.virtual_init = virtual_init
        self.embedding = nn.Linear(node_features, hidden)
        if virtual_init == "weighted":
            # phi_int of Eq. 2 as a per-channel weighted centre: invariant logits of each real node,
            # a softmax over the graph's nodes. Random weights (std 1) make the channels start
            # apart; at equal starts Eq. 10 has zero gradient apart (see `virtual_start`).
            self.virtual_weighting = nn.Linear(hidden, virtual_nodes if self.ordered else 1, bias=False)
            nn.init.normal_(self.virtual_weighting.weight, std=1.0)
        # S: per-channel learnable features (ordered) or one feature shared by all (global nodes).
        self.virtual_features = nn.Parameter(torch.randn(virtual_nodes if self.ordered else 1, hidden))
        self.layers = nn.ModuleList(
            FastEGNNLayer(hidden, edge_features, virtual_nodes, self.ordered, layer_noise)
            for _ in range(layers)
        )
        self._init_gravity(gravity_axis, hidden, hidden)

    def jump(self, batch: GraphBatch) -> ModelOutput:
        ctx = EdgeContext(batch)
        pool = GraphPool(batch.batch, batch.graph_sizes, batch.positions.dtype)
        x, v, e = batch.positions, batch.velocities, batch.edge_features
        # The residual stream h stays in the batch's dtype under bf16-mixed autocast (whose
        # Linears return bfloat16): each layer adds a rounded update, not a rounded sum.
        h = self.embedding(batch.node_features).to(x.dtype)
        z = self.virtual_start(x, h, batch.batch, pool)
        s = self.virtual_features.to(x.dtype).expand(pool.num_graphs, self.virtual_nodes, -1)
        noise = self.draw_noise(x) if self.noise_channels > 0 else None
        if noise is not None and self.noise_smoothing > 0:
            noise = smooth_noise(noise, ctx, self.noise_smoothing)
        if noise is not None and self.noise_gate == "speed":
            speed = v.norm(dim=1)  # (N,) invariant: the law of the sample stays equivariant
            noise = noise * speed.view(-1, *([1] * (noise.dim() - 1)))
        if noise is not None and self.noise_into == "features":
            h = h + self.noise_embedding(noise).to(x.dtype)
            noise = None  # the layers see it through h only
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h, x, z, s = layer(h, x, v, e, z, s, ctx, pool, final=index == last, noise=noise)
        return ModelOutput(positions=self.add_gravity(x, batch, h), virtual_positions=z)

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise of one sampled jump, standard normal: (N, K, 3) vectors (model length units)
        for ``noise_into="coordinates"``, (N, K) scalars for "features". From torch's global
        generator: seed it (``torch.manual_seed``) for a reproducible rollout."""
        shape = (x.shape[0], self.noise_channels) + ((3,) if self.noise_into == "coordinates" else ())
        return torch.randn(shape, dtype=x.dtype, device=x.device)

    def virtual_start(self, x: torch.Tensor, h: torch.Tensor, batch_index: torch.Tensor, pool: GraphPool) -> torch.Tensor:
        """Z^(0), (B, C, 3), from real positions x (N, 3) and embedded features h (N, hidden).

        "centroid" (the paper's Eq. 2): every channel at the graph's centre of mass. All C
        channels then coincide, and coincident nodes are a stationary point of Eq. 10: its
        repulsion k(z_c, z_c') has zero gradient at zero distance and its attraction pulls every
        channel the same way, so the MMD term cannot separate them (benchmarks/RESULTS.md,
        "virtual nodes"). "weighted": channel c starts at sum_i w_ic x_i, with w_ic a softmax
        over the graph's nodes of invariant logits of h_i; still E(3)-equivariant and
        permutation-invariant (weights are invariant and sum to 1), and the channels differ.
        """
        if self.virtual_init == "centroid":
            return pool.mean(x).unsqueeze(1).expand(pool.num_graphs, self.virtual_nodes, 3)
        logits = self.virtual_weighting(h).to(x.dtype)  # (N, C') invariant; softmax in x's dtype
        width = logits.shape[1]
        index = batch_index.unsqueeze(1).expand(-1, width)
        top = logits.new_full((pool.num_graphs, width), float("-inf")).scatter_reduce(
            0, index, logits, reduce="amax", include_self=True)
        weights = torch.exp(logits - top.index_select(0, batch_index))  # per-graph max: no overflow
        weights = weights / pool.sum_into(weights.new_zeros((pool.num_graphs, width)), weights).index_select(0, batch_index)
        weighted = (weights.unsqueeze(-1) * x.unsqueeze(1)).flatten(1)  # (N, C' * 3)
        z = pool.sum_into(x.new_zeros((pool.num_graphs, width * 3)), weighted).view(pool.num_graphs, width, 3)
        return z.expand(pool.num_graphs, self.virtual_nodes, 3) if width == 1 else z


def _check_at_least(name: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")


def _check_one_of(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class GlobalNodesFastEGNN(FastEGNN):
    """Ablation (paper Table 2, "w/ Global Nodes"): virtual nodes as an unordered set."""

    name = "global_nodes"
    ordered = False
