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
    assert {k: len(v) for k, v in geometry.items()} == {"N-CA": 214, "CA-C": 214, "C-N": 213, "CA-CA": 213}
    assert geometry["N-CA"].mean() == pytest.approx(1.47, abs=0.02)
    assert geometry["C-N"].mean() == pytest.approx(1.34, abs=0.02)
    assert 3.7 < geometry["CA-CA"].mean() < 3.9 and geometry["CA-CA"].min() > 2.8


def test_the_report_shows_geometry_aligned_scores_and_training_frames(tmp_path):
    with pytest.warns(UserWarning, match="the backbone left physical geometry"):
        out = rollout_trajectory(SHIPPED, report_dir=tmp_path / "r", progress=False)
    report = out.report
    assert out.stopped is None  # noted, not yet a stop (docs/architecture.md)
    assert report["info"]["geometry_left_at_jump"] == 9
    assert any("left physical geometry" in note for note in report["notes"])
    model = report["geometry"]["mean_C-N"]["model"]
    assert model < 0.95 * report["geometry"]["mean_C-N"]["reference"]  # the shipped model shrinks its bonds
    assert set(report["summary"]["mean_aligned_mse"]) == {"model", "no motion", "constant velocity"}
    for row in report["per_jump"]:
        assert row["aligned_mse"]["no motion"] <= row["mse"]["no motion"] + 1e-12
    # adk-backbone was trained on frames 0-142 of this file: jumps 1-13 from the default start 10.
    assert report["training_jumps"] == list(range(1, 14))
    assert "| 13 | 70 | 140 T |" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "versus_no_motion.png").stat().st_size > 0
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["per_jump"][13]["training_frame"] is False
