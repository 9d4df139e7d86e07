"""Structural metrics for comparing predicted and reference protein trajectories.

Pure numpy/scipy in float64. Why not MDAnalysis' own analyses (measured here, 856 atoms): its
QCP superposition (`MDAnalysis.analysis.rms.rmsd`, `align.rotation_matrix`) is 1.7x faster per
frame and agrees with the SVD below to 1e-13 Å on generic frames (`benchmarks/superposition.py`), but it takes the RMSD from an
eigenvalue, E0 − 2λ, which cancels near zero (an exact rigid copy scores 1.5e-7 Å instead of
0), and on a degenerate geometry (two points) its rotation is not the optimum (superposed with
it, segments 4 Å and 1 Å long score 2.06 Å; the exact value 1.5 Å). The batched SVD Kabsch here is exact in both cases and
tested against MDAnalysis on generic frames (tests/test_metrics.py). Radius of gyration, RMSF
and contacts: MDAnalysis offers them only for a Universe's AtomGroup frame by frame (or as an
analysis over a trajectory), while reports score plain (T, N, 3) arrays; RMSF here is the
superposition onto the mean structure with a fixed number of passes (`align.iterative_average`
iterates to a tolerance instead). Conventions used throughout:

* positions are in Å, shaped ``(N, 3)`` for one frame or ``(T, N, 3)`` for a trajectory;
* masses (or any per-atom weights) are in amu, shaped ``(N,)``, non-negative with a positive sum;
* a rotation ``R`` acts on row vectors as ``x @ R.T`` (equivalently ``R @ x`` for a column vector).

Malformed inputs raise ``ValueError`` naming the argument and the shape that was expected.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

__all__ = [
    "position_mse",
    "per_frame_mse",
    "kabsch_superpose",
    "kabsch_rmsd",
    "per_frame_kabsch_rmsd",
    "aligned_mse",
    "superpose_onto",
    "backbone_pairs",
    "backbone_distances",
    "backbone_problem",
    "dihedral_degrees",
    "peptide_plane_pairs",
    "backbone_geometry",
    "radius_of_gyration",
    "nearest_atom_distance",
    "rmsf",
    "per_residue",
    "contact_map",
    "contact_agreement",
]

_SHAPE_NAMES = {2: "(N, 3)", 3: "(T, N, 3)"}


# --------------------------------------------------------------------------- validation


def _as_coordinates(array: ArrayLike, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``array`` as a finite float64 array of shape (N, 3) or (T, N, 3) (whichever ``ndims`` allows)."""
    try:
        coords = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    expected = " or ".join(_SHAPE_NAMES[n] for n in ndims)
    if coords.ndim not in ndims or coords.shape[-1] != 3:
        raise ValueError(f"{name} must have shape {expected}, got {coords.shape}")
    if coords.shape[-2] == 0 or coords.size == 0:
        raise ValueError(f"{name} must contain at least one atom (and frame), got shape {coords.shape}")
    if not np.all(np.isfinite(coords)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return coords


def _require_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def _weight_fractions(weights: ArrayLike | None, n_atoms: int, name: str = "weights") -> np.ndarray:
    """Per-atom weights normalised to sum to 1, shape (N,); uniform when ``weights`` is None."""
    if weights is None:
        return np.full(n_atoms, 1.0 / n_atoms)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_atoms,):
        raise ValueError(f"{name} must have shape ({n_atoms},) to match the atoms, got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"{name} must have a positive sum")
    return w / total


def _first_appearance_index(residue_ids: ArrayLike, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique residue ids in order of first appearance (R,) and each atom's index into them (N,)."""
    ids = np.asarray(residue_ids)
    if ids.shape != (n_atoms,):
        raise ValueError(f"residue_ids must have shape ({n_atoms},) to match the atoms, got {ids.shape}")
    unique_sorted, first_atom, inverse = np.unique(ids, return_index=True, return_inverse=True)
    # np.unique sorts; reorder so residues keep the order in which the topology lists them.
    order = np.argsort(first_atom, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return unique_sorted[order], rank[inverse.reshape(-1)]


# --------------------------------------------------------------------------- plain MSE


def position_mse(predicted: ArrayLike, reference: ArrayLike) -> float:
    """Mean squared coordinate error of one frame, in Å², without superposition.

    ``predicted`` and ``reference`` have shape (N, 3); the mean runs over the N atoms and the
    3 coordinates (the same quantity as the training loss). For trajectories use
    :func:`per_frame_mse`; (T, N, 3) input is rejected here so a frame axis is never averaged away
    by accident.
    """
    pred = _as_coordinates(predicted, "predicted", (2,))
    ref = _as_coordinates(reference, "reference", (2,))
    _require_same_shape(pred, ref, "predicted", "reference")
    return float(np.mean((pred - ref) ** 2))


def per_frame_mse(predicted: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """:func:`position_mse` of every frame: (T, N, 3) and (T, N, 3) -> (T,) in Å²."""
    pred = _as_coordinates(predicted, "predicted", (3,))
    ref = _as_coordinates(reference, "reference", (3,))
    _require_same_shape(pred, ref, "predicted", "reference")
    return np.mean((pred - ref) ** 2, axis=(1, 2))


# --------------------------------------------------------------------------- Kabsch superposition


def _kabsch_batch(
    mobile: np.ndarray, target: np.ndarray, weight_fractions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best proper rotations (T, 3, 3) and translations (T, 3) taking each mobile frame onto its
    target frame; both (T, N, 3), weights (N,) summing to 1."""
    mobile_center = np.einsum("n,tnc->tc", weight_fractions, mobile)
    target_center = np.einsum("n,tnc->tc", weight_fractions, target)
    p = mobile - mobile_center[:, None, :]
    q = target - target_center[:, None, :]
    covariance = np.einsum("n,tni,tnj->tij", weight_fractions, p, q)  # P^T W Q
    u, _, vt = np.linalg.svd(covariance)
    v, ut = np.swapaxes(vt, 1, 2), np.swapaxes(u, 1, 2)
    # V U^T may be a reflection (det -1); flipping the axis of the smallest singular value gives
    # the best proper rotation instead, since a mirror image is not a rigid motion.
    handedness = np.sign(np.linalg.det(v @ ut))
    correction = np.ones((len(covariance), 3))
    correction[:, 2] = handedness
    rotation = (v * correction[:, None, :]) @ ut
    translation = target_center - np.einsum("tij,tj->ti", rotation, mobile_center)
    return rotation, translation


def _superposed_rmsd(mobile: np.ndarray, target: np.ndarray, weight_fractions: np.ndarray) -> np.ndarray:
    """Weighted RMSD after optimal superposition of each frame: (T, N, 3) twice -> (T,) in Å."""
    rotation, translation = _kabsch_batch(mobile, target, weight_fractions)
    aligned = np.einsum("tnj,tij->tni", mobile, rotation) + translation[:, None, :]
    squared = np.sum((aligned - target) ** 2, axis=2)
    return np.sqrt(squared @ weight_fractions)


def kabsch_superpose(
    mobile: ArrayLike, target: ArrayLike, weights: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Proper rotation and translation that best superpose ``mobile`` onto ``target`` (Kabsch).

    ``mobile`` and ``target``: (N, 3) in Å; ``weights``: optional (N,) per-atom weights such as
    masses in amu (uniform if None). Returns ``rotation`` (3, 3) with det +1 and ``translation``
    (3,) in Å minimising the weighted squared deviation of ``mobile @ rotation.T + translation``
    from ``target``. Reflections are never returned, even when a mirror image would fit better.
    """
    mob = _as_coordinates(mobile, "mobile", (2,))
    tgt = _as_coordinates(target, "target", (2,))
    _require_same_shape(mob, tgt, "mobile", "target")
    rotation, translation = _kabsch_batch(mob[None], tgt[None], _weight_fractions(weights, len(mob)))
    return rotation[0], translation[0]


def superpose_onto(
    frames: ArrayLike, reference: ArrayLike, weights: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of ``frames`` (T, N, 3) rigidly superposed onto ``reference`` (N, 3), Å.

    Returns the superposed frames (T, N, 3) and the proper rotations (T, 3, 3) applied (rotate
    vectors such as velocities with ``v @ rotation[t].T``). ``weights`` as in `kabsch_superpose`.
    """
    mob = _as_coordinates(frames, "frames", (3,))
    ref = _as_coordinates(reference, "reference", (2,))
    if mob.shape[1:] != ref.shape:
        raise ValueError(f"frames have {mob.shape[1]} atoms, the reference {len(ref)}")
    rotation, translation = _kabsch_batch(mob, np.broadcast_to(ref, mob.shape), _weight_fractions(weights, len(ref)))
    return np.einsum("tnj,tij->tni", mob, rotation) + translation[:, None, :], rotation


def kabsch_rmsd(mobile: ArrayLike, target: ArrayLike, weights: ArrayLike | None = None) -> float:
    """RMSD in Å between ``mobile`` and ``target`` (both (N, 3), Å) after optimal rigid superposition.

    With ``weights`` (N,) (e.g. masses in amu) both the superposition and the mean are weighted:
    ``sqrt(sum_i w_i |R x_i + t - y_i|^2 / sum_i w_i)``. Only proper rotations are used.
    """
    mob = _as_coordinates(mobile, "mobile", (2,))
    tgt = _as_coordinates(target, "target", (2,))
    _require_same_shape(mob, tgt, "mobile", "target")
    return float(_superposed_rmsd(mob[None], tgt[None], _weight_fractions(weights, len(mob)))[0])


def per_frame_kabsch_rmsd(
    predicted: ArrayLike, reference: ArrayLike, weights: ArrayLike | None = None
) -> np.ndarray:
    """:func:`kabsch_rmsd` of each predicted frame against the matching reference frame.

    ``predicted`` and ``reference``: (T, N, 3) in Å; ``weights``: optional (N,). Returns (T,) in Å;
    every frame gets its own superposition.
    """
    pred = _as_coordinates(predicted, "predicted", (3,))
    ref = _as_coordinates(reference, "reference", (3,))
    _require_same_shape(pred, ref, "predicted", "reference")
    return _superposed_rmsd(pred, ref, _weight_fractions(weights, pred.shape[1]))


def aligned_mse(predicted: ArrayLike, reference: ArrayLike) -> float:
    """Mean squared coordinate error in Å² after removing the rigid motion between the frames.

    ``predicted`` is superposed onto ``reference`` (both (N, 3), Å) by the proper rotation and
    translation that minimise the squared error (`kabsch_superpose`, unweighted), then scored like
    `position_mse`. A rigid rotation of the whole molecule — which no jump model can predict
    from its inputs — then costs nothing; only internal motion is scored.
    """
    rotation, translation = kabsch_superpose(predicted, reference)
    return position_mse(np.asarray(predicted, dtype=np.float64) @ rotation.T + translation, reference)


#: Backbone distances between atoms of the same chain, by the atom names (and the residue step).
BACKBONE_BONDS = (("N", "CA", 0), ("CA", "C", 0), ("C", "N", 1), ("CA", "CA", 1))


def _atom_index(names: ArrayLike, residue_ids: ArrayLike) -> dict[tuple[int, str], int]:
    """{(residue number, atom name): atom index} of a topology; ``names``, ``residue_ids`` (N,)."""
    names = np.asarray(names).astype(str)
    ids = np.asarray(residue_ids)
    if names.ndim != 1 or ids.shape != names.shape:
        raise ValueError(f"names and residue_ids must have the same shape (N,), got {names.shape} and {ids.shape}")
    return {(int(r), n): i for i, (r, n) in enumerate(zip(ids, names))}


def backbone_pairs(names: ArrayLike, residue_ids: ArrayLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The atom index pairs of each kind of `BACKBONE_BONDS`, from the topology alone.

    ``names`` (N,) atom names; ``residue_ids`` (N,) residue numbers in chain order. Returns
    ``{"N-CA": (a, b), "CA-C": ..., "C-N": ..., "CA-CA": ..., "omega": (a, b, c, d)}`` with index
    arrays: within a residue for the first two, between residue r and the next residue r + 1 for
    the others (the peptide bond and the CA trace); "omega" holds the peptide dihedrals
    CA(r)–C(r)–N(r+1)–CA(r+1). Entries whose atoms are missing are skipped.
    Computed once per topology; `backbone_distances` then measures any frame.
    """
    index = _atom_index(names, residue_ids)
    result = {}
    for first, second, step in BACKBONE_BONDS:
        pairs = [(i, index[(r + step, second)]) for (r, n), i in index.items()
                 if n == first and (r + step, second) in index]
        result[f"{first}-{second}"] = tuple(np.array([p[k] for p in pairs], dtype=int) for k in (0, 1))
    quads = [(i, index[(r, "C")], index[(r + 1, "N")], index[(r + 1, "CA")]) for (r, n), i in index.items()
             if n == "CA" and (r, "C") in index and (r + 1, "N") in index and (r + 1, "CA") in index]
    result["omega"] = tuple(np.array([q[k] for q in quads], dtype=int) for k in range(4))
    return result


def dihedral_degrees(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The dihedral angle a–b–c–d (IUPAC sign) in degrees, (-180, 180]; inputs (M, 3) in any one unit."""
    b0, b1, b2 = a - b, c - b, d - c
    b1_unit = b1 / np.maximum(np.linalg.norm(b1, axis=1, keepdims=True), 1e-12)
    v = b0 - np.sum(b0 * b1_unit, axis=1, keepdims=True) * b1_unit
    w = b2 - np.sum(b2 * b1_unit, axis=1, keepdims=True) * b1_unit
    x = np.sum(v * w, axis=1)
    y = np.sum(np.cross(b1_unit, v) * w, axis=1)
    return np.degrees(np.arctan2(y, x))


def peptide_plane_pairs(names: ArrayLike, residue_ids: ArrayLike) -> np.ndarray:
    """Atom index pairs (P, 2) that, held at fixed distances together with the bonds and bond
    angles, keep each peptide group planar and its ω where it is: CA(r)–CA(r+1) and O(r)–CA(r+1).

    ``names``, ``residue_ids`` as in `backbone_pairs`. Bond lengths and angles (the pairs closer
    than ~2.6 Å) leave the dihedral about the C–N bond free; these two 1–4 distances fix it
    (trans: ~3.8 and ~2.8 Å; cis: ~2.9 and ~3.6 Å).
    """
    index = _atom_index(names, residue_ids)
    pairs = [(index[(r, first)], index[(r + 1, "CA")]) for (r, first) in list(index)
             if first in ("CA", "O") and (r + 1, "CA") in index and (r, "C") in index and (r + 1, "N") in index]
    return np.array(pairs, dtype=int).reshape(-1, 2)


def backbone_distances(positions: ArrayLike, pairs: dict[str, tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """The length (Å) of every pair of `backbone_pairs` in one frame ``positions`` (N, 3), Å, and
    its peptide dihedrals ω under "omega" (degrees)."""
    coords = _as_coordinates(positions, "positions", (2,))
    result = {}
    for kind, indices in pairs.items():
        if len(indices) == 4:
            result[kind] = dihedral_degrees(*(coords[i] for i in indices))
        else:
            a, b = indices
            result[kind] = np.linalg.norm(coords[a] - coords[b], axis=1)
    return result


#: The mean length of each kind of backbone bond (N–CA, CA–C, C–N) may differ from its mean in
#: a rollout's start frame by this fraction; thermal fluctuations of the mean are well under 1 %,
#: and a jump trained for the conditional mean shrinks them by ~0.7 % a jump (AdK, villin).
BOND_TOLERANCE = 0.10
#: Consecutive CA atoms closer than this (Å) clash: cis peptides bring them to ~2.9 Å, trans ~3.8 Å.
MIN_CA_CA = 2.5
#: A peptide ω with |ω| below this (degrees) is cis, above it trans.
CIS_TRANS_BOUNDARY = 90.0


def backbone_problem(
    start: dict[str, np.ndarray], now: dict[str, np.ndarray], bond_tolerance: float = BOND_TOLERANCE,
    min_ca_ca: float = MIN_CA_CA,
) -> Optional[str]:
    """Why a frame's backbone left the physical range, or None; both arguments are
    `backbone_distances` (Å) of the same pairs, in a reference (start) frame and now.

    Out of range: a kind of bond (N–CA, CA–C, C–N) whose mean length moved more than
    ``bond_tolerance`` (a fraction) from the start's, or consecutive CA atoms closer than
    ``min_ca_ca`` Å (a clash), or a peptide bond that was trans at the start (|ω| ≥ 90°) and is
    now cis (|ω| < 90°): MD at room temperature does not isomerise a peptide bond in nanoseconds
    (a barrier of ~80 kJ/mol), so a flip is a jump's artefact. The message is one line with the numbers.
    """
    for kind in ("N-CA", "CA-C", "C-N"):
        first, current = start.get(kind, np.zeros(0)), now.get(kind, np.zeros(0))
        if first.size and current.size:
            change = current.mean() / first.mean() - 1.0
            if abs(change) > bond_tolerance:
                return (f"the mean {kind} bond is {current.mean():.2f} Å, {first.mean():.2f} Å at the start "
                        f"({change:+.0%}; tolerance ±{bond_tolerance:.0%})")
    ca = now.get("CA-CA", np.zeros(0))
    if ca.size and ca.min() < min_ca_ca:
        return f"consecutive CA atoms are {ca.min():.2f} Å apart (a clash: below {min_ca_ca:g} Å)"
    first, current = start.get("omega", np.zeros(0)), now.get("omega", np.zeros(0))
    if first.size and first.shape == current.shape:
        flipped = (np.abs(first) >= CIS_TRANS_BOUNDARY) & (np.abs(current) < CIS_TRANS_BOUNDARY)
        if flipped.any():
            return (f"{int(flipped.sum())} peptide bond(s) turned from trans to cis (|ω| down to "
                    f"{np.abs(current[flipped]).min():.0f}°; trans at the start)")
    return None


def backbone_geometry(positions: ArrayLike, names: ArrayLike, residue_ids: ArrayLike) -> dict[str, np.ndarray]:
    """Backbone bond lengths and consecutive CA–CA distances of one frame, in Å, and its peptide ω.

    ``positions`` (N, 3) Å; ``names``, ``residue_ids`` as in `backbone_pairs`. Returns
    ``{"N-CA": (M,), "CA-C": (M,), "C-N": (M',), "CA-CA": (M',), "omega": (M',) degrees}``. For many frames of one
    topology, call `backbone_pairs` once and `backbone_distances` per frame.
    """
    coords = _as_coordinates(positions, "positions", (2,))
    if np.asarray(names).shape != (len(coords),):
        raise ValueError(f"names and residue_ids must have shape ({len(coords)},)")
    return backbone_distances(coords, backbone_pairs(names, residue_ids))


# --------------------------------------------------------------------------- size and flexibility


def nearest_atom_distance(points: ArrayLike, atoms: ArrayLike) -> np.ndarray:
    """Distance (Å) from each point to its nearest atom, frame by frame.

    ``points`` (C, 3) or (T, C, 3) (e.g. virtual nodes), ``atoms`` (N, 3) or (T, N, 3), Å, the
    same number of frames. Returns (C,) or (T, C).
    """
    p = _as_coordinates(points, "points", (2, 3))
    a = _as_coordinates(atoms, "atoms", (2, 3))
    if p.ndim != a.ndim or (p.ndim == 3 and len(p) != len(a)):
        raise ValueError(f"points {p.shape} and atoms {a.shape} must have the same frames")
    return np.sqrt(np.min(np.sum((p[..., :, None, :] - a[..., None, :, :]) ** 2, axis=-1), axis=-1))


def radius_of_gyration(positions: ArrayLike, masses: ArrayLike | None = None) -> float | np.ndarray:
    """Radius of gyration in Å: ``sqrt(sum_i m_i |x_i - x_com|^2 / sum_i m_i)``.

    ``positions``: (N, 3) -> float, or (T, N, 3) -> (T,), in Å. ``masses``: optional (N,) in amu;
    without them every atom counts equally (geometric radius of gyration).
    """
    coords = _as_coordinates(positions, "positions", (2, 3))
    single_frame = coords.ndim == 2
    frames = coords[None] if single_frame else coords
    w = _weight_fractions(masses, frames.shape[1], "masses")
    center = np.einsum("n,tnc->tc", w, frames)
    squared = np.sum((frames - center[:, None, :]) ** 2, axis=2)
    rg = np.sqrt(squared @ w)
    return float(rg[0]) if single_frame else rg


def _superpose_frames(frames: np.ndarray, reference: np.ndarray, weight_fractions: np.ndarray) -> np.ndarray:
    """Every frame of (T, N, 3) rigidly superposed onto one reference structure (N, 3)."""
    targets = np.broadcast_to(reference, frames.shape)
    rotation, translation = _kabsch_batch(frames, targets, weight_fractions)
    return np.einsum("tnj,tij->tni", frames, rotation) + translation[:, None, :]


def rmsf(
    positions: ArrayLike,
    masses: ArrayLike | None = None,
    superpose: bool = True,
    iterations: int = 3,
) -> np.ndarray:
    """Root-mean-square fluctuation of each atom about its mean position, in Å.

    ``positions``: (T, N, 3) in Å. Returns (N,): ``sqrt(mean_t |x_ti - mean_t x_ti|^2)``.

    With ``superpose`` (default) overall rotation and translation are removed first, so only
    internal motion counts: the first pass superposes every frame on frame 0, and each further
    pass (``iterations`` passes in total) superposes the original frames on the mean of the
    previous pass. Two or three passes converge well for folded proteins. ``masses`` (N,) in amu
    weight the superposition only; the fluctuation of each atom is its own and is not weighted.
    With ``superpose=False`` positions are used as given and ``masses`` is ignored.
    """
    frames = _as_coordinates(positions, "positions", (3,))
    if superpose:
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        w = _weight_fractions(masses, frames.shape[1], "masses")
        reference = frames[0]
        for _ in range(iterations):
            aligned = _superpose_frames(frames, reference, w)
            reference = aligned.mean(axis=0)
        frames = aligned
    deviation = frames - frames.mean(axis=0)
    return np.sqrt(np.mean(np.sum(deviation**2, axis=2), axis=0))


def per_residue(values: ArrayLike, residue_ids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean of per-atom ``values`` (N,) over the atoms of each residue.

    ``residue_ids`` (N,) labels each atom's residue (any sortable labels; atoms of one residue need
    not be contiguous). Returns the unique residue ids (R,) in order of first appearance and the
    mean value of each (R,), float64, in the units of ``values``.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError(f"values must have shape (N,) with N >= 1, got {vals.shape}")
    unique_ids, residue_index = _first_appearance_index(residue_ids, len(vals))
    totals = np.bincount(residue_index, weights=vals, minlength=len(unique_ids))
    counts = np.bincount(residue_index, minlength=len(unique_ids))
    return unique_ids, totals / counts


# --------------------------------------------------------------------------- contacts


def contact_map(
    positions: ArrayLike,
    cutoff: float = 8.0,
    residue_ids: ArrayLike | None = None,
    min_separation: int = 3,
) -> np.ndarray:
    """Residue-residue contact map, boolean and symmetric, shape (R, R).

    ``positions``: (N, 3) in Å. Residues ``a`` and ``b`` are in contact when some atom of ``a``
    and some atom of ``b`` are strictly closer than ``cutoff`` Å. ``residue_ids`` (N,) groups
    atoms into residues, ordered by first appearance; None makes every atom its own residue.
    Pairs whose residue positions (0..R-1 in that order, not the id values) differ by less than
    ``min_separation`` are set False, as is the diagonal; near-sequence neighbours are always
    close and would swamp the comparison. Neighbour search uses a k-d tree, so memory grows with
    the number of close pairs rather than N².
    """
    coords = _as_coordinates(positions, "positions", (2,))
    if not cutoff > 0:
        raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff}")
    if min_separation < 0:
        raise ValueError(f"min_separation must be >= 0, got {min_separation}")
    n_atoms = len(coords)
    ids = np.arange(n_atoms) if residue_ids is None else residue_ids
    unique_ids, residue_index = _first_appearance_index(ids, n_atoms)
    n_residues = len(unique_ids)

    pairs = cKDTree(coords).query_pairs(r=cutoff, output_type="ndarray")
    # query_pairs keeps pairs at exactly the cutoff; the definition here is "closer than".
    distances = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
    pairs = pairs[distances < cutoff]
    first, second = residue_index[pairs[:, 0]], residue_index[pairs[:, 1]]

    contacts = np.zeros((n_residues, n_residues), dtype=bool)
    contacts[first, second] = True
    contacts[second, first] = True
    position = np.arange(n_residues)
    separation = np.abs(position[:, None] - position[None, :])
    contacts &= separation >= max(min_separation, 1)
    return contacts


def _as_contact_map(array: ArrayLike, name: str) -> np.ndarray:
    """A square boolean matrix; integer 0/1 input is accepted, anything else is an error."""
    matrix = np.asarray(array)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square (R, R) matrix, got shape {matrix.shape}")
    if matrix.dtype != bool:
        if not np.all((matrix == 0) | (matrix == 1)):
            raise ValueError(f"{name} must be boolean (or contain only 0 and 1)")
        matrix = matrix.astype(bool)
    return matrix


def _ratio(numerator: int, denominator: int) -> float:
    # 0/0 only arises when the set being measured is empty while the other is not (the both-empty
    # case is handled before); counting that as no agreement keeps scores finite and pessimistic.
    return numerator / denominator if denominator else 0.0


def contact_agreement(predicted_map: ArrayLike, reference_map: ArrayLike) -> dict[str, float]:
    """How well a predicted contact map matches a reference one, both boolean (R, R).

    Only the strict upper triangle is read (the maps are symmetric; the diagonal is never a
    contact). Returns floats in [0, 1]:

    * ``precision`` = TP / predicted contacts, ``recall`` = TP / reference contacts,
      ``f1`` = 2TP / (2TP + FP + FN), ``jaccard`` = TP / (TP + FP + FN);
    * ``accuracy`` = fraction of upper-triangle pairs on which the maps agree (contact or not).

    Edge cases, never NaN: if neither map has any contact, every score is 1.0 (the maps agree
    perfectly). If exactly one map is empty, the undefined ratio (precision when nothing is
    predicted, recall when the reference is empty) is 0.0, so precision, recall, f1 and jaccard
    are all 0.0 while accuracy still counts the agreeing non-contacts. With R < 2 there are no
    pairs and every score is 1.0.
    """
    pred = _as_contact_map(predicted_map, "predicted_map")
    ref = _as_contact_map(reference_map, "reference_map")
    _require_same_shape(pred, ref, "predicted_map", "reference_map")
    upper = np.triu_indices(len(pred), k=1)
    p, r = pred[upper], ref[upper]
    true_pos = int(np.sum(p & r))
    false_pos = int(np.sum(p & ~r))
    false_neg = int(np.sum(~p & r))
    if true_pos + false_pos + false_neg == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "jaccard": 1.0, "accuracy": 1.0}
    return {
        "precision": _ratio(true_pos, true_pos + false_pos),
        "recall": _ratio(true_pos, true_pos + false_neg),
        "f1": _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
        "jaccard": _ratio(true_pos, true_pos + false_pos + false_neg),
        "accuracy": float(np.mean(p == r)),
    }
