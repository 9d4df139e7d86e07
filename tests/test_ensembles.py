"""Ensemble comparison (fastegnn_md.ensembles): overlaps, dihedrals, Ramachandran JS, contact
persistence, and the figures of two runs, checked on known answers and symmetries."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastegnn_md import metrics
from fastegnn_md.ensembles import (
    backbone_dihedrals,
    compare_ensembles,
    contact_persistence,
    dihedral_angles,
    histogram_overlap,
    pearson_r,
    persistence_agreement,
    ramachandran_js,
    ramachandran_pairs,
    replica_spread,
)
from fastegnn_md.geometry import random_orthogonal

#: Ideal backbone geometry (Å, degrees): bond lengths N–CA, CA–C, C–N and angles at CA, C, N.
BONDS = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329}
ANGLES = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7}
ALPHA = (-57.0, -47.0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1515)


def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, length: float, angle: float, torsion: float) -> np.ndarray:
    """The point d with |cd| = length, angle bcd = angle and dihedral abcd = torsion (degrees),
    built in the frame of a, b, c (right-handed, IUPAC sign)."""
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.stack([bc, np.cross(n, bc), n], axis=1)
    theta, tau = np.radians(angle), np.radians(torsion)
    local = length * np.array([-np.cos(theta), np.sin(theta) * np.cos(tau), np.sin(theta) * np.sin(tau)])
    return c + m @ local


def backbone_chain(phi: np.ndarray, psi: np.ndarray, omega: float = 180.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, CA, C of len(phi) residues with the given φ/ψ (degrees; φ of residue 0 and ψ of the last
    are unused): positions (3R, 3) Å, names (3R,), residue ids (3R,) from 1."""
    atoms = [np.zeros(3), np.array([BONDS["N-CA"], 0.0, 0.0])]
    t = np.radians(180.0 - ANGLES["N-CA-C"])
    atoms.append(atoms[1] + BONDS["CA-C"] * np.array([np.cos(t), np.sin(t), 0.0]))
    for i in range(1, len(phi)):
        atoms.append(place(atoms[-3], atoms[-2], atoms[-1], BONDS["C-N"], ANGLES["CA-C-N"], psi[i - 1]))
        atoms.append(place(atoms[-3], atoms[-2], atoms[-1], BONDS["N-CA"], ANGLES["C-N-CA"], omega))
        atoms.append(place(atoms[-3], atoms[-2], atoms[-1], BONDS["CA-C"], ANGLES["N-CA-C"], phi[i]))
    n = len(phi)
    return np.array(atoms), np.tile(["N", "CA", "C"], n), np.repeat(np.arange(1, n + 1), 3)


def helix(residues: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return backbone_chain(np.full(residues, ALPHA[0]), np.full(residues, ALPHA[1]))


def angular_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def noisy_run(rng: np.random.Generator, structure: np.ndarray, frames: int, sigma: float = 0.15) -> np.ndarray:
    """Frames (T, N, 3) scattered about ``structure``, each also rigidly moved at random."""
    out = []
    for _ in range(frames):
        frame = structure + rng.normal(scale=sigma, size=structure.shape)
        out.append(frame @ random_orthogonal(rng).T + rng.normal(scale=5.0, size=3))
    return np.array(out)


# --------------------------------------------------------------------------- 1-D distributions


def test_histogram_overlap_known_answers(rng):
    x = rng.normal(size=500)
    assert histogram_overlap(x, x) == pytest.approx(1.0)
    assert histogram_overlap(x, rng.permutation(x)) == pytest.approx(1.0)
    assert histogram_overlap(np.full(5, 3.0), np.full(8, 3.0)) == pytest.approx(1.0)  # zero spread
    assert histogram_overlap(rng.uniform(0, 1, 200), rng.uniform(10, 11, 300)) == 0.0
    # Two uniform halves of one interval share nothing; half-shifted they share half.
    grid = np.linspace(0.0, 1.0, 3000, endpoint=False)
    assert histogram_overlap(grid[:1500], grid[1500:], bins=2) == pytest.approx(0.0)
    assert histogram_overlap(grid[:2000], grid[1000:], bins=3) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="a contains NaN"):
        histogram_overlap([1.0, np.nan], [1.0])


def test_pearson_r_of_linear_maps_and_constant_samples(rng):
    x = rng.normal(size=40)
    assert pearson_r(x, 3.0 * x + 2.0) == pytest.approx(1.0)
    assert pearson_r(x, -0.5 * x) == pytest.approx(-1.0)
    y = rng.normal(size=40)
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    with pytest.raises(ValueError, match="b is constant"):
        pearson_r(x, np.full(40, 7.0))
    with pytest.raises(ValueError, match="same length"):
        pearson_r(x, y[:-1])


# --------------------------------------------------------------------------- dihedrals


def test_ideal_alpha_helix_has_alpha_dihedrals():
    positions, names, residues = helix(12)
    phi, psi = backbone_dihedrals(positions, names, residues)
    assert phi.shape == (11,) and psi.shape == (11,)  # φ from residue 2, ψ up to residue 11
    np.testing.assert_allclose(phi, ALPHA[0], atol=1e-6)
    np.testing.assert_allclose(psi, ALPHA[1], atol=1e-6)
    # The sign convention is not the builder's: a right-handed helix turns its CA trace the
    # positive way round, (v1 × v2) · v3 > 0 for consecutive CA–CA vectors.
    ca = positions[names == "CA"]
    v = np.diff(ca, axis=0)
    assert np.all(np.einsum("ij,ij->i", np.cross(v[:-2], v[1:-1]), v[2:]) > 0)
    # A mirror image has the opposite angles (a left-handed helix).
    phi_m, psi_m = backbone_dihedrals(positions * np.array([1.0, 1.0, -1.0]), names, residues)
    np.testing.assert_allclose(phi_m, -phi, atol=1e-6)
    np.testing.assert_allclose(psi_m, -psi, atol=1e-6)


def test_dihedrals_of_frames_and_any_angle_range():
    phi_in = np.array([0.0, -179.0, 179.0, 60.0, -120.0, 180.0, 90.0])
    psi_in = np.array([150.0, -10.0, 120.0, 170.0, -179.5, 45.0, 0.0])
    positions, names, residues = backbone_chain(phi_in, psi_in)
    frames = np.stack([positions, positions + 1.0])
    phi, psi = backbone_dihedrals(frames, names, residues)
    assert phi.shape == (2, 6) and psi.shape == (2, 6)
    assert np.all(angular_difference(phi, phi_in[1:]) < 1e-6)
    assert np.all(angular_difference(psi, psi_in[:-1]) < 1e-6)
    assert np.all((phi > -180.0) & (phi <= 180.0))
    assert dihedral_angles(*(positions[[2, 3, 4, 5]])) == pytest.approx(phi_in[1])
    assert phi[0, 4] == pytest.approx(180.0)  # +180 stays +180, never -180


def test_dihedrals_match_mdanalysis_ramachandran():
    mda = pytest.importorskip("MDAnalysis")
    from MDAnalysis.analysis.dihedrals import Ramachandran
    from MDAnalysisTests.datafiles import PDB_small  # AdK: mostly α-helices

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(PDB_small)
        expected = Ramachandran(u.select_atoms("protein")).run().results.angles[0]  # (212, 2)
    backbone = u.select_atoms("backbone")
    phi, psi = backbone_dihedrals(backbone.positions, backbone.names, backbone.resids)
    assert phi.shape == (213,) and psi.shape == (213,)  # 214 residues, one chain
    assert np.all(angular_difference(phi[:-1], expected[:, 0]) < 1e-2)  # φ of residues 2..213
    assert np.all(angular_difference(psi[1:], expected[:, 1]) < 1e-2)
    both_phi, both_psi = ramachandran_pairs(backbone.positions, backbone.names, backbone.resids)
    assert np.all(angular_difference(both_phi, expected[:, 0]) < 1e-2)
    assert np.all(angular_difference(both_psi, expected[:, 1]) < 1e-2)
    helical = (np.abs(both_phi + 63) < 25) & (np.abs(both_psi + 42) < 25)
    assert helical.mean() > 0.3  # AdK is largely helical: the convention puts them at (−60, −45)


def test_chain_break_skips_the_pair():
    positions, names, residues = helix(8)
    broken = positions.copy()
    broken[names.size // 2:] += np.array([0.0, 0.0, 30.0])  # residues 5..8 moved away: a break between 4 and 5
    phi, psi = backbone_dihedrals(broken, names, residues)
    assert phi.shape == (6,) and psi.shape == (6,)  # no φ(5), no ψ(4)
    np.testing.assert_allclose(phi, ALPHA[0], atol=1e-6)  # the rest is each half's own geometry
    phi_r, psi_r = ramachandran_pairs(broken, names, residues)
    assert phi_r.shape == (4,)  # residues 2, 3 and 6, 7 have both
    # Breaks are found in the first frame, or in the frame given as the reference.
    frames = np.stack([positions, broken])
    assert backbone_dihedrals(frames, names, residues)[0].shape == (2, 7)
    assert backbone_dihedrals(frames, names, residues, reference=broken)[0].shape == (2, 6)


def test_ramachandran_js_known_answers(rng):
    phi, psi = rng.uniform(-180, 180, (2, 50, 10))
    assert ramachandran_js(phi, psi, phi, psi) == pytest.approx(0.0, abs=1e-12)
    order = rng.permutation(50)  # frames reordered, each (φ, ψ) pair kept
    assert ramachandran_js(phi, psi, phi[order], psi[order]) == pytest.approx(0.0, abs=1e-12)
    assert ramachandran_js(phi, psi, phi, rng.permutation(psi)) > 0.05  # pairs broken up
    helix_pairs = (np.full(100, -60.0), np.full(100, -45.0))
    sheet_pairs = (np.full(80, -120.0), np.full(80, 130.0))
    assert ramachandran_js(*helix_pairs, *sheet_pairs) == pytest.approx(1.0)
    # One of two pairs shared: p = (1/2, 1/2, 0), q = (0, 1/2, 1/2) give JS = 1/2 exactly.
    p = (np.array([-60.0, 60.0]), np.array([-45.0, 45.0]))
    q = (np.array([60.0, 120.0]), np.array([45.0, 100.0]))
    assert ramachandran_js(*p, *q) == pytest.approx(0.5)
    assert ramachandran_js(*p, *q) == pytest.approx(ramachandran_js(*q, *p))
    # Periodic: 180° and −180° are the same angle, and 540° is 180°.
    assert ramachandran_js(np.array([180.0]), np.array([0.0]), np.array([-180.0]), np.array([0.0])) == 0.0
    assert ramachandran_js(np.array([540.0]), np.array([0.0]), np.array([-180.0]), np.array([0.0])) == 0.0


# --------------------------------------------------------------------------- contacts


def test_contact_persistence_static_and_alternating():
    positions, names, residues = helix(12)
    static = np.stack([positions] * 4)
    persistence = contact_persistence(static, residues)
    expected = metrics.contact_map(positions, residue_ids=residues)
    assert set(np.unique(persistence)) <= {0.0, 1.0}
    np.testing.assert_array_equal(persistence, expected.astype(float))
    assert expected.sum() > 0
    far = positions * 3.0  # stretched: fewer contacts
    alternating = contact_persistence(np.stack([positions, far, positions, far]), residues)
    np.testing.assert_allclose(alternating, 0.5 * expected + 0.5 * metrics.contact_map(far, residue_ids=residues))


def test_persistence_agreement():
    a = np.zeros((5, 5))
    a[0, 3] = a[3, 0] = 1.0
    a[1, 4] = a[4, 1] = 0.6
    a[0, 4] = a[4, 0] = 0.05  # rare in both: not compared
    same = persistence_agreement(a, a)
    assert same["mean_abs_difference"] == 0.0 and same["jaccard_persistent"] == 1.0
    assert same["pairs_compared"] == 2 and same["persistent_a"] == 2
    b = a.copy()
    b[1, 4] = b[4, 1] = 0.2  # no longer persistent
    other = persistence_agreement(a, b)
    assert other["mean_abs_difference"] == pytest.approx(0.2)  # (0 + 0.4) / 2
    assert other["jaccard_persistent"] == pytest.approx(0.5) and other["persistent_b"] == 1
    empty = persistence_agreement(np.zeros((4, 4)), np.zeros((4, 4)))
    assert empty["mean_abs_difference"] == 0.0 and empty["jaccard_persistent"] == 1.0


# --------------------------------------------------------------------------- two runs


@pytest.fixture
def runs(rng):
    positions, names, residues = helix(14)
    masses = np.tile([14.007, 12.011, 12.011], 14)
    a = noisy_run(rng, positions, 12)
    b = noisy_run(rng, positions, 9, sigma=0.25)
    energies = rng.normal(-1000.0, 20.0, 12), rng.normal(-990.0, 25.0, 9)
    return a, b, masses, names, residues, energies, positions


def _scalars(figures: dict) -> dict:
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _scalars(value).items()})
        elif isinstance(value, (int, float)) or value is None:
            out[key] = value
    return out


def test_compare_a_run_with_itself(runs):
    a, _, masses, names, residues, (ea, _), start = runs
    figures = compare_ensembles(a, a, masses, names, residues, ea, ea, start=start)
    assert figures["frames"] == [12, 12]
    assert figures["rmsf"]["pearson_r"] == pytest.approx(1.0)
    assert len(figures["rmsf"]["a"]) == 14 and figures["rmsf"]["residues"] == list(range(1, 15))
    assert figures["rg"]["overlap"] == pytest.approx(1.0) and figures["rg"]["mean_a"] == figures["rg"]["mean_b"]
    assert figures["energy"]["overlap"] == pytest.approx(1.0)
    assert figures["energy"]["mean_a"] == pytest.approx(ea.mean())
    assert figures["energy"]["sd_a"] == pytest.approx(ea.std())
    assert figures["dihedrals"]["js_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert figures["dihedrals"]["residues"] == 12
    assert figures["rmsd_from_start"]["ratio"] == pytest.approx(1.0)
    assert figures["contacts"]["mean_abs_difference"] == 0.0 and figures["contacts"]["jaccard_persistent"] == 1.0
    assert compare_ensembles(a, a, masses, names, residues)["energy"] is None


def test_compare_ensembles_figures(runs):
    a, b, masses, names, residues, (ea, eb), start = runs
    figures = compare_ensembles(a, b, masses, names, residues, ea, eb, start=start)
    rmsd_a = [metrics.kabsch_rmsd(frame, start) for frame in a]
    assert figures["rmsd_from_start"]["a"] == pytest.approx(rmsd_a)
    assert figures["rmsd_from_start"]["final_a"] == pytest.approx(np.mean(rmsd_a[-2:]))  # last 10 %: 2 of 12
    assert figures["rmsd_from_start"]["final_b"] == pytest.approx(figures["rmsd_from_start"]["b"][-1])  # 1 of 9
    assert figures["rmsd_from_start"]["ratio"] > 1.2  # b was made 1.5x as noisy
    assert figures["rmsf"]["mean_b"] > figures["rmsf"]["mean_a"]
    rg_b = metrics.radius_of_gyration(b, masses)
    assert figures["rg"]["mean_b"] == pytest.approx(rg_b.mean()) and figures["rg"]["sd_b"] == pytest.approx(rg_b.std())
    assert 0 < figures["dihedrals"]["js_divergence"] <= 1
    # Default start: frame 0 of a.
    assert compare_ensembles(a, b, masses, names, residues)["rmsd_from_start"]["a"][0] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="energies_b must have one value per frame"):
        compare_ensembles(a, b, masses, names, residues, ea, eb[:-1])


def test_figures_ignore_rigid_motions_reflections_and_frame_order(runs, rng):
    a, b, masses, names, residues, (ea, eb), start = runs
    figures = compare_ensembles(a, b, masses, names, residues, ea, eb, start=start)
    mirror = np.diag([1.0, -1.0, 1.0])

    def moved(frames: np.ndarray) -> np.ndarray:  # one mirror for all, its own rotation per frame
        return np.array([f @ mirror @ random_orthogonal(rng).T + rng.normal(size=3) for f in frames])

    again = compare_ensembles(moved(a), moved(b), masses, names, residues, ea, eb, start=start @ mirror)
    for key, value in _scalars(figures).items():
        assert again_value(again, key) == pytest.approx(value, abs=1e-9), key
    order_a, order_b = rng.permutation(len(a)), rng.permutation(len(b))
    shuffled = compare_ensembles(a[order_a], b[order_b], masses, names, residues, ea[order_a], eb[order_b], start=start)
    for key, value in _scalars(figures).items():
        if not key.startswith("rmsd_from_start"):  # a time series: its end depends on the order
            assert again_value(shuffled, key) == pytest.approx(value, abs=1e-9), key


def again_value(figures: dict, dotted: str):
    node = figures
    for key in dotted.split("."):
        node = node[key]
    return node


def test_replica_spread(runs, rng):
    a, b, masses, names, residues, (ea, eb), start = runs
    c = noisy_run(rng, start, 10)
    ec = rng.normal(-1000.0, 20.0, 10)
    spread = replica_spread([a, b, c], masses, names, residues, [ea, eb, ec], start=start)
    assert spread["replicas"] == 3 and spread["pairs"] == 3
    pairs = [compare_ensembles(x, y, masses, names, residues, ex, ey, start=start)
             for (x, ex), (y, ey) in [((a, ea), (b, eb)), ((a, ea), (c, ec)), ((b, eb), (c, ec))]]
    overlaps = [p["rg"]["overlap"] for p in pairs]
    assert spread["figures"]["rg"]["overlap"] == pytest.approx(
        {"mean": np.mean(overlaps), "min": min(overlaps), "max": max(overlaps)})
    js = [p["dihedrals"]["js_divergence"] for p in pairs]
    assert spread["figures"]["dihedrals"]["js_divergence"]["max"] == pytest.approx(max(js))
    assert "a" not in spread["figures"]["rmsf"]  # per-residue lists are not summarised
    two = replica_spread([a, b], masses, names, residues)
    assert two["pairs"] == 1 and two["figures"]["energy"] is None
    assert two["figures"]["rmsf"]["pearson_r"]["mean"] == pytest.approx(
        compare_ensembles(a, b, masses, names, residues)["rmsf"]["pearson_r"])
    with pytest.raises(ValueError, match="at least two replicas"):
        replica_spread([a], masses, names, residues)
