"""Training objective of the paper (Eq. 10-11): position MSE + lambda * MMD."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .graph import local_pairs


def position_mse(
    predicted: torch.Tensor, target: torch.Tensor, moving: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean over nodes and coordinates of the squared error; (N, 3), (N, 3) -> scalar.

    This is the paper's reported MSE (length unit squared, e.g. Å^2). ``moving`` (N,) bool, if
    given, restricts the mean to the nodes the model predicts (SPH walls and other kinematic
    particles are inputs only); with no moving node the result is 0 (still differentiable).
    """
    squared = (predicted - target) ** 2
    if moving is None:
        return squared.mean()
    count = int(moving.sum()) * squared.shape[1]
    return squared[moving].sum() / max(count, 1)


def energy_score(
    sample: torch.Tensor, other: torch.Tensor, target: torch.Tensor, moving: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Energy score of two independent samples of a sampled jump, per node, mean over nodes:
    ``1/2 (|X - y| + |X' - y|) - 1/2 |X - X'|`` with |.| the Euclidean norm of a node's (3,)
    vector; (N, 3) x 3 -> scalar, length unit.

    A proper scoring rule (Gneiting & Raftery 2007): its expectation is lowest when the samples
    are drawn from the law of y, so it trains a sampled jump's spread, which MSE cannot (MSE is
    lowest for the mean, with no spread). Per node it scores each node's marginal law only.
    ``moving`` (N,) bool restricts the mean to predicted nodes, as in `position_mse`.
    """
    def norm(d: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((d * d).sum(dim=-1) + 1e-20)  # finite gradient at 0: equal samples occur at rest

    score = 0.5 * (norm(sample - target) + norm(other - target)) - 0.5 * norm(sample - other)
    if moving is None:
        return score.mean()
    return score[moving].sum() / max(int(moving.sum()), 1)


def moving_subset(
    positions: torch.Tensor, batch_index: torch.Tensor, num_graphs: int, moving: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions of the moving nodes (M, 3), moving nodes per graph (B,)) for `mmd_loss`.

    Nodes stay grouped by graph in order, as `mmd_loss` expects. Without a mask every node counts.
    """
    if moving is None:
        return positions, torch.bincount(batch_index, minlength=num_graphs)
    return positions[moving], torch.bincount(batch_index[moving], minlength=num_graphs)


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """k(a, b) = exp(-|a - b|^2 / (2 sigma^2)) for all pairs: (..., P, 3), (..., Q, 3) -> (..., P, Q)."""
    sq = ((a.unsqueeze(-2) - b.unsqueeze(-3)) ** 2).sum(-1)
    return torch.exp(-sq / (2.0 * sigma * sigma))


def sample_nodes_per_graph(
    graph_sizes: torch.Tensor, samples: int, generator: Optional[torch.Generator] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick up to ``samples`` distinct nodes of every graph, uniformly at random.

    Returns (node_index (B, S), valid (B, S) bool) where S = min(samples, largest graph);
    graphs smaller than S (also empty ones) have their extra slots marked invalid.
    """
    device = graph_sizes.device
    num_graphs = graph_sizes.shape[0]
    width = int(min(samples, int(graph_sizes.max())))
    offsets = torch.cumsum(graph_sizes, 0) - graph_sizes
    # A random key per (graph, slot) ranks the nodes; slots beyond a graph's size sort last.
    max_size = int(graph_sizes.max())
    keys = torch.rand((num_graphs, max_size), generator=generator, device=device)
    keys = keys.masked_fill(torch.arange(max_size, device=device) >= graph_sizes.unsqueeze(1), 2.0)
    local = keys.argsort(dim=1)[:, :width]
    valid = local < graph_sizes.unsqueeze(1)
    return (local + offsets.unsqueeze(1)).clamp(min=0, max=max(int(graph_sizes.sum()) - 1, 0)), valid


def mmd_loss(
    real_positions: torch.Tensor,
    virtual_positions: torch.Tensor,
    graph_sizes: torch.Tensor,
    sigma: float,
    samples: int = 100,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The paper's MMD term (Eq. 10), averaged over the graphs of a batch.

        L = 1/C^2 sum_{c,c'} k(z_c, z_c') - 1/(S C) sum_{i in sample} sum_c k(x_i, z_c)

    ``real_positions`` are the coordinates the virtual nodes are pulled towards. Following
    Eq. 11 of the paper, the trainer passes the *ground-truth* target positions X_GT (not the
    model's predicted positions) and the virtual coordinates Z^(L) of the last layer. For each
    graph a random subset of at most ``samples`` real nodes is used (Sec. 4.3), so every graph
    counts equally however many nodes it has. With a moving mask the trainer passes only the
    moving nodes' targets (`moving_subset`): walls do not pull the virtual nodes. A graph with
    no real node contributes only its virtual term.

    Shapes: real_positions (N, 3), virtual_positions (B, C, 3), graph_sizes (B,).
    """
    index, valid = sample_nodes_per_graph(graph_sizes, samples, generator)
    x = real_positions[index]  # (B, S, 3)
    z = virtual_positions
    virtual_term = rbf_kernel(z, z, sigma).mean(dim=(1, 2))  # (B,)
    cross = rbf_kernel(x, z, sigma).mean(dim=2)  # (B, S)
    weights = valid.to(cross.dtype)
    cross_term = (cross * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return (virtual_term - cross_term).mean()


def radial_distance_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    batch_index: torch.Tensor,
    num_graphs: int,
    moving: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean squared error of each node's distance to its graph's centroid; -> scalar.

        L = 1/N sum_i (|x̂_i - mean_g(x̂)| - |y_i - mean_g(y)|)^2        (length unit squared)

    Shapes: predicted, target (N, 3); batch_index (N,) graph of each node; moving (N,) bool, if
    given, keeps only the predicted nodes (for the centroids too). The local-distance term keeps
    bonds; this one keeps the envelope: a jump trained for the conditional mean pulls the
    flexible parts of a protein inward (the mean of an arc lies inside it), and applied jump
    after jump the radius of gyration falls, while sum_i |x_i - c|^2 = N Rg^2 is what this term
    holds. O(N), invariant under E(3) and permutations within a graph. With no node it is 0.
    """
    if moving is not None:
        predicted, target, batch_index = predicted[moving], target[moving], batch_index[moving]
    if predicted.shape[0] == 0:
        return predicted.sum() * 0.0
    counts = torch.bincount(batch_index, minlength=num_graphs).clamp(min=1).to(predicted.dtype)

    def radii(positions: torch.Tensor) -> torch.Tensor:
        return _centred(positions, batch_index, counts).norm(dim=1)

    return ((radii(predicted) - radii(target)) ** 2).mean()


def _centred(positions: torch.Tensor, batch_index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each node's position (N, 3) minus its graph's centroid; ``counts`` (G,) nodes per graph (≥ 1)."""
    centroids = torch.zeros((counts.shape[0], 3), dtype=positions.dtype, device=positions.device)
    centroids = centroids.index_add(0, batch_index, positions) / counts.unsqueeze(1)
    return positions - centroids[batch_index]


def _graph_mean_square(vectors: torch.Tensor, batch_index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each graph's mean of |v_i|² over its nodes: vectors (N, 3), batch_index (N,), counts (G,) ≥ 1 -> (G,)."""
    squared = (vectors**2).sum(dim=1)
    return squared.new_zeros(counts.shape[0]).index_add(0, batch_index, squared) / counts


def gyration_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    batch_index: torch.Tensor,
    num_graphs: int,
    moving: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean squared error of each graph's radius of gyration; -> scalar.

        L = 1/G sum_g (Rg(x̂_g) - Rg(y_g))^2,   Rg(x)^2 = mean_i |x_i - mean(x)|^2   (length unit squared)

    Shapes as in `radial_distance_loss` (``moving`` keeps the predicted nodes only). Why a
    graph-level term beside the per-node one: the conditional mean of a jump lies inside the
    fluctuating structure (Jensen: Rg(E[y])^2 = E[Rg(y)^2] - the mean residual variance), so a
    jump trained on position MSE shrinks Rg by ~var / (2 Rg) every jump, ~0.01-0.02 Å on AdK. Per
    atom that bias is 1/1000 of the loss and lost in the noise; averaged over a graph's atoms first,
    the noise shrinks with the graph's size while the bias stays. Invariant under E(3) and
    permutations within a graph. With no node it is 0.
    """
    if moving is not None:
        predicted, target, batch_index = predicted[moving], target[moving], batch_index[moving]

    def gyration(positions: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return _graph_mean_square(_centred(positions, batch_index, counts), batch_index, counts).sqrt()

    return _graph_statistic_mse(gyration, predicted, target, batch_index, num_graphs)


def kinetic_energy_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    start: torch.Tensor,
    batch_index: torch.Tensor,
    num_graphs: int,
    moving: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean squared log-ratio of each graph's root-mean-square displacement over the jump; -> scalar.

        s(d)_g = sqrt(mean_{i in g} |d_i|^2),   L = 1/G sum_g (log s(x̂_g - x_g) - log s(y_g - x_g))^2   (no unit)

    s is Δt times the graph's RMS speed over the jump, so s² is 2·E_kin/(N·m) Δt² for equal masses:
    the kinetic energy a rollout reports, and the term is a quarter of the squared log-ratio of
    the predicted to the observed energy. Shapes: predicted, target, start (N, 3): the jump's
    prediction, its target and its input positions; batch_index (N,); moving (N,) bool, if given,
    keeps the predicted nodes only. Why, beside the position MSE: the conditional mean of a jump
    moves less than the motion it averages (Jensen again: E|d|² = |E d|² + the residual variance),
    so a splash is damped; and where the data rest, a jump that moves every particle ten times
    more than the data costs the MSE almost nothing per particle, while its energy is a hundred
    times the data's. A ratio weighs the two alike: a linear difference of s would see only the
    fast frames (tried first: benchmarks/RESULTS.md). Invariant under E(3), permutations within a
    graph and the length unit. With no node it is 0.
    """
    if moving is not None:
        predicted, target, start, batch_index = predicted[moving], target[moving], start[moving], batch_index[moving]

    def log_rms(displacement: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        # The floor keeps the log (and its gradient) finite for a graph that does not move at all;
        # it is far below any motion a float32 jump resolves (1e-12 length units).
        return 0.5 * torch.log(_graph_mean_square(displacement, batch_index, counts) + 1e-24)

    return _graph_statistic_mse(log_rms, predicted - start, target - start, batch_index, num_graphs)


def _graph_statistic_mse(
    statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    predicted: torch.Tensor,
    target: torch.Tensor,
    batch_index: torch.Tensor,
    num_graphs: int,
) -> torch.Tensor:
    """Mean over the graphs that have nodes of (statistic(predicted) − statistic(target))²; -> scalar.

    ``statistic(vectors (N, 3), counts (G,) nodes per graph, ≥ 1) -> (G,)``; with no node the
    result is 0 and still carries ``predicted``'s gradient graph."""
    if predicted.shape[0] == 0:
        return predicted.sum() * 0.0
    counts = torch.bincount(batch_index, minlength=num_graphs).to(predicted.dtype)
    present = counts > 0
    counts = counts.clamp(min=1)
    return ((statistic(predicted, counts) - statistic(target, counts))[present] ** 2).mean()


def box_loss(
    predicted: torch.Tensor, bounds: torch.Tensor, moving: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean over nodes of the squared distance by which a node lies outside a box; -> scalar.

        L = 1/N sum_i sum_a (relu(lo_a - x̂_ia)^2 + relu(x̂_ia - hi_a)^2)      (length unit squared)

    Shapes: predicted (N, 3); bounds (3, 2), [lower, upper] per axis, in the same unit; moving
    (N,) bool, if given, keeps the predicted nodes only (walls are where they are). Zero for every
    node inside the box, so it only acts on a prediction that leaves it: water a jump carries
    through the floor is scored by the MSE as one error among thousands, while a rollout cannot
    recover a particle that has left the box (nothing in the data is ever outside it). Invariant
    under permutations; with no node it is 0.
    """
    if moving is not None:
        predicted = predicted[moving]
    if predicted.shape[0] == 0:
        return predicted.sum() * 0.0
    below = torch.relu(bounds[:, 0] - predicted)
    above = torch.relu(predicted - bounds[:, 1])
    return (below**2 + above**2).sum(dim=1).mean()


def local_distance_loss(
    predicted: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor, other: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean squared error of the distances of close pairs; (N, 3), (N, 3), (2, P) -> scalar.

        L = 1/P sum_{(i, j)} (|x̂_i - x̂_j| - |y_i - y_j|)^2        (length unit squared)

    A jump trained on position MSE alone predicts each atom's conditional mean, and the mean
    of a fluctuating bond is shorter than the bond: applied jump after jump, the structure
    shrinks (bonds, angles, CA–CA). This term asks the predicted frame to keep the target's
    local distances. It is invariant under E(3) and permutations. With no pair it is 0.

    ``other`` (N, 3), a second independent sample of a sampled jump, makes x̂'s distance the two
    samples' mean, ``1/2 (|x̂_i - x̂_j| + |x̂'_i - x̂'_j|)``: the variogram score of order 1
    (Scheuerer & Hamill 2015) on the pair distances. Besides the distances' mean it penalises half
    their variance over samples, so noise that moves neighbours independently costs and noise
    that moves them together does not: the per-node energy score cannot see that correlation.
    """
    if pairs.shape[1] == 0:
        return predicted.sum() * 0.0
    i, j = pairs
    predicted_length = (predicted[i] - predicted[j]).norm(dim=1)
    if other is not None:
        predicted_length = 0.5 * (predicted_length + (other[i] - other[j]).norm(dim=1))
    target_length = (target[i] - target[j]).norm(dim=1)
    return ((predicted_length - target_length) ** 2).mean()


def kernel_density(positions: torch.Tensor, pairs: torch.Tensor, radius: float) -> torch.Tensor:
    """Each node's neighbour density: (N, 3), (2, P) pairs i < j, h -> (N,) (dimensionless).

        rho_i = sum_{j != i, |x_i - x_j| < h} (1 - |x_i - x_j|^2 / h^2)^3

    SPH's poly6 kernel shape without its normalisation: each neighbour counts 1 at distance 0
    and 0 at h, with a zero slope there, so a pair that crosses h changes nothing abruptly.
    ``pairs`` must hold every pair closer than h (more are harmless: they weigh 0).
    """
    density = positions.new_zeros(positions.shape[0])
    if pairs.shape[1] == 0:
        return density + positions.sum() * 0.0
    i, j = pairs
    squared = ((positions[i] - positions[j]) ** 2).sum(dim=1) / radius**2
    weight = torch.clamp(1.0 - squared, min=0.0) ** 3
    return density.index_add(0, i, weight).index_add(0, j, weight)


def density_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    predicted_pairs: torch.Tensor,
    target_pairs: torch.Tensor,
    radius: float,
    moving: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean squared error of each predicted node's neighbour density (`kernel_density`); -> scalar.

        L = 1/N sum_i (rho_i(x̂) - rho_i(y))^2          (dimensionless)

    Shapes: predicted, target (N, 3); predicted_pairs, target_pairs (2, P) the pairs closer than
    ``radius`` in each frame (i < j, within one graph; walls included, so water by a wall is as
    dense as in the data); moving (N,) bool keeps the predicted nodes' densities in the mean.
    A jump trained on position MSE alone puts an uncertain particle at the mean of where it may
    go; jump after jump the shipped SPH model packed water into far denser clumps than SPH water
    (nearly incompressible) ever forms. The density of the next frame is close to certain even
    where the positions are not, so this term can ask for it without asking for the
    unpredictable. Invariant under E(3) and permutations; with no node it is 0.
    """
    error = kernel_density(predicted, predicted_pairs, radius) - kernel_density(target, target_pairs, radius)
    if moving is not None:
        error = error[moving]
    if error.shape[0] == 0:
        return predicted.sum() * 0.0
    return (error**2).mean()


def frame_density_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    graph_sizes: list[int],
    radius: float,
    moving: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """`density_loss` of ``predicted`` against ``target`` (both (N, 3), B graphs concatenated
    node-wise with ``graph_sizes`` nodes each), each frame's pairs closer than ``radius`` found on
    its own detached positions (`graph.local_pairs`, walls included); -> scalar."""

    def close(frame: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(local_pairs(frame.detach().cpu().numpy(), graph_sizes, radius), device=frame.device)

    return density_loss(predicted, target, close(predicted), close(target), radius, moving)
