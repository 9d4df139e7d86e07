"""Structural metrics: superposition, RMSD, Rg, RMSF, per-residue aggregation and contact maps."""

from __future__ import annotations

import numpy as np
import pytest

from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.metrics import (
    contact_agreement,
    contact_map,
    kabsch_rmsd,
    kabsch_superpose,
    nearest_atom_distance,
    per_frame_kabsch_rmsd,
    per_frame_mse,
    per_residue,
    position_mse,
    radius_of_gyration,
    rmsf,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)


def rigid_copy(rng: np.random.Generator, points: np.ndarray, reflect: bool = False) -> np.ndarray:
    """``points`` moved by a random rotation (or improper rotation) and a random translation."""
    return points @ random_orthogonal(rng, reflect=reflect) + rng.normal(scale=10.0, size=3)


# --------------------------------------------------------------------------- MSE


def test_position_mse_is_mean_over_atoms_and_coordinates():
    reference = np.zeros((2, 3))
    predicted = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert position_mse(predicted, reference) == pytest.approx((1.0 + 4.0) / 6)


def test_position_mse_does_not_superpose(rng):
    points = rng.normal(size=(10, 3))
    assert position_mse(points + 1.0, points) == pytest.approx(1.0)


def test_per_frame_mse_matches_loop(rng):
    predicted, reference = rng.normal(size=(2, 5, 7, 3))
    expected = [position_mse(p, r) for p, r in zip(predicted, reference)]
    np.testing.assert_allclose(per_frame_mse(predicted, reference), expected, rtol=1e-12)


# --------------------------------------------------------------------------- Kabsch


def test_kabsch_rmsd_zero_for_rigid_copy(rng):
    points = rng.normal(scale=5.0, size=(20, 3))
    assert kabsch_rmsd(rigid_copy(rng, points), points) < 1e-10


def test_kabsch_superpose_recovers_the_motion(rng):
    points = rng.normal(scale=5.0, size=(20, 3))
    moved = rigid_copy(rng, points)
    rotation, translation = kabsch_superpose(points, moved)
    np.testing.assert_allclose(points @ rotation.T + translation, moved, atol=1e-10)


def test_kabsch_rmsd_not_zero_for_mirror_image(rng):
    # A random cloud is chiral: no proper rotation maps it onto its mirror image.
    points = rng.normal(scale=5.0, size=(20, 3))
    mirrored = rigid_copy(rng, points, reflect=True)
    assert kabsch_rmsd(mirrored, points) > 0.5


def test_rotation_is_proper_even_for_mirror_image(rng):
    points = rng.normal(scale=5.0, size=(20, 3))
    for reflect in (False, True):
        rotation, _ = kabsch_superpose(rigid_copy(rng, points, reflect=reflect), points)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_kabsch_rmsd_two_points_hand_value():
    # After superposition the two segments share midpoint and direction, so each end is off by
    # half the difference in length: RMSD = |4 - 1| / 2.
    mobile = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    target = np.array([[3.0, 3.0, 3.0], [3.0, 4.0, 3.0]])
    assert kabsch_rmsd(mobile, target) == pytest.approx(1.5, abs=1e-12)


def test_kabsch_rmsd_matches_mdanalysis(rng):
    rms = pytest.importorskip("MDAnalysis.analysis.rms")
    mobile, target = rng.normal(scale=3.0, size=(2, 15, 3))
    masses = rng.uniform(1.0, 32.0, size=15)
    expected = rms.rmsd(mobile, target, weights=masses, center=True, superposition=True)
    assert kabsch_rmsd(mobile, target, weights=masses) == pytest.approx(expected, rel=1e-9)


def test_weights_matter(rng):
    points = rng.normal(scale=5.0, size=(10, 3))
    moved = rigid_copy(rng, points)
    moved[0] += 3.0  # only atom 0 breaks the rigid match
    weights = np.ones(10)
    weights[0] = 0.0
    assert kabsch_rmsd(moved, points) > 0.1
    assert kabsch_rmsd(moved, points, weights=weights) < 1e-10


def test_per_frame_kabsch_rmsd_matches_loop(rng):
    predicted, reference = rng.normal(size=(2, 4, 12, 3))
    masses = rng.uniform(1.0, 16.0, size=12)
    expected = [kabsch_rmsd(p, r, weights=masses) for p, r in zip(predicted, reference)]
    np.testing.assert_allclose(per_frame_kabsch_rmsd(predicted, reference, masses), expected, rtol=1e-12)


# --------------------------------------------------------------------------- radius of gyration


def test_radius_of_gyration_hand_values():
    positions = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    assert radius_of_gyration(positions) == pytest.approx(2.0)
    # centre of mass at x = 3: (1 * 3^2 + 3 * 1^2) / 4 = 3
    assert radius_of_gyration(positions, masses=[1.0, 3.0]) == pytest.approx(np.sqrt(3.0))


def test_radius_of_gyration_rigid_invariance_and_frames(rng):
    points = rng.normal(scale=4.0, size=(30, 3))
    masses = rng.uniform(1.0, 32.0, size=30)
    frames = np.stack([points, rigid_copy(rng, points), rigid_copy(rng, points)])
    single = radius_of_gyration(points, masses)
    assert isinstance(single, float)
    np.testing.assert_allclose(radius_of_gyration(frames, masses), [single] * 3, rtol=1e-12)
    assert abs(radius_of_gyration(points) - single) > 1e-3  # mass weighting changes the value


# --------------------------------------------------------------------------- RMSF


def rigidly_moving_trajectory(rng: np.random.Generator, points: np.ndarray, n_frames: int) -> np.ndarray:
    return np.stack([rigid_copy(rng, points) for _ in range(n_frames)])


def test_rmsf_zero_for_rigid_motion(rng):
    points = rng.normal(scale=5.0, size=(25, 3))
    trajectory = rigidly_moving_trajectory(rng, points, 8)
    np.testing.assert_allclose(rmsf(trajectory), 0.0, atol=1e-10)
    assert np.all(rmsf(trajectory, superpose=False) > 0.1)  # the superposition is what removed it


def oscillating_trajectory(amplitude: float, n_frames: int = 10) -> np.ndarray:
    """Atom 0 alternates between x = +a and x = -a; a fixed tetrahedron-like frame stays put."""
    fixed = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [-2.0, -2.0, -2.0]])
    frames = np.repeat(np.vstack([np.zeros(3), fixed])[None], n_frames, axis=0)
    frames[:, 0, 0] = amplitude * np.where(np.arange(n_frames) % 2 == 0, 1.0, -1.0)
    return frames


def test_rmsf_of_oscillating_atom_without_superposition():
    values = rmsf(oscillating_trajectory(0.7), superpose=False)
    np.testing.assert_allclose(values, [0.7, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_rmsf_superposition_weighted_by_masses():
    # With zero mass on the moving atom the fit uses only the fixed atoms, so the value is exact.
    masses = np.array([0.0, 12.0, 12.0, 14.0, 16.0])
    values = rmsf(oscillating_trajectory(0.7), masses=masses)
    np.testing.assert_allclose(values, [0.7, 0.0, 0.0, 0.0, 0.0], atol=1e-10)
    # With equal weights the fit absorbs part of the motion, so the fixed atoms appear to move.
    assert rmsf(oscillating_trajectory(0.7))[1:].max() > 1e-3


def test_per_residue_non_sorted_ids():
    values = np.array([1.0, 2.0, 10.0, 3.0, 20.0, 7.0])
    residue_ids = np.array([5, 5, 2, 5, 2, 9])
    ids, means = per_residue(values, residue_ids)
    np.testing.assert_array_equal(ids, [5, 2, 9])
    np.testing.assert_allclose(means, [2.0, 15.0, 7.0])


# --------------------------------------------------------------------------- contacts


def brute_force_contact_map(positions, cutoff, residue_ids, min_separation):
    unique = list(dict.fromkeys(residue_ids.tolist()))
    index = np.array([unique.index(r) for r in residue_ids.tolist()])
    expected = np.zeros((len(unique), len(unique)), dtype=bool)
    for i in range(len(positions)):
        for j in range(len(positions)):
            a, b = index[i], index[j]
            close = np.linalg.norm(positions[i] - positions[j]) < cutoff
            if close and abs(a - b) >= max(min_separation, 1):
                expected[a, b] = True
    return expected


def test_contact_map_matches_brute_force(rng):
    positions = rng.uniform(0.0, 25.0, size=(120, 3))
    residue_ids = rng.permutation(np.repeat(np.arange(100, 130), 4))  # atoms of a residue scattered
    for min_separation in (0, 1, 3):
        result = contact_map(positions, cutoff=6.0, residue_ids=residue_ids, min_separation=min_separation)
        expected = brute_force_contact_map(positions, 6.0, residue_ids, min_separation)
        np.testing.assert_array_equal(result, expected)
        assert 0 < result.sum() < result.size - len(result)  # a non-trivial case


def test_contact_map_min_separation_and_strict_cutoff():
    chain = np.arange(8)[:, None] * np.array([3.0, 0.0, 0.0])  # atoms 3 Å apart on a line
    near = contact_map(chain, cutoff=7.0, min_separation=1)
    assert near[0, 1] and near[0, 2] and not near[0, 3]  # 6 Å < 7 Å, 9 Å is not
    assert not near.diagonal().any()
    far = contact_map(chain, cutoff=7.0, min_separation=3)
    assert not far.any()
    # exactly at the cutoff is not a contact
    assert not contact_map(chain, cutoff=6.0, min_separation=1)[0, 2]


def test_contact_agreement_hand_values():
    def symmetric(pairs):
        matrix = np.zeros((4, 4), dtype=bool)
        for i, j in pairs:
            matrix[i, j] = matrix[j, i] = True
        return matrix

    reference = symmetric([(0, 1), (0, 2), (1, 3)])
    predicted = symmetric([(0, 1), (2, 3)])
    scores = contact_agreement(predicted, reference)  # TP 1, FP 1, FN 2, TN 2 of 6 pairs
    assert scores == pytest.approx(
        {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "jaccard": 0.25, "accuracy": 0.5}
    )


def test_contact_agreement_empty_maps():
    empty = np.zeros((4, 4), dtype=bool)
    some = empty.copy()
    some[0, 2] = some[2, 0] = True
    assert contact_agreement(empty, empty) == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "jaccard": 1.0, "accuracy": 1.0
    }
    for predicted, reference in ((empty, some), (some, empty)):
        scores = contact_agreement(predicted, reference)
        assert scores == pytest.approx(
            {"precision": 0.0, "recall": 0.0, "f1": 0.0, "jaccard": 0.0, "accuracy": 5 / 6}
        )


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: position_mse(np.zeros((4, 3)), np.zeros((5, 3))), "same shape"),
        (lambda: position_mse(np.zeros((2, 4, 3)), np.zeros((2, 4, 3))), r"\(N, 3\)"),
        (lambda: per_frame_mse(np.zeros((4, 3)), np.zeros((4, 3))), r"\(T, N, 3\)"),
        (lambda: kabsch_rmsd(np.zeros((4, 2)), np.zeros((4, 2))), r"mobile must have shape \(N, 3\)"),
        (lambda: kabsch_rmsd(np.zeros((4, 3)), np.zeros((4, 3)), weights=np.ones(3)), "weights"),
        (lambda: kabsch_rmsd(np.zeros((4, 3)), np.zeros((4, 3)), weights=-np.ones(4)), "non-negative"),
        (lambda: per_frame_kabsch_rmsd(np.zeros((2, 4, 3)), np.zeros((3, 4, 3))), "same shape"),
        (lambda: radius_of_gyration(np.zeros((4, 3)), masses=np.ones(5)), "masses"),
        (lambda: rmsf(np.zeros((4, 3))), r"\(T, N, 3\)"),
        (lambda: per_residue(np.ones(3), np.arange(4)), "residue_ids"),
        (lambda: contact_map(np.zeros((4, 3)), residue_ids=np.arange(5)), "residue_ids"),
        (lambda: contact_map(np.zeros((4, 3)), cutoff=0.0), "cutoff"),
        (lambda: contact_agreement(np.zeros((3, 3), bool), np.zeros((4, 4), bool)), "same shape"),
        (lambda: contact_agreement(np.zeros((3, 4), bool), np.zeros((3, 4), bool)), "square"),
        (lambda: kabsch_rmsd(np.full((4, 3), np.nan), np.zeros((4, 3))), "NaN"),
    ],
)
def test_invalid_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_nearest_atom_distance_by_hand_per_frame():
    atoms = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    points = np.array([[3.0, 4.0, 0.0], [10.0, 0.0, 2.0], [5.0, 0.0, 0.0]])
    np.testing.assert_allclose(nearest_atom_distance(points, atoms), [5.0, 2.0, 5.0])
    frames = np.stack([atoms, atoms + [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(nearest_atom_distance(np.stack([points, points]), frames), [[5, 2, 5], [np.sqrt(29), 0, np.sqrt(29)]])
    with pytest.raises(ValueError, match="same frames"):
        nearest_atom_distance(np.stack([points] * 3), frames)
