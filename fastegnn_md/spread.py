"""The spread of a learned jump: a Gaussian around the model's mean, fitted to held-out residuals.

A jump trained with MSE predicts the conditional mean of the next frame; applied again and again
it removes the fluctuations MD has. `JumpSpread` turns the mean into a distribution:

    x_{t+Δt} = μ + ε,   each Cartesian column of ε (N, 3) drawn independently from N(0, K),
    K_ij = σ_i σ_j [ (1 − a − g) δ_ij + a exp(−r_ij² / 2ℓ²) + g ]

* σ_i (length unit of the checkpoint, Å for MD) is an **invariant per-node scale**:
  ``log σ_i² = b + w · z_i`` with z_i the standardised invariants of `node_invariants` (the
  predicted displacement |μ_i − x_i|, the displacement over the previous jump |v_i|Δt, how packed
  the node's surroundings are, and the node attributes).
* r_ij are the distances at the jump's start. ``a`` is the part of the variance that nearby
  nodes share over a length ℓ (a backbone moves in pieces: independent noise of 0.5 Å per atom
  would break every bond), ``g`` the part all nodes share (a common translation).

Why not the paper: FastEGNN is deterministic. Every method that jumps ≥ 1 ps samples the next
state from a learned distribution (docs/architecture.md, "Stochastic jumps"); this is the
smallest such distribution that is equivariant and can be checked: it is **fitted after
training, on the checkpoint's validation frames** (residuals the model never trained on), by
maximum likelihood for σ (a convex problem: a Gaussian log-linear variance model) and by least
squares of the residuals' correlation against distance for (a, g, ℓ).

Equivariance: K depends on distances and invariants only, and the three columns of ε share it,
so rotating, reflecting or translating the input rotates (or leaves) the law of the sample the
same way, and permuting nodes permutes K. It is equivariant **in distribution**; a fixed seed
does not give rotated samples for a rotated input (there is no canonical frame to draw in).

Nodes that do not move (SPH walls) get no noise. Sampling factorises K (O(N³)), so it is meant
for proteins and small systems: more than `MAX_SAMPLED_NODES` moving nodes is an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from scipy.optimize import least_squares, minimize
from scipy.spatial import cKDTree

#: Nodes beyond which `JumpSpread.sample` refuses (a dense Cholesky per jump).
MAX_SAMPLED_NODES = 5000
#: The named invariants before the node-attribute columns (`node_invariants`).
NAMED_INVARIANTS = ("log predicted displacement", "log previous displacement", "log packing")
#: Gaussian coverage of one component: P(|z| < 1), P(|z| < 2).
GAUSSIAN_WITHIN = (0.6826894921370859, 0.9544997361036416)
SPREAD_FORMAT = "fastegnn-md jump spread v1"


def node_invariants(
    positions: np.ndarray, mean: np.ndarray, velocities: np.ndarray, node_attrs: np.ndarray, dt: float,
    packing_radius: float,
) -> np.ndarray:
    """Per-node invariants (N, 3 + F) the spread's scale is a function of.

    positions, mean (the model's prediction), velocities: (N, 3) in the checkpoint's units;
    node_attrs (N, F). Columns: log(|mean − x| + ρ/20), log(|v|·dt + ρ/20) (logarithms: σ grows
    as a power of a displacement, so one fast atom cannot blow its σ up exponentially), log(1 +
    Σ_{j≠i} exp(−r_ij² / 2ρ²)) with ρ = ``packing_radius`` (a smooth neighbour count: buried
    atoms move less than exposed ones), then the node attributes as given.
    """
    x = np.asarray(positions, np.float64)
    predicted = np.linalg.norm(np.asarray(mean, np.float64) - x, axis=1)
    previous = np.linalg.norm(np.asarray(velocities, np.float64), axis=1) * float(dt)
    packing = np.zeros(len(x))
    pairs = cKDTree(x).query_pairs(r=4.0 * packing_radius, output_type="ndarray")
    if len(pairs):
        weight = np.exp(-np.sum((x[pairs[:, 0]] - x[pairs[:, 1]]) ** 2, axis=1) / (2.0 * packing_radius**2))
        packing = np.bincount(pairs[:, 0], weight, len(x)) + np.bincount(pairs[:, 1], weight, len(x))
    attrs = np.asarray(node_attrs, np.float64).reshape(len(x), -1)
    floor = packing_radius / 20.0
    return np.column_stack([np.log(predicted + floor), np.log(previous + floor), np.log1p(packing), attrs])


def correlation_kernel(distances: np.ndarray, local: float, shared: float, length: float) -> np.ndarray:
    """The correlation part of K: ``(1 − a − g) δ + a exp(−d²/2ℓ²) + g`` for a square (N, N)
    distance matrix (a = ``local``, g = ``shared``, ℓ = ``length``)."""
    kernel = local * np.exp(-(distances**2) / (2.0 * length**2)) + shared
    kernel[np.diag_indices_from(kernel)] = 1.0
    return kernel


def _distance_matrix(x: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt(np.sum(diff * diff, axis=-1))


@dataclass
class JumpSpread:
    """A fitted spread (see the module docstring). Lengths in the checkpoint's unit.

    intercept, weights : the log-variance model ``log σ² = intercept + weights · (f − center)/scale``.
    center, scale : standardisation of the invariants (3 + F,).
    packing_radius : ρ of `node_invariants`. local, shared, length : a, g, ℓ of the kernel.
    fitted_on : what it was fitted on (files, split, node and example counts).
    calibration : the figures `calibration` measured when it was fitted (held-out data).
    geometry_cutoff : pairs of nodes closer than this at the jump's start (length unit; MD: 2.6 Å,
        the covalent bonds and bond angles of heavy atoms) keep the distance they had at the
        start after a sample is drawn (`keep_local_geometry`), as bond constraints do in MD; None:
        samples are not corrected (particles without bonds).
    """

    intercept: float
    weights: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    packing_radius: float
    local: float
    shared: float
    length: float
    fitted_on: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    geometry_cutoff: Optional[float] = None

    # -- storage (checkpoint extra) -------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("weights", "center", "scale"):
            values[name] = [float(v) for v in np.asarray(values[name]).ravel()]
        values["format"] = SPREAD_FORMAT
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "JumpSpread":
        values = dict(values)
        if values.pop("format", SPREAD_FORMAT) != SPREAD_FORMAT:
            raise ValueError("spread: written by another version of fastegnn-md")
        for name in ("weights", "center", "scale"):
            values[name] = np.asarray(values[name], dtype=np.float64)
        return cls(**values)

    # -- the distribution -----------------------------------------------------------------------

    def scales(self, invariants: np.ndarray) -> np.ndarray:
        """σ (N,) in length units from `node_invariants` (N, 3 + F)."""
        z = (np.asarray(invariants, np.float64) - self.center) / self.scale
        if z.shape[1] != len(self.weights):
            raise ValueError(
                f"node_attrs: the spread was fitted with {len(self.weights) - len(NAMED_INVARIANTS)} attribute "
                f"columns, got {z.shape[1] - len(NAMED_INVARIANTS)}"
            )
        return np.exp(0.5 * (self.intercept + z @ self.weights))

    def covariance(self, positions: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """K (N, N) in length² for nodes at ``positions`` (N, 3) with scales ``sigma`` (N,)."""
        kernel = correlation_kernel(_distance_matrix(np.asarray(positions, np.float64)), self.local, self.shared,
                                    self.length)
        return sigma[:, None] * kernel * sigma[None, :]

    def sample_noise(
        self, positions: np.ndarray, sigma: np.ndarray, rng: np.random.Generator, moving: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """One draw of ε (N, 3): columns independent, each N(0, K); zero rows where not ``moving``."""
        x = np.asarray(positions, np.float64)
        rows = np.arange(len(x)) if moving is None else np.flatnonzero(moving)
        noise = np.zeros_like(x)
        if rows.size == 0:
            return noise
        if rows.size > MAX_SAMPLED_NODES:
            raise ValueError(
                f"sampling: {rows.size} moving nodes; the correlated spread is drawn for at most "
                f"{MAX_SAMPLED_NODES} (use the mean jump for larger systems)"
            )
        cov = self.covariance(x[rows], sigma[rows])
        jitter = 1e-9 * float(np.mean(np.diag(cov)))
        factor = np.linalg.cholesky(cov + jitter * np.eye(rows.size))
        noise[rows] = factor @ rng.standard_normal((rows.size, 3))
        return noise


# -- fitting -------------------------------------------------------------------------------------


@dataclass
class Residuals:
    """What a spread is fitted and judged on: per example, the start positions (N_i, 3), the
    node invariants (N_i, 3 + F) and the residuals target − mean (N_i, 3), moving nodes only;
    ``groups`` labels each example's source (a file), so a fit can weigh sources equally."""

    positions: list[np.ndarray]
    invariants: list[np.ndarray]
    residuals: list[np.ndarray]
    groups: list[str] = field(default_factory=list)

    def node_weights(self) -> np.ndarray:
        """Per-node weights (Σ N_i,) that give every group the same total weight (mean 1): a
        data set of one large protein and many frames of a small one fits both."""
        groups = self.groups or ["all"] * len(self.residuals)
        totals: dict[str, int] = {}
        for g, r in zip(groups, self.residuals):
            totals[g] = totals.get(g, 0) + len(r)
        weights = np.concatenate([np.full(len(r), 1.0 / totals[g]) for g, r in zip(groups, self.residuals)])
        return weights * len(weights) / weights.sum()

    @property
    def num_nodes(self) -> int:
        return int(sum(len(r) for r in self.residuals))


def collect_residuals(
    starts: Sequence[np.ndarray], means: Sequence[np.ndarray], targets: Sequence[np.ndarray],
    velocities: Sequence[np.ndarray], node_attrs: Sequence[np.ndarray], dt: float, packing_radius: float,
    moving: Optional[Sequence[Optional[np.ndarray]]] = None, groups: Optional[Sequence[str]] = None,
) -> Residuals:
    """`Residuals` of examples given as lists of arrays (see `node_invariants` for units)."""
    out = Residuals([], [], [], [str(g) for g in groups] if groups is not None else [])
    for i, (x, mu, y, v, a) in enumerate(zip(starts, means, targets, velocities, node_attrs)):
        keep = slice(None) if moving is None or moving[i] is None else np.asarray(moving[i], bool)
        inv = node_invariants(x, mu, v, a, dt, packing_radius)
        out.positions.append(np.asarray(x, np.float64)[keep])
        out.invariants.append(inv[keep])
        out.residuals.append((np.asarray(y, np.float64) - np.asarray(mu, np.float64))[keep])
    return out


def _fit_log_variance(
    features: np.ndarray, squared: np.ndarray, weights: np.ndarray, ridge: float
) -> tuple[float, np.ndarray]:
    """Weighted maximum likelihood of ``|r|² ~ σ² χ²_3`` with ``log σ² = b + w·z`` (convex), ridge on w."""
    dims = features.shape[1]
    share = weights / weights.sum()

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        b, w = params[0], params[1:]
        eta = b + features @ w
        scaled = squared * np.exp(-eta)
        loss = float(share @ (1.5 * eta + 0.5 * scaled)) + 0.5 * ridge * float(w @ w)
        residual = share * (1.5 - 0.5 * scaled)  # d loss / d eta_i
        grad = np.concatenate([[residual.sum()], features.T @ residual + ridge * w])
        return loss, grad

    start = np.zeros(dims + 1)
    start[0] = np.log(max(np.mean(squared) / 3.0, 1e-12))
    result = minimize(objective, start, jac=True, method="L-BFGS-B")
    return float(result.x[0]), np.asarray(result.x[1:])


def _binned_correlation(
    positions: Sequence[np.ndarray], standardised: Sequence[np.ndarray], edges: np.ndarray, max_nodes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of u_i·u_j / 3 over node pairs binned by distance: (bin centres, means, counts)."""
    sums = np.zeros(len(edges) - 1)
    counts = np.zeros(len(edges) - 1)
    for x, u in zip(positions, standardised):
        if len(x) > max_nodes:  # pair counts grow as N²; a random subset keeps it linear per example
            keep = rng.choice(len(x), max_nodes, replace=False)
            x, u = x[keep], u[keep]
        upper = np.triu_indices(len(x), k=1)
        d = _distance_matrix(x)[upper]
        products = (u @ u.T)[upper] / 3.0
        index = np.searchsorted(edges, d, side="right") - 1
        inside = (index >= 0) & (index < len(sums))
        sums += np.bincount(index[inside], products[inside], len(sums))
        counts += np.bincount(index[inside], minlength=len(sums))
    centres = 0.5 * (edges[1:] + edges[:-1])
    seen = counts > 0
    return centres[seen], sums[seen] / counts[seen], counts[seen]


def fit_spread(
    residuals: Residuals, packing_radius: float, ridge: float = 1e-3, correlation_range: Optional[float] = None,
    max_pair_nodes: int = 1000, seed: int = 0, fitted_on: Optional[dict[str, Any]] = None,
) -> JumpSpread:
    """Fit σ (maximum likelihood) and then (a, g, ℓ) (least squares on the binned correlation of
    the standardised residuals up to ``correlation_range``, default 4 ρ) to ``residuals``."""
    if residuals.num_nodes < 10:
        raise ValueError(f"spread: {residuals.num_nodes} residual nodes are too few to fit")
    features = np.concatenate(residuals.invariants)
    squared = np.concatenate([np.sum(r * r, axis=1) for r in residuals.residuals])
    node_weights = residuals.node_weights()
    center = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant column: standardises to 0, its weight stays 0
    intercept, weights = _fit_log_variance((features - center) / scale, squared, node_weights, ridge)
    spread = JumpSpread(intercept, weights, center, scale, float(packing_radius), 0.0, 0.0, float(packing_radius))

    reach = float(correlation_range or 4.0 * packing_radius)
    edges = np.linspace(0.0, reach, 41)
    standardised = [r / spread.scales(inv)[:, None] for r, inv in zip(residuals.residuals, residuals.invariants)]
    d, c, n = _binned_correlation(residuals.positions, standardised, edges, max_pair_nodes, np.random.default_rng(seed))

    def misfit(params: np.ndarray) -> np.ndarray:
        local, shared, length = params
        return np.sqrt(n) * (local * np.exp(-(d**2) / (2 * length**2)) + shared - c)

    fit = least_squares(misfit, x0=[0.5, 0.05, packing_radius], bounds=([0, 0, reach / 200], [1, 1, 10 * reach]))
    local, shared, length = (float(v) for v in fit.x)
    total = local + shared
    if total > 0.999:  # K must keep a positive diagonal part
        local, shared = local * 0.999 / total, shared * 0.999 / total
    spread.local, spread.shared, spread.length = local, shared, length
    spread.fitted_on = dict(fitted_on or {}, nodes=residuals.num_nodes, examples=len(residuals.residuals),
                            correlation_by_distance={"distance": d.tolist(), "correlation": c.tolist()})
    return spread


def calibration(spread: JumpSpread, residuals: Residuals, whiten_examples: int = 50) -> dict[str, Any]:
    """How well ``spread`` describes ``residuals`` (held-out data): the issue's figures.

    * ``variance_ratio``: predicted / observed residual variance, Σ 3σ_i² / Σ |r_i|² (1 is ideal);
    * ``within_1sigma``, ``within_2sigma``: fraction of residual components with |r_ik| < σ_i,
      < 2σ_i (Gaussian: 0.683, 0.954);
    * ``by_scale``: the variance ratio in five bins of predicted σ (quintiles): does σ rank the
      nodes, not only the average;
    * ``whitened``: mean of r_kᵀ K⁻¹ r_k / (3N) over the first ``whiten_examples`` examples (1 when
      the correlations are right as well; larger when K misses shared motion).
    Lengths in the spread's unit.
    """
    sigma = np.concatenate([spread.scales(inv) for inv in residuals.invariants])
    r = np.concatenate(residuals.residuals)
    squared = np.sum(r * r, axis=1)
    ratio = float(np.sum(3 * sigma**2) / np.sum(squared))
    z = np.abs(r) / sigma[:, None]
    bins = np.quantile(sigma, np.linspace(0, 1, 6))
    index = np.clip(np.searchsorted(bins, sigma, side="right") - 1, 0, 4)
    by_scale = []
    for b in range(5):
        rows = index == b
        if rows.any():
            by_scale.append({"sigma_mean": float(sigma[rows].mean()),
                             "variance_ratio": float(np.sum(3 * sigma[rows] ** 2) / max(np.sum(squared[rows]), 1e-300))})
    whitened = []
    for x, inv, res in list(zip(residuals.positions, residuals.invariants, residuals.residuals))[:whiten_examples]:
        if len(x) > MAX_SAMPLED_NODES:
            continue
        cov = spread.covariance(x, spread.scales(inv))
        factor = np.linalg.cholesky(cov + 1e-9 * float(np.mean(np.diag(cov))) * np.eye(len(x)))
        solved = np.linalg.solve(factor, res)
        whitened.append(float(np.sum(solved * solved) / res.size))
    return {
        "variance_ratio": ratio,
        "within_1sigma": float(np.mean(z < 1.0)), "within_2sigma": float(np.mean(z < 2.0)),
        "gaussian_within": list(GAUSSIAN_WITHIN),
        "by_scale": by_scale,
        "whitened": float(np.mean(whitened)) if whitened else None,
        "rms_residual": float(np.sqrt(np.mean(squared) / 3.0)), "rms_sigma": float(np.sqrt(np.mean(sigma**2))),
        "nodes": int(len(sigma)), "examples": len(residuals.residuals),
    }
