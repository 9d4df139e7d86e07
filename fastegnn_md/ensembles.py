"""Comparing two ensembles of the same atoms by their distributions, not frame by frame.

Two stochastic runs from one start (two Langevin MD runs, or MD and a learned stepper) separate
within picoseconds, so the RMSD between their frames says little once both have moved. What
should agree are the distributions they sample: flexibility per residue (RMSF), size (radius of
gyration), potential energy, backbone dihedrals (φ/ψ), how far they wander from the start, and
which residue contacts persist. `compare_ensembles` computes all of these for two runs;
`replica_spread` computes them for every pair of reference replicas, so that "as close to MD as
another MD run" is a number to set the stepper's figures beside.

Pure numpy/scipy in float64; superposition, RMSF, Rg and contact maps come from `metrics`.
Conventions (as in `metrics`):

* positions are in Å, shaped ``(N, 3)`` for one frame or ``(T, N, 3)`` for a run; two runs being
  compared share the atoms but may have different numbers of frames;
* masses in amu, shaped ``(N,)``; atom names ``(N,)`` strings (``"N"``, ``"CA"``, ``"C"``, ...);
  residue ids ``(N,)`` labels, residues ordered by first appearance, which must be chain order;
* angles in degrees in (−180, 180]; energies in kJ/mol.

Malformed inputs raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import metrics

__all__ = [
    "histogram_overlap",
    "dihedral_angles",
    "backbone_dihedrals",
    "ramachandran_pairs",
    "ramachandran_js",
    "pearson_r",
    "contact_persistence",
    "persistence_agreement",
    "compare_ensembles",
    "replica_spread",
    "CHAIN_BREAK",
    "RMSF_PASSES",
    "FINAL_FRACTION",
    "CONTACT_PRESENT",
]

#: A C(i−1)–N(i) distance (Å) above this in the first frame is a chain break: no φ(i), no ψ(i−1).
CHAIN_BREAK = 2.0
#: The "final" RMSD from the start is the mean over this last fraction of the frames (at least
#: one frame), so one noisy frame does not decide it.
FINAL_FRACTION = 0.1
#: Superposition passes of the RMSF (`metrics.rmsf`): the first pass superposes on frame 0,
#: later ones on the previous mean; 8 make the result independent of the frame order to ~1e-9.
RMSF_PASSES = 8
#: `persistence_agreement` compares the pairs in contact in at least this fraction of the frames
#: of either run; the rest (never or rarely in contact in both) would dilute the difference.
CONTACT_PRESENT = 0.1


# --------------------------------------------------------------------------- 1-D distributions


def _sample(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a finite, non-empty float64 vector (any shape is flattened)."""
    try:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if x.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def histogram_overlap(a: ArrayLike, b: ArrayLike, bins: int = 30) -> float:
    """Overlap coefficient of two 1-D samples, in [0, 1].

    ``a`` (n,) and ``b`` (m,), any unit (both the same). Both are binned on ``bins`` common edges
    spanning the smallest to the largest value of either; each histogram is normalised to sum to
    1 and the overlap is ``sum_k min(p_k, q_k)``: 1 for identical samples, 0 when no bin holds
    values of both (samples far apart compared with the span / ``bins``).
    """
    x, y = _sample(a, "a"), _sample(b, "b")
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    edges = np.histogram_bin_edges(np.concatenate([x, y]), bins=int(bins))
    p = np.histogram(x, bins=edges)[0] / x.size
    q = np.histogram(y, bins=edges)[0] / y.size
    return float(np.minimum(p, q).sum())


def pearson_r(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson correlation coefficient of two paired samples ``a`` (n,) and ``b`` (n,), n ≥ 2.

    Raises ValueError (instead of returning NaN) when the lengths differ or either sample is
    constant, where the coefficient is undefined.
    """
    x, y = _sample(a, "a"), _sample(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError("pearson_r needs at least two paired values")
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(dx @ dx)), math.sqrt(float(dy @ dy))
    for name, s, v in (("a", sx, x), ("b", sy, y)):
        if s <= 1e-12 * max(1.0, float(np.abs(v).max())):
            raise ValueError(f"pearson_r: {name} is constant, the correlation is undefined")
    return float(np.clip((dx @ dy) / (sx * sy), -1.0, 1.0))


def _mean_sd(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "sd": float(values.std())}


# --------------------------------------------------------------------------- backbone dihedrals


def dihedral_angles(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral angle (degrees, (−180, 180]) of the points p0-p1-p2-p3, each (..., 3), Å.

    IUPAC convention: looking along p1→p2, the angle that turns p0 onto p3, positive clockwise
    (an α-helix has φ ≈ −60°, ψ ≈ −45°). Returns the broadcast shape without the last axis.
    """
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("...i,...i->...", b1, n2)
    x = np.einsum("...i,...i->...", n1, n2)
    angle = np.degrees(np.arctan2(y, x))
    return np.where(angle <= -180.0, angle + 360.0, angle)


def _backbone_indices(names: ArrayLike, residue_ids: ArrayLike, n_atoms: int) -> list[dict[str, int]]:
    """For each residue in order of first appearance, the index of its N, CA and C atoms (those present)."""
    names = np.asarray(names).astype(str)
    if names.shape != (n_atoms,):
        raise ValueError(f"names must have shape ({n_atoms},) to match the atoms, got {names.shape}")
    unique_ids, residue_index = metrics._first_appearance_index(residue_ids, n_atoms)
    residues: list[dict[str, int]] = [{} for _ in unique_ids]
    for atom, (name, r) in enumerate(zip(names, residue_index)):
        if name in ("N", "CA", "C"):
            residues[r].setdefault(name, atom)
    return residues


def _dihedral_quadruples(
    names: ArrayLike, residue_ids: ArrayLike, first_frame: np.ndarray, chain_break: float = CHAIN_BREAK
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Atom index quadruples of φ (R_phi, 4) and ψ (R_psi, 4), and the residue positions (0..R−1
    in order of first appearance) each angle belongs to."""
    residues = _backbone_indices(names, residue_ids, len(first_frame))
    phi, psi, phi_at, psi_at = [], [], [], []
    for i in range(1, len(residues)):
        before, here = residues[i - 1], residues[i]
        if "C" not in before or "N" not in here:
            continue
        if np.linalg.norm(first_frame[before["C"]] - first_frame[here["N"]]) > chain_break:
            continue  # a chain break: the two residues are not bonded
        if "N" in before and "CA" in before:
            psi.append((before["N"], before["CA"], before["C"], here["N"]))
            psi_at.append(i - 1)
        if "CA" in here and "C" in here:
            phi.append((before["C"], here["N"], here["CA"], here["C"]))
            phi_at.append(i)

    def as_array(rows: list, width: int) -> np.ndarray:
        return np.array(rows, dtype=np.intp).reshape(-1, width)

    return as_array(phi, 4), as_array(psi, 4), np.array(phi_at, dtype=np.intp), np.array(psi_at, dtype=np.intp)


def _frames_and_breaks(
    positions: ArrayLike, names: ArrayLike, residue_ids: ArrayLike, reference: Optional[ArrayLike]
) -> tuple[np.ndarray, bool, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    coords = metrics._as_coordinates(positions, "positions", (2, 3))
    single = coords.ndim == 2
    frames = coords[None] if single else coords
    first = frames[0] if reference is None else metrics._as_coordinates(reference, "reference", (2,))
    if first.shape != frames.shape[1:]:
        raise ValueError(f"reference must have shape {frames.shape[1:]}, got {first.shape}")
    return frames, single, _dihedral_quadruples(names, residue_ids, first)


def _angles(frames: np.ndarray, quads: np.ndarray) -> np.ndarray:
    if len(quads) == 0:
        return np.zeros((len(frames), 0))
    return dihedral_angles(*(frames[:, quads[:, k]] for k in range(4)))


def backbone_dihedrals(
    positions: ArrayLike, names: ArrayLike, residue_ids: ArrayLike, reference: Optional[ArrayLike] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone φ and ψ of every residue where they are defined, in degrees in (−180, 180].

    ``positions`` (T, N, 3) or (N, 3), Å; ``names`` (N,) atom names; ``residue_ids`` (N,) residue
    labels, residues in chain order (order of first appearance). With consecutive residues
    i−1, i, i+1: φ_i = dihedral(C_{i−1}, N_i, CA_i, C_i), ψ_i = dihedral(N_i, CA_i, C_i, N_{i+1}).
    A pair of consecutive residues whose C_{i−1}–N_i distance exceeds `CHAIN_BREAK` (2 Å) in the
    first frame (or in ``reference`` (N, 3) Å, when given) is a chain break and gives neither φ_i
    nor ψ_{i−1}; so do residues lacking N, CA or C. Returns ``(phi, psi)``: (T, R_phi) and
    (T, R_psi) for (T, N, 3) input, (R_phi,) and (R_psi,) for one frame (N, 3); residues in chain
    order (φ from the second residue of a chain, ψ up to the last but one).
    """
    frames, single, (phi_q, psi_q, _, _) = _frames_and_breaks(positions, names, residue_ids, reference)
    phi, psi = _angles(frames, phi_q), _angles(frames, psi_q)
    return (phi[0], psi[0]) if single else (phi, psi)


def ramachandran_pairs(
    positions: ArrayLike, names: ArrayLike, residue_ids: ArrayLike, reference: Optional[ArrayLike] = None
) -> tuple[np.ndarray, np.ndarray]:
    """φ and ψ of the residues that have both, (T, R) each in degrees: the points of a
    Ramachandran plot. Arguments as in `backbone_dihedrals`; one frame (N, 3) gives (R,) each."""
    frames, single, (phi_q, psi_q, phi_at, psi_at) = _frames_and_breaks(positions, names, residue_ids, reference)
    both = np.intersect1d(phi_at, psi_at)
    phi = _angles(frames, phi_q[np.isin(phi_at, both)])
    psi = _angles(frames, psi_q[np.isin(psi_at, both)])
    return (phi[0], psi[0]) if single else (phi, psi)


def _ramachandran_histogram(phi: np.ndarray, psi: np.ndarray, bins: int) -> np.ndarray:
    """Normalised 2-D histogram (bins, bins) of pooled φ/ψ pairs on the periodic square [−180, 180]²."""
    edges = np.linspace(-180.0, 180.0, bins + 1)
    def wrap(angles: np.ndarray) -> np.ndarray:  # any angle onto [−180, 180)
        return (angles + 180.0) % 360.0 - 180.0

    counts = np.histogram2d(wrap(phi), wrap(psi), bins=(edges, edges))[0]
    return counts / counts.sum()


def ramachandran_js(
    phi_a: ArrayLike, psi_a: ArrayLike, phi_b: ArrayLike, psi_b: ArrayLike, bins: int = 36
) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between two Ramachandran distributions.

    ``phi_a``, ``psi_a``: paired φ/ψ angles of run a (degrees, any shape, e.g. (T, R) from
    `ramachandran_pairs`, the two the same shape; pooled over residues and frames); likewise for
    run b. Each run's pairs are binned on a ``bins`` × ``bins`` grid over [−180, 180]² (angles are
    wrapped, so the bins are periodic). 0 for identical histograms, 1 when no bin holds pairs of
    both.
    """
    pairs = []
    for label, phi, psi in (("a", phi_a, psi_a), ("b", phi_b, psi_b)):
        f, s = _sample(phi, f"phi_{label}"), _sample(psi, f"psi_{label}")
        if f.shape != s.shape:
            raise ValueError(f"phi_{label} and psi_{label} must have the same number of angles, "
                             f"got {f.size} and {s.size}")
        pairs.append((f, s))
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    p = _ramachandran_histogram(*pairs[0], int(bins))
    q = _ramachandran_histogram(*pairs[1], int(bins))
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0))


# --------------------------------------------------------------------------- contacts


def contact_persistence(
    frames: ArrayLike, residue_ids: ArrayLike, cutoff: float = 8.0, min_separation: int = 3
) -> np.ndarray:
    """Fraction of frames in which each residue pair is in contact, (R, R) float64 in [0, 1].

    ``frames`` (T, N, 3) Å; ``residue_ids`` (N,); ``cutoff`` Å and ``min_separation`` (residue
    positions) as in `metrics.contact_map`, which is applied to every frame. Residues in order
    of first appearance; symmetric, zero on the diagonal and near it.
    """
    coords = metrics._as_coordinates(frames, "frames", (3,))
    total = None
    for frame in coords:
        contacts = metrics.contact_map(frame, cutoff=cutoff, residue_ids=residue_ids, min_separation=min_separation)
        total = contacts.astype(np.float64) if total is None else total + contacts
    return total / len(coords)


def persistence_agreement(p_a: ArrayLike, p_b: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """How two contact-persistence maps (R, R) of `contact_persistence` agree.

    Only the strict upper triangle is read. Returns

    * ``mean_abs_difference``: mean |p_a − p_b| over the pairs in contact in at least
      `CONTACT_PRESENT` (10 %) of the frames of either run (0.0 when there are none), and
      ``pairs_compared``, their number;
    * ``jaccard_persistent``: Jaccard index of the pairs persistent (≥ ``threshold``) in a and in
      b (1.0 when neither has any), with ``persistent_a`` and ``persistent_b``, their numbers.
    """
    a, b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise ValueError(f"p_a and p_b must be square maps of the same shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("p_a and p_b must be finite")
    upper = np.triu_indices(len(a), k=1)
    x, y = a[upper], b[upper]
    present = (x >= CONTACT_PRESENT) | (y >= CONTACT_PRESENT)
    persistent_a, persistent_b = a >= threshold, b >= threshold
    return {
        "mean_abs_difference": float(np.abs(x - y)[present].mean()) if present.any() else 0.0,
        "pairs_compared": int(present.sum()),
        "jaccard_persistent": metrics.contact_agreement(persistent_a, persistent_b)["jaccard"],
        "persistent_a": int(np.sum(persistent_a[upper])),
        "persistent_b": int(np.sum(persistent_b[upper])),
        "threshold": float(threshold),
    }


# --------------------------------------------------------------------------- two ensembles


def _final(series: np.ndarray) -> float:
    """Mean of the last `FINAL_FRACTION` of a series (at least its last value)."""
    n = max(1, int(math.ceil(FINAL_FRACTION * len(series))))
    return float(series[-n:].mean())


def _energies(values: Optional[ArrayLike], frames: int, name: str) -> Optional[np.ndarray]:
    if values is None:
        return None
    e = _sample(values, name)
    if e.size != frames:
        raise ValueError(f"{name} must have one value per frame ({frames}), got {e.size}")
    return e


def compare_ensembles(
    frames_a: ArrayLike,
    frames_b: ArrayLike,
    masses: ArrayLike,
    names: ArrayLike,
    residue_ids: ArrayLike,
    energies_a: Optional[ArrayLike] = None,
    energies_b: Optional[ArrayLike] = None,
    start: Optional[ArrayLike] = None,
) -> dict[str, Any]:
    """The distributions of two runs of the same atoms, side by side (run a is the reference).

    ``frames_a`` (T_a, N, 3) and ``frames_b`` (T_b, N, 3), Å, T ≥ 2 each (T_a and T_b may
    differ; frame order does not matter except for the RMSD series); ``masses`` (N,) amu;
    ``names``, ``residue_ids`` (N,); ``energies_a`` (T_a,) and ``energies_b`` (T_b,) potential
    energies in kJ/mol, optional; ``start`` (N, 3) Å, the structure both runs started from
    (default frame 0 of a). Returns a JSON-ready dict:

    * ``frames``: [T_a, T_b];
    * ``rmsf``: per-residue RMSF (Å) of each run (``a``, ``b`` lists, ``residues`` the ids) and
      ``pearson_r`` between them (None if one profile is flat). Each run is superposed on its own
      mean structure (mass-weighted, `metrics.rmsf` with `RMSF_PASSES`); a residue's value is
      the mean RMSF of all its atoms (works for any selection: CA only, backbone, heavy atoms);
    * ``rg``: radius of gyration (Å, mass-weighted): ``mean_a``, ``sd_a``, ``mean_b``, ``sd_b``
      (SD over the frames, ddof 0) and the ``overlap`` of the two distributions
      (`histogram_overlap`);
    * ``energy``: the same for the potential energies (kJ/mol), None without them;
    * ``dihedrals``: ``js_divergence`` of the φ/ψ distributions (`ramachandran_js`, residues with
      both angles, chain breaks found in ``start`` so both runs use the same residues) and
      ``residues``, their number; None without backbone atoms N, CA, C;
    * ``rmsd_from_start``: Kabsch RMSD (Å, unweighted: every atom counts as in
      `metrics.kabsch_rmsd`) of every frame from ``start``: series ``a``, ``b``; ``final_a``,
      ``final_b`` the mean over the last `FINAL_FRACTION` (10 %) of the frames, at least one;
      ``ratio`` = final_b / final_a (None if final_a is 0);
    * ``contacts``: `persistence_agreement` of the two runs' `contact_persistence` maps (8 Å,
      residues at least 3 apart).

    Every figure is invariant under rigid motions of the frames (a different proper one per frame;
    a reflection too if applied to every frame and to ``start``) and, except the RMSD series,
    under a permutation of the frames.
    """
    a = metrics._as_coordinates(frames_a, "frames_a", (3,))
    b = metrics._as_coordinates(frames_b, "frames_b", (3,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frames_a and frames_b must have the same atoms, got {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each run needs at least 2 frames, got {len(a)} and {len(b)}")
    n_atoms = a.shape[1]
    m = np.asarray(masses, dtype=np.float64)
    if m.shape != (n_atoms,):
        raise ValueError(f"masses must have shape ({n_atoms},), got {m.shape}")
    ea = _energies(energies_a, len(a), "energies_a")
    eb = _energies(energies_b, len(b), "energies_b")
    reference = a[0] if start is None else metrics._as_coordinates(start, "start", (2,))
    if reference.shape != (n_atoms, 3):
        raise ValueError(f"start must have shape ({n_atoms}, 3), got {reference.shape}")

    residues, rmsf_a = metrics.per_residue(metrics.rmsf(a, m, iterations=RMSF_PASSES), residue_ids)
    _, rmsf_b = metrics.per_residue(metrics.rmsf(b, m, iterations=RMSF_PASSES), residue_ids)
    try:
        rmsf_r: Optional[float] = pearson_r(rmsf_a, rmsf_b)
    except ValueError:
        rmsf_r = None

    def distribution(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        sa, sb = _mean_sd(x), _mean_sd(y)
        return {"mean_a": sa["mean"], "sd_a": sa["sd"], "mean_b": sb["mean"], "sd_b": sb["sd"],
                "overlap": histogram_overlap(x, y)}

    rg = distribution(metrics.radius_of_gyration(a, m), metrics.radius_of_gyration(b, m))
    energy = None if ea is None or eb is None else distribution(ea, eb)

    phi_a, psi_a = ramachandran_pairs(a, names, residue_ids, reference=reference)
    phi_b, psi_b = ramachandran_pairs(b, names, residue_ids, reference=reference)
    dihedrals = None
    if phi_a.shape[1]:
        dihedrals = {"js_divergence": ramachandran_js(phi_a, psi_a, phi_b, psi_b), "residues": int(phi_a.shape[1])}

    rmsd_a = metrics.per_frame_kabsch_rmsd(a, np.broadcast_to(reference, a.shape))
    rmsd_b = metrics.per_frame_kabsch_rmsd(b, np.broadcast_to(reference, b.shape))
    final_a, final_b = _final(rmsd_a), _final(rmsd_b)

    contacts = persistence_agreement(contact_persistence(a, residue_ids), contact_persistence(b, residue_ids))
    return {
        "frames": [len(a), len(b)],
        "rmsf": {"residues": residues.tolist(), "a": rmsf_a.tolist(), "b": rmsf_b.tolist(), "pearson_r": rmsf_r,
                 "mean_a": float(rmsf_a.mean()), "mean_b": float(rmsf_b.mean())},
        "rg": rg,
        "energy": energy,
        "dihedrals": dihedrals,
        "rmsd_from_start": {"a": rmsd_a.tolist(), "b": rmsd_b.tolist(), "final_a": final_a, "final_b": final_b,
                            "ratio": final_b / final_a if final_a > 0 else None},
        "contacts": contacts,
    }


def _scalars(figures: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Optional[float]]:
    """The scalar leaves of a `compare_ensembles` dict by their key path (lists are skipped)."""
    if isinstance(figures, dict):
        out: dict[tuple[str, ...], Optional[float]] = {}
        for key, value in figures.items():
            out.update(_scalars(value, prefix + (key,)))
        return out
    if figures is None or isinstance(figures, (int, float)) and not isinstance(figures, bool):
        return {prefix: None if figures is None else float(figures)}
    return {}


def replica_spread(
    replicas: Sequence[ArrayLike],
    masses: ArrayLike,
    names: ArrayLike,
    residue_ids: ArrayLike,
    energies: Optional[Sequence[ArrayLike]] = None,
    start: Optional[ArrayLike] = None,
) -> dict[str, Any]:
    """`compare_ensembles` of every pair of replicas (i < j, i as run a), summarised.

    ``replicas``: at least two runs (T_k, N, 3) Å of the same atoms, e.g. reference MD with
    different Langevin seeds; ``energies``: optional one (T_k,) array (kJ/mol) per replica;
    ``start`` (N, 3) Å, default frame 0 of the first replica (shared by every pair, so RMSDs from
    the start are comparable). Returns ``{"replicas": n, "pairs": n(n−1)/2, "figures": {...}}``
    where ``figures`` mirrors the scalar entries of `compare_ensembles` (lists dropped), each
    replaced by ``{"mean", "min", "max"}`` over the pairs (None where a pair has no value).
    """
    if len(replicas) < 2:
        raise ValueError(f"replica_spread needs at least two replicas, got {len(replicas)}")
    if energies is not None and len(energies) != len(replicas):
        raise ValueError(f"energies must have one entry per replica ({len(replicas)}), got {len(energies)}")
    start = metrics._as_coordinates(replicas[0], "replicas[0]", (3,))[0] if start is None else start
    collected: dict[tuple[str, ...], list[Optional[float]]] = {}
    pairs = list(itertools.combinations(range(len(replicas)), 2))
    for i, j in pairs:
        figures = compare_ensembles(
            replicas[i], replicas[j], masses, names, residue_ids,
            None if energies is None else energies[i], None if energies is None else energies[j], start=start,
        )
        for path, value in _scalars(figures).items():
            collected.setdefault(path, []).append(value)
    summary: dict[str, Any] = {}
    for path, values in collected.items():
        node = summary
        for key in path[:-1]:
            node = node.setdefault(key, {})
        known = [v for v in values if v is not None]
        node[path[-1]] = (
            {"mean": float(np.mean(known)), "min": float(np.min(known)), "max": float(np.max(known))} if known
            else None
        )
    return {"replicas": len(replicas), "pairs": len(pairs), "figures": summary}
