"""Fitting: the molecule's rigid motion removed from a trajectory before pairs are made."""

from __future__ import annotations

import warnings
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest

from fastegnn_md.adapters.mdanalysis import load_md_pairs
from fastegnn_md.adapters.mdanalysis.fit import FIRST_FRAME, NO_FIT, fit_frames, fit_mode_of
from fastegnn_md.adapters.mdanalysis.kind import md_options_for_spec
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.errors import DataError
from fastegnn_md.geometry import random_orthogonal
from fastegnn_md.metrics import kabsch_superpose
from fastegnn_md.rollouts.md import rollout_trajectory

ROOT = Path(__file__).resolve().parents[1]
ADK = ROOT / "trajectories" / "adk-obc"


def tumbling(rng: np.random.Generator, frames: int = 6, atoms: int = 9):
    """Internal motion (T, N, 3) and its velocities, and the same seen by a tumbling observer:
    every frame rotated and moved at random (velocities rotated with their frame)."""
    internal = rng.normal(size=(atoms, 3)) * 4 + rng.normal(size=(frames, atoms, 3)) * 0.3
    velocities = rng.normal(size=(frames, atoms, 3))
    rotations = np.stack([random_orthogonal(rng) for _ in range(frames)])
    moved = np.einsum("tnj,tij->tni", internal, rotations) + rng.normal(size=(frames, 1, 3)) * 10
    return internal, velocities, moved, np.einsum("tnj,tij->tni", velocities, rotations)


def test_fitting_removes_any_rigid_motion_of_the_frames():
    """The fitted tumbling frames are the fitted internal frames, carried rigidly to where frame 0
    was seen; velocities likewise (rotation only). float64, round-off tolerance."""
    rng = np.random.default_rng(11)
    internal, velocities, moved, moved_velocities = tumbling(rng)
    fitted, fitted_v = fit_frames(internal, velocities, FIRST_FRAME)
    seen, seen_v = fit_frames(moved, moved_velocities, FIRST_FRAME)
    rotation, translation = kabsch_superpose(internal[0], moved[0])
    np.testing.assert_allclose(seen, fitted @ rotation.T + translation, rtol=0, atol=1e-10)
    np.testing.assert_allclose(seen_v, fitted_v @ rotation.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(seen[0], moved[0], rtol=0, atol=1e-10)  # frame 0 stays where it is
    # Fitting leaves each frame's internal geometry alone: pair distances are unchanged.
    distances = lambda x: np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)  # noqa: E731
    np.testing.assert_allclose(distances(seen), distances(moved), rtol=0, atol=1e-10)


def test_no_fit_leaves_frames_alone_and_bad_modes_are_one_line_errors():
    rng = np.random.default_rng(12)
    _, velocities, moved, _ = tumbling(rng)
    positions, same_v = fit_frames(moved, velocities, NO_FIT)
    assert positions is moved and same_v is velocities
    with pytest.raises(DataError, match="fit: must be one of none, first-frame, got 'mass'"):
        fit_frames(moved, None, "mass")
    assert fit_mode_of({}) == NO_FIT  # specs written before fitting existed


def test_fitted_md_pairs_record_the_fit_and_are_read_back_the_same_way():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = load_md_pairs(ADK / "adk_obc.pdb", ADK / "adk_obc.xtc", jump=10, progress=False)
        fitted = load_md_pairs(ADK / "adk_obc.pdb", ADK / "adk_obc.xtc", jump=10, progress=False, fit=FIRST_FRAME)
    assert "fit" not in lab.spec_fields["extra"]
    assert fitted.spec_fields["extra"]["fit"] == FIRST_FRAME

    class Spec:  # what md_options_for_spec reads of a DataSpec
        extra, selection, velocity_convention, cutoff, frame_stride = fitted.spec_fields["extra"], "backbone", \
            "backward", 10.0, 10

    assert md_options_for_spec(Spec()).fit == FIRST_FRAME
    no_motion = {name: np.mean([np.mean((p.target_positions - p.positions) ** 2) for p in data.splits["test"]])
                 for name, data in (("lab", lab), ("fitted", fitted))}
    # AdK tumbles too: its rigid motion is a large part of the lab-frame "no motion" error.
    assert no_motion["fitted"] < 0.9 * no_motion["lab"]
    with pytest.raises(DataError, match="fit: must be one of"):
        load_md_pairs(ADK / "adk_obc.pdb", ADK / "adk_obc.xtc", jump=10, progress=False, fit="yes")


def test_a_fitted_checkpoint_rolls_out_in_the_fitted_frame(tiny_md_model, tmp_path):
    """The rollout reads its reference as the checkpoint's data were read: frames superposed onto
    the first, so the start frame it writes is the fitted one, not the lab frame's."""
    checkpoint = tiny_md_model(tmp_path / "run", ADK / "adk_obc.pdb", ADK / "adk_obc.xtc", jump=10, fit=FIRST_FRAME)
    assert load_checkpoint(checkpoint).data_spec.extra["fit"] == FIRST_FRAME
    out = rollout_trajectory(ADK / "adk_obc.xtc", checkpoint=checkpoint, start=100, jumps=2,
                             report_dir=tmp_path / "r", progress=False)
    universe = MDAnalysis.Universe(str(ADK / "adk_obc.pdb"), str(ADK / "adk_obc.xtc"))
    backbone = universe.select_atoms("backbone")
    frames = np.array([backbone.positions.astype(np.float64) for _ in universe.trajectory])
    expected, _ = fit_frames(frames, None, FIRST_FRAME)
    predicted = MDAnalysis.Universe(str(out.predicted_topology), str(out.predicted))
    start = predicted.atoms.positions.astype(np.float64)
    np.testing.assert_allclose(start, expected[100], atol=6e-3)  # the predicted XTC keeps 0.01 Å
    assert np.abs(start - frames[100]).max() > 0.5  # and the lab frame is somewhere else
