"""Aligned scores, backbone geometry and training-frame marks in the MD rollout report (issue 14, part)."""

from __future__ import annotations

import json
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest

from fastegnn_md import metrics
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.rollouts import rollout_trajectory

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_aligned_mse_removes_exactly_the_rigid_motion():
    rng = np.random.default_rng(3)
    x = rng.normal(scale=6.0, size=(40, 3))
    moved = x @ random_orthogonal(rng) + np.array([4.0, -2.0, 9.0])
    assert metrics.aligned_mse(moved, x) < 1e-24
    assert metrics.position_mse(moved, x) > 1.0  # the lab-frame MSE counts the rigid motion
    noise = rng.normal(scale=0.3, size=x.shape)
    assert metrics.aligned_mse(x + noise, x) <= metrics.position_mse(x + noise, x)
    # Invariant to rotating and shifting the prediction as a whole.
    q = random_orthogonal(rng, reflect=False)
    assert metrics.aligned_mse((x + noise) @ q + 1.0, x) == pytest.approx(metrics.aligned_mse(x + noise, x), rel=1e-10)


def test_backbone_geometry_of_a_real_structure():
    atoms = MDAnalysis.Universe(str(SHIPPED.with_suffix(".pdb"))).select_atoms("backbone")
    geometry = metrics.backbone_geometry(atoms.positions, atoms.names, atoms.resids)
    assert {k: len(v) for k, v in geometry.items()} == {"N-CA": 214, "CA-C": 214, "C-N": 213, "CA-CA": 213,
                                                        "omega": 213}
    assert geometry["N-CA"].mean() == pytest.approx(1.47, abs=0.02)
    assert geometry["C-N"].mean() == pytest.approx(1.34, abs=0.02)
    assert 3.7 < geometry["CA-CA"].mean() < 3.9 and geometry["CA-CA"].min() > 2.8


def test_the_physical_range_is_the_mean_bond_within_10_percent_and_no_ca_clash():
    atoms = MDAnalysis.Universe(str(SHIPPED.with_suffix(".pdb"))).select_atoms("backbone")
    pairs = metrics.backbone_pairs(atoms.names, atoms.resids)
    start = metrics.backbone_distances(atoms.positions, pairs)
    assert metrics.backbone_problem(start, start) is None
    # The whole backbone shrunk about its centre: every bond and CA-CA 9 % shorter, then 11 %.
    centre = atoms.positions.mean(axis=0)
    for factor, expected in ((0.91, None), (0.89, "the mean N-CA bond is")):
        now = metrics.backbone_distances(centre + factor * (atoms.positions - centre), pairs)
        problem = metrics.backbone_problem(start, now)
        assert problem is None if expected is None else problem.startswith(expected) and "-11%" in problem
    clash = {kind: lengths.copy() for kind, lengths in start.items()}
    clash["CA-CA"][5] = 2.4
    assert "consecutive CA atoms are 2.40 Å apart" in metrics.backbone_problem(start, clash)
    assert metrics.backbone_problem(start, clash, min_ca_ca=2.0) is None


def test_omega_is_the_peptide_dihedral_and_a_cis_flip_leaves_the_physical_range():
    from MDAnalysis.lib.distances import calc_dihedrals

    atoms = MDAnalysis.Universe(str(SHIPPED.with_suffix(".pdb"))).select_atoms("backbone")
    x = atoms.positions.astype(np.float64)
    pairs = metrics.backbone_pairs(atoms.names, atoms.resids)
    start = metrics.backbone_distances(x, pairs)
    a, b, c, d = pairs["omega"]
    expected = np.degrees(calc_dihedrals(x[a], x[b], x[c], x[d]))
    np.testing.assert_allclose(start["omega"], expected, atol=1e-6)
    assert int((np.abs(start["omega"]) < 90).sum()) == 1  # AdK's one cis peptide, PHE86-PRO87
    # Turn the peptide bond after residue k by 180° about its C-N axis: every bond and angle as
    # before, the chain beyond rotated rigidly, ω now cis.
    k = 30
    c_atom, n_atom = b[k], c[k]
    axis = (x[n_atom] - x[c_atom]) / np.linalg.norm(x[n_atom] - x[c_atom])
    beyond = np.arange(len(x)) >= n_atom
    r = x[beyond] - x[n_atom]
    turned = x.copy()
    turned[beyond] = x[n_atom] + 2 * np.outer(r @ axis, axis) - r  # 180° about the axis through N
    now = metrics.backbone_distances(turned, pairs)
    for kind in ("N-CA", "CA-C", "C-N"):
        np.testing.assert_allclose(now[kind], start[kind], atol=1e-6)
    assert abs(now["omega"][k]) < 30
    problem = metrics.backbone_problem(start, now)
    assert problem is not None and problem.startswith("1 peptide bond(s) turned from trans to cis")
    # The peptide that was cis at the start may stay cis.
    assert metrics.backbone_problem(start, start) is None


def test_the_report_shows_geometry_aligned_scores_and_training_frames(tmp_path):
    with pytest.warns(UserWarning, match="the backbone left physical geometry"):
        out = rollout_trajectory(SHIPPED, None, "adk-backbone", report_dir=tmp_path / "r", progress=False,
                                 unphysical="warn")
    report = out.report
    assert out.stopped is None  # asked to roll on: noted, not a stop
    assert report["info"]["geometry_left_at_jump"] == 9
    assert any("left physical geometry" in note for note in report["notes"])
    model = report["geometry"]["mean_C-N"]["model"]
    assert model < 0.95 * report["geometry"]["mean_C-N"]["reference"]  # the shipped model shrinks its bonds
    assert report["geometry"]["cis_omega"]["reference"] == 1.0  # AdK's PHE86-PRO87, in every reference frame
    assert "cis_omega" in (tmp_path / "r" / "report.md").read_text()
    assert set(report["summary"]["mean_aligned_mse"]) == {"model", "no motion", "constant velocity"}
    for row in report["per_jump"]:
        assert row["aligned_mse"]["no motion"] <= row["mse"]["no motion"] + 1e-12
    # adk-backbone was trained on frames 0-142 of this file: jumps 1-13 from the default start 10.
    assert report["training_jumps"] == list(range(1, 14))
    assert "| 13 | 70 | 140 T |" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "versus_no_motion.png").stat().st_size > 0
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["per_jump"][13]["training_frame"] is False


def test_a_rollout_that_leaves_physical_geometry_stops_keeps_its_frames_and_exits_1(tmp_path, capsys):
    from fastegnn_md.cli import main

    code = main(["rollout", str(SHIPPED), "--checkpoint", "adk-backbone", "--report", str(tmp_path / "r"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    # adk-backbone's mean C-N bond is 10 % short at jump 9 (the warn run above): the stop comes there.
    assert "rollout stopped early: jump 9: the backbone left physical geometry: the mean" in err
    assert "--unphysical warn" in err
    predicted = MDAnalysis.Universe(str(tmp_path / "r" / "predicted.pdb"), str(tmp_path / "r" / "predicted.xtc"))
    assert len(predicted.trajectory) == 9  # the start frame and jumps 1-8; nothing after the stop
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["info"]["stopped"].startswith("jump 9: the backbone left physical geometry")
    assert report["info"]["geometry_left_at_jump"] == 9
    assert "model" in report["per_jump"][7]["mse"] and "model" not in report["per_jump"][8]["mse"]
    assert not any(note.startswith("from jump") for note in report["notes"])  # the stop note says it once
