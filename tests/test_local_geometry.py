"""Holding bonds, bond angles and peptide planes through a jump (`fastegnn_md.local_geometry`) and
the rollout option that uses it (`fastegnn-md rollout --hold-geometry`)."""

from __future__ import annotations

import json
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest

from fastegnn_md import metrics
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.local_geometry import HeldGeometry, local_pairs

ROOT = Path(__file__).resolve().parents[1]
ADK_OBC = ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc"
SPH = ROOT / "trajectories" / "sph"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def helix(n: int = 30) -> np.ndarray:
    """A 1.5 Å-bonded helix (N, 3): every atom has bond and bond-angle partners under 2.6 Å."""
    t = np.arange(n) * 1.7
    return np.column_stack([2.3 * np.cos(t), 2.3 * np.sin(t), 0.5 * np.arange(n)])


def distances(x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)


@pytest.mark.parametrize("reflect", [False, True])
def test_held_geometry_restores_the_start_distances_equivariantly(reflect):
    rng = np.random.default_rng(3)
    start = helix()
    far = np.array([[0, 20], [5, 29]])  # held by "topology" though far apart
    held = HeldGeometry(2.6, far)
    pairs = held.pairs(start)
    assert {tuple(p) for p in far} <= {tuple(p) for p in pairs}
    assert {tuple(p) for p in local_pairs(start, 2.6)} <= {tuple(p) for p in pairs}
    assert len(np.unique(pairs, axis=0)) == len(pairs) and np.all(pairs[:, 0] < pairs[:, 1])
    moved = start + 0.15 * rng.normal(size=start.shape)
    restored = held.restore(start, moved)
    np.testing.assert_allclose(distances(restored, pairs), distances(start, pairs), atol=1e-3)
    assert not np.allclose(distances(moved, pairs), distances(start, pairs), atol=1e-2)  # there was work to do
    # E(3): rotating (or reflecting) and translating start and jump moves the result the same way.
    q, t = random_orthogonal(rng, reflect=reflect), rng.normal(size=3)
    np.testing.assert_allclose(held.restore(start @ q.T + t, moved @ q.T + t), restored @ q.T + t, atol=1e-8)
    # Permutations: relabelling the atoms (and the topology's pairs) relabels the result.
    perm = rng.permutation(len(start))
    inverse = np.argsort(perm)
    permuted = HeldGeometry(2.6, inverse[far]).restore(start[perm], moved[perm])
    np.testing.assert_allclose(permuted, restored[perm], atol=1e-8)
    # Nodes that do not move stay where the jump put them.
    moving = np.ones(len(start), bool)
    moving[:3] = False
    kept = held.restore(start, moved, moving)
    np.testing.assert_array_equal(kept[:3], moved[:3])


def test_a_rollout_with_held_geometry_keeps_bonds_and_planes_where_the_mean_jump_breaks_them(tmp_path, capsys):
    """adk-backbone's mean jump shrinks the C–N bonds of the shipped AdK run by 10 % at jump 9 (see
    test_physical_checks); with --hold-geometry every frame keeps the start's backbone bonds,
    angles and ω, so the rollout runs to the end and exits 0."""
    from fastegnn_md.cli import main

    code = main(["rollout", str(ADK_OBC), "--checkpoint", "adk-backbone", "--hold-geometry", "--jumps", "14",
                 "--report", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "bonds, bond angles and peptide planes held" in out.out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["info"]["stopped"] is None and report["info"].get("geometry_left_at_jump") is None
    assert "held" in report["info"]["jumps"]
    predicted = MDAnalysis.Universe(str(tmp_path / "r" / "predicted.pdb"), str(tmp_path / "r" / "predicted.xtc"))
    frames = np.stack([predicted.atoms.positions.astype(np.float64) for _ in predicted.trajectory])
    assert len(frames) == 15
    names, resids = predicted.atoms.names, predicted.atoms.resids
    pairs = metrics.backbone_pairs(names, resids)
    first = metrics.backbone_distances(frames[0], pairs)
    for frame in frames[1:]:
        now = metrics.backbone_distances(frame, pairs)
        for kind in ("N-CA", "CA-C", "C-N"):
            # XTC stores 0.001 nm: the written frames carry ~0.01 Å of rounding.
            np.testing.assert_allclose(now[kind], first[kind], atol=0.02)
        # Distances fix |ω| (not its sign: ±170° are mirror images with the same distances), and
        # only loosely near 180°, where CA–CA is flat in ω: within thermal ω motion, none turns.
        np.testing.assert_allclose(np.abs(now["omega"]), np.abs(first["omega"]), atol=15.0)
        np.testing.assert_array_equal(np.abs(now["omega"]) < 90, np.abs(first["omega"]) < 90)
    assert not np.allclose(frames[-1], frames[0], atol=0.1)  # it moved


def test_hold_geometry_refuses_sampling_and_particles(tmp_path, capsys):
    from fastegnn_md.cli import main

    code = main(["rollout", str(ADK_OBC), "--hold-geometry", "--sample", "--report", str(tmp_path / "a"), "--quiet"])
    assert code == 2
    assert "--hold-geometry: sampled jumps (--sample) already keep" in capsys.readouterr().err
    code = main(["rollout", str(SPH), "--checkpoint", "water-box", "--hold-geometry", "--jumps", "1",
                 "--report", str(tmp_path / "b"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--hold-geometry:" in err and "not a molecular model" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
