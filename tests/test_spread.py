"""`spread`, `calibration` and sampled jumps: the fitted Gaussian around a learned jump."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fastegnn_md.errors import DataError
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.spread import (
    GAUSSIAN_WITHIN,
    JumpSpread,
    calibration,
    collect_residuals,
    correlation_kernel,
    fit_spread,
    node_invariants,
)
from fastegnn_md.local_geometry import keep_local_geometry, local_pairs

ROOT = Path(__file__).resolve().parents[1]
VILLIN = ROOT / "trajectories" / "villin" / "villin_seed4.xtc"


def cloud(rng: np.random.Generator, n: int = 60, size: float = 12.0) -> np.ndarray:
    return rng.uniform(0.0, size, size=(n, 3))


def synthetic(rng, spread_of_class, frames=40, n=60, local=0.0, length=3.0):
    """Examples whose residuals are drawn from a known law: σ by node class (attribute column),
    correlated by ``local`` over ``length``. Means stay put, velocities zero."""
    starts, means, targets, velocities, attrs = [], [], [], [], []
    for _ in range(frames):
        x = cloud(rng, n)
        cls = rng.integers(0, 2, n)
        sigma = np.where(cls == 1, spread_of_class[1], spread_of_class[0])
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        cov = sigma[:, None] * correlation_kernel(d, local, 0.0, length) * sigma[None]
        noise = np.linalg.cholesky(cov + 1e-12 * np.eye(n)) @ rng.standard_normal((n, 3))
        starts.append(x), means.append(x.copy()), targets.append(x + noise)
        velocities.append(np.zeros_like(x)), attrs.append(cls[:, None].astype(float))
    return collect_residuals(starts, means, targets, velocities, attrs, dt=1.0, packing_radius=3.0)


def test_fit_recovers_the_scale_of_each_node_class():
    rng = np.random.default_rng(0)
    data = synthetic(rng, (0.3, 0.9))
    spread = fit_spread(data, packing_radius=3.0)
    held = synthetic(rng, (0.3, 0.9))
    for cls, expected in ((0, 0.3), (1, 0.9)):
        sigma = np.concatenate([spread.scales(inv)[inv[:, -1] == cls] for inv in held.invariants])
        assert np.median(sigma) == pytest.approx(expected, rel=0.06)
    figures = calibration(spread, held)
    assert figures["variance_ratio"] == pytest.approx(1.0, abs=0.06)
    assert figures["within_1sigma"] == pytest.approx(GAUSSIAN_WITHIN[0], abs=0.02)
    assert figures["within_2sigma"] == pytest.approx(GAUSSIAN_WITHIN[1], abs=0.01)
    # Uncorrelated data: the fitted correlation is small at 1 Å already, whitening gives ~1.
    assert spread.local * np.exp(-1.0 / (2 * spread.length**2)) + spread.shared < 0.1
    assert figures["whitened"] == pytest.approx(1.0, abs=0.05)


def test_a_wrong_spread_is_reported_as_miscalibrated():
    rng = np.random.default_rng(1)
    data = synthetic(rng, (0.5, 0.5))
    spread = fit_spread(data, packing_radius=3.0)
    spread.intercept += np.log(2.0)  # σ² twice too large
    assert calibration(spread, data)["variance_ratio"] == pytest.approx(2.0, rel=0.08)


def test_fit_recovers_a_correlation_length():
    rng = np.random.default_rng(2)
    data = synthetic(rng, (0.5, 0.5), frames=30, local=0.8, length=3.0)
    spread = fit_spread(data, packing_radius=3.0)
    assert spread.length == pytest.approx(3.0, rel=0.15)
    assert spread.local == pytest.approx(0.8, abs=0.1)
    assert calibration(spread, data)["whitened"] == pytest.approx(1.0, abs=0.1)


def random_spread(rng, attrs: int = 2) -> JumpSpread:
    dims = 3 + attrs
    return JumpSpread(intercept=-1.0, weights=rng.normal(scale=0.3, size=dims), center=rng.normal(size=dims),
                      scale=np.abs(rng.normal(size=dims)) + 0.5, packing_radius=3.0, local=0.7, shared=0.1,
                      length=2.5, geometry_cutoff=2.6)


@pytest.mark.parametrize("reflect", [False, True])
def test_scales_and_covariance_are_invariant_and_permute(reflect):
    rng = np.random.default_rng(3)
    spread = random_spread(rng)
    x, mu, v = cloud(rng, 30), cloud(rng, 30), rng.normal(size=(30, 3))
    attrs = rng.integers(0, 2, (30, 2)).astype(float)
    sigma = spread.scales(node_invariants(x, mu, v, attrs, 5.0, 3.0))
    cov = spread.covariance(x, sigma)
    q, t = random_orthogonal(rng, reflect=reflect), rng.normal(size=3) * 10
    moved = [a @ q.T + t for a in (x, mu)]
    sigma_moved = spread.scales(node_invariants(moved[0], moved[1], v @ q.T, attrs, 5.0, 3.0))
    np.testing.assert_allclose(sigma_moved, sigma, rtol=1e-12)
    np.testing.assert_allclose(spread.covariance(moved[0], sigma_moved), cov, rtol=1e-10, atol=1e-14)
    perm = rng.permutation(30)
    sigma_perm = spread.scales(node_invariants(x[perm], mu[perm], v[perm], attrs[perm], 5.0, 3.0))
    np.testing.assert_allclose(sigma_perm, sigma[perm], rtol=1e-12)
    np.testing.assert_allclose(spread.covariance(x[perm], sigma_perm), cov[np.ix_(perm, perm)], rtol=1e-12)


def test_samples_have_the_covariance_and_spare_fixed_nodes():
    rng = np.random.default_rng(4)
    spread = random_spread(rng)
    x = cloud(rng, 12, size=6.0)
    sigma = np.linspace(0.2, 0.8, 12)
    moving = np.ones(12, bool)
    moving[[0, 5]] = False
    draws = np.stack([spread.sample_noise(x, sigma, rng, moving) for _ in range(4000)])
    assert np.all(draws[:, ~moving] == 0.0)
    rows = np.flatnonzero(moving)
    empirical = np.einsum("sik,sjk->ij", draws[:, rows], draws[:, rows]) / (3 * len(draws))
    np.testing.assert_allclose(empirical, spread.covariance(x[rows], sigma[rows]), atol=0.02)


def test_samples_are_reproducible_from_a_seed():
    rng = np.random.default_rng(5)
    spread = random_spread(rng)
    x, sigma = cloud(rng, 10), np.full(10, 0.4)
    a = spread.sample_noise(x, sigma, np.random.default_rng(7))
    np.testing.assert_array_equal(a, spread.sample_noise(x, sigma, np.random.default_rng(7)))
    assert not np.allclose(a, spread.sample_noise(x, sigma, np.random.default_rng(8)))


def test_spread_round_trips_through_a_weights_only_checkpoint(tmp_path):
    spread = random_spread(np.random.default_rng(6))
    spread.calibration = {"heldout": {"variance_ratio": 1.01}}
    torch.save({"extra": spread.as_dict()}, tmp_path / "s.pt")
    back = JumpSpread.from_dict(torch.load(tmp_path / "s.pt", weights_only=True)["extra"])
    for name in ("weights", "center", "scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(spread, name))
    assert (back.local, back.length, back.geometry_cutoff, back.calibration) == (
        spread.local, spread.length, spread.geometry_cutoff, spread.calibration)


def chain(rng: np.random.Generator, n: int = 20) -> np.ndarray:
    """A random walk of 1.5 Å steps with bond angles near 110°, like a backbone."""
    x = [np.zeros(3), np.array([1.5, 0.0, 0.0])]
    for _ in range(n - 2):
        b = x[-1] - x[-2]
        b /= np.linalg.norm(b)
        perp = np.cross(b, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        step = np.cos(np.radians(70)) * b + np.sin(np.radians(70)) * perp
        x.append(x[-1] + 1.5 * step)
    return np.array(x)


@pytest.mark.parametrize("reflect", [False, True])
def test_keep_local_geometry_restores_distances_equivariantly(reflect):
    rng = np.random.default_rng(7)
    x = chain(rng)
    pairs = local_pairs(x, 2.6)
    lengths = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    assert len(pairs) >= 2 * len(x) - 4  # bonds and bond-angle pairs
    noisy = x + 0.2 * rng.normal(size=x.shape)
    moving = np.ones(len(x), bool)
    moving[0] = False
    fixed, worst = keep_local_geometry(noisy, pairs, lengths, moving)
    restored = np.linalg.norm(fixed[pairs[:, 0]] - fixed[pairs[:, 1]], axis=1)
    assert worst <= 1e-3 and np.max(np.abs(restored - lengths)) <= 1e-3
    assert np.array_equal(fixed[0], noisy[0])
    assert np.sqrt(np.mean(np.sum((fixed - noisy) ** 2, axis=1))) < 0.4  # a correction, not a new structure
    q, t = random_orthogonal(rng, reflect=reflect), rng.normal(size=3)
    moved, _ = keep_local_geometry(noisy @ q.T + t, pairs, lengths, moving)
    np.testing.assert_allclose(moved, fixed @ q.T + t, atol=1e-9)


# -- on a real checkpoint and real MD ------------------------------------------------------------


@pytest.fixture(scope="module")
def uncalibrated(tmp_path_factory) -> Path:
    """The shipped protein-backbone model with its spread taken out."""
    from fastegnn_md import spec_keys
    from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint("protein-backbone")
    ckpt.data_spec.extra.pop(spec_keys.SPREAD)
    path = tmp_path_factory.mktemp("plain") / "plain.pt"
    return save_checkpoint(path, ckpt.model_name, ckpt.hparams, ckpt.build_model(), ckpt.data_spec, ckpt.training)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, uncalibrated):
    from fastegnn_md.calibration import calibrate_checkpoint, save_with_spread
    from fastegnn_md.checkpoint import load_checkpoint
    from fastegnn_md.datasets import open_for_checkpoint

    ckpt = load_checkpoint(uncalibrated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = open_for_checkpoint(VILLIN, ckpt.data_spec, progress=False).load("all")
    spread, report = calibrate_checkpoint(ckpt, pairs[:40:2], pairs[200:230:3])
    path = save_with_spread(ckpt, spread, tmp_path_factory.mktemp("cal") / "sampled.pt")
    return path, report, pairs


def test_shipped_protein_model_is_calibrated_on_its_validation_blocks():
    """protein-backbone ships with the spread `fastegnn-md calibrate` fitted on the validation
    blocks of its training files; the held-out figures it records meet the issue's ±20 %."""
    from fastegnn_md.predictor import Predictor

    spread = Predictor.from_checkpoint("protein-backbone").spread
    assert spread is not None and spread.fitted_on["split"] == "valid"
    assert {Path(p).name for p in spread.fitted_on["heldout"]} == {"villin_seed4.xtc", "adk_seed1_cont.xtc"}
    assert not {Path(p).name for p in spread.fitted_on["data"]} & {"villin_seed4.xtc", "adk_seed1_cont.xtc"}
    assert 0.8 <= spread.calibration["heldout"]["variance_ratio"] <= 1.2


def test_calibrated_checkpoint_keeps_the_model_and_adds_the_spread(calibrated, uncalibrated):
    from fastegnn_md.checkpoint import load_checkpoint
    from fastegnn_md.predictor import Predictor

    path, report, pairs = calibrated
    assert report["heldout"]["examples"] == 10 and 0.5 < report["heldout"]["variance_ratio"] < 2.0
    plain, sampled = Predictor.from_checkpoint(uncalibrated), Predictor.from_checkpoint(path)
    assert plain.spread is None and sampled.spread is not None
    assert sampled.spread.geometry_cutoff == pytest.approx(2.6)
    assert load_checkpoint(path).training["calibrated_from"] == str(uncalibrated)
    pair = pairs[100]
    attrs = pair.node_attrs
    mean = plain.predict(pair.positions, pair.velocities, attrs).positions
    np.testing.assert_array_equal(sampled.predict(pair.positions, pair.velocities, attrs).positions, mean)
    with pytest.raises(DataError, match="calibrate"):
        plain.sample(pair.positions, pair.velocities, attrs, seed=0)


def test_predictor_sample_is_seeded_keeps_bonds_and_spreads_like_sigma(calibrated):
    from fastegnn_md.predictor import Predictor

    path, _, pairs = calibrated
    predictor = Predictor.from_checkpoint(path)
    pair = pairs[100]
    x, v, attrs = pair.positions, pair.velocities, pair.node_attrs
    a = predictor.sample(x, v, attrs, seed=3)
    np.testing.assert_array_equal(a.positions, predictor.sample(x, v, attrs, seed=3).positions)
    assert not np.allclose(a.positions, predictor.sample(x, v, attrs, seed=4).positions)
    np.testing.assert_array_equal(a.mean, predictor.predict(x, v, attrs).positions)
    assert a.spread.shape == (len(x),) and np.all(a.spread > 0)
    pairs_local = local_pairs(x, 2.6)
    start = np.linalg.norm(x[pairs_local[:, 0]] - x[pairs_local[:, 1]], axis=1)
    after = np.linalg.norm(a.positions[pairs_local[:, 0]] - a.positions[pairs_local[:, 1]], axis=1)
    assert np.max(np.abs(after - start)) < 2e-3
    batch = predictor.sample(np.stack([x, x]), np.stack([v, v]), attrs, seed=3)
    assert batch.positions.shape == (2, len(x), 3) and not np.allclose(batch.positions[0], batch.positions[1])
    # The displacement from the mean is of the size of σ (a correction for the bonds aside).
    moved = np.sqrt(np.mean(np.sum((a.positions - a.mean) ** 2, axis=1)) / 3)
    assert 0.3 < moved / np.sqrt(np.mean(a.spread**2)) < 1.5


def test_sample_keeps_each_peptide_omega_when_given_the_plane_pairs(calibrated):
    """Bonds and angles leave the dihedral about each C–N bond free; held_pairs from the topology
    (metrics.peptide_plane_pairs) keep it, so samples cannot turn a peptide bond cis."""
    import MDAnalysis

    from fastegnn_md import metrics
    from fastegnn_md.predictor import Predictor

    path, _, pairs = calibrated
    predictor = Predictor.from_checkpoint(path)
    atoms = MDAnalysis.Universe(str(VILLIN.with_suffix(".pdb"))).select_atoms(predictor.spec.selection)
    plane = metrics.peptide_plane_pairs(atoms.names, atoms.resids)
    assert plane.shape == (2 * 34, 2)  # CA-CA and O-CA across each of villin's 34 peptide bonds
    pair = pairs[100]
    x = pair.positions

    def plane_change(sampled: np.ndarray) -> float:
        start = np.linalg.norm(x[plane[:, 0]] - x[plane[:, 1]], axis=1)
        return float(np.abs(np.linalg.norm(sampled[plane[:, 0]] - sampled[plane[:, 1]], axis=1) - start).max())

    free = predictor.sample(x, pair.velocities, pair.node_attrs, seed=5).positions
    held = predictor.sample(x, pair.velocities, pair.node_attrs, seed=5, held_pairs=plane).positions
    assert plane_change(free) > 0.05 and plane_change(held) < 2e-3
    omega = metrics.backbone_pairs(atoms.names, atoms.resids)
    before = metrics.backbone_distances(x, omega)["omega"]
    after = metrics.backbone_distances(held, omega)["omega"]
    # Distances fix |ω|, not its sign: near-planar ω = 170° and −170° are both trans, 20° apart
    # through the plane, and may swap. Near 180° the distances are flat in ω, so the 1e-3 Å
    # tolerance leaves a few degrees (MD's own ω fluctuates by ~6°).
    assert np.abs(np.abs(after) - np.abs(before)).max() < 5.0


def test_sampled_rollout_is_reproducible_and_differs_from_the_mean(calibrated, uncalibrated):
    from fastegnn_md.predictor import Predictor
    from fastegnn_md.rollout import SampledJump, StartState, roll_out

    path, _, pairs = calibrated
    predictor = Predictor.from_checkpoint(path)
    pair = pairs[100]
    start = StartState(pair.positions, pair.velocities)
    runs = [roll_out(predictor, start, 3, pair.node_attrs, jump=SampledJump(predictor), seed=s) for s in (1, 1, 2)]
    mean = roll_out(predictor, start, 3, pair.node_attrs)
    assert all(r.stop is None and len(r.frames) == 3 for r in runs)
    np.testing.assert_array_equal(runs[0].frames[-1].positions, runs[1].frames[-1].positions)
    assert not np.allclose(runs[0].frames[-1].positions, runs[2].frames[-1].positions)
    assert not np.allclose(runs[0].frames[-1].positions, mean.frames[-1].positions)
    with pytest.raises(DataError, match="calibrate"):
        SampledJump(Predictor.from_checkpoint(uncalibrated))


def test_cli_calibrate_and_sampled_rollout(calibrated, uncalibrated, tmp_path, capsys):
    from fastegnn_md.cli import main

    path, _, _ = calibrated
    assert main(["calibrate", "protein-backbone", "--data", str(VILLIN), "--out", str(tmp_path / "x.txt"),
                 "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["calibrate", "protein-backbone", "--data", str(tmp_path / "missing.xtc"), "--out",
                 str(tmp_path / "x.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.xtc" in err
    assert main(["rollout", str(VILLIN), "--checkpoint", str(uncalibrated), "--jumps", "2", "--sample",
                 "--report", str(tmp_path / "r0"), "--quiet"]) == 2
    assert "calibrate" in capsys.readouterr().err
    assert main(["rollout", str(VILLIN), "--checkpoint", str(path), "--jumps", "2", "--sample", "--seed", "5",
                 "--report", str(tmp_path / "r1"), "--out", str(tmp_path / "r1.xtc"), "--quiet"]) == 0
    assert "sampled" in capsys.readouterr().out
    assert "sampled from the checkpoint's spread, seed 5" in (tmp_path / "r1" / "report.md").read_text()
    # The rollout knows the topology, so its samples keep every peptide plane (ω) as well as the bonds.
    import MDAnalysis

    from fastegnn_md import metrics

    predicted = MDAnalysis.Universe(str(tmp_path / "r1.pdb"), str(tmp_path / "r1.xtc"))
    plane = metrics.peptide_plane_pairs(predicted.atoms.names, predicted.atoms.resids)
    lengths = [np.linalg.norm(ts.positions[plane[:, 0]] - ts.positions[plane[:, 1]], axis=1)
               for ts in predicted.trajectory]
    assert len(lengths) == 3 and len(plane) == 68
    # XTC keeps 0.001 nm (0.01 Å) per coordinate; unheld, a sample moves these distances by ~0.15 Å.
    assert max(np.abs(now - lengths[0]).max() for now in lengths[1:]) < 0.03


def test_evaluate_reports_the_spread_of_a_calibrated_checkpoint(calibrated, uncalibrated):
    from fastegnn_md.calibration import residuals_of
    from fastegnn_md.checkpoint import load_checkpoint
    from fastegnn_md.evaluation import evaluate_checkpoint
    from fastegnn_md.predictor import Predictor

    path, _, pairs = calibrated
    some = pairs[300:320:4]
    result = evaluate_checkpoint(load_checkpoint(path), some, repeats=1)
    expected = calibration(Predictor.from_checkpoint(path).spread, residuals_of(load_checkpoint(path), some))
    assert result["spread_calibration"]["variance_ratio"] == pytest.approx(expected["variance_ratio"], rel=1e-6)
    assert evaluate_checkpoint(load_checkpoint(uncalibrated), some, repeats=1)["spread_calibration"] is None
