"""Equilibration: the criterion that picks the discarded start of a reference run, and the discard itself."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fastegnn_md.adapters.mdanalysis import load_md_pairs
from fastegnn_md.adapters.mdanalysis.fit import FIRST_FRAME, fit_frames
from fastegnn_md.adapters.mdanalysis.kind import md_options_for_spec
from fastegnn_md.conventions import contiguous_splits
from fastegnn_md.equilibration import drift_observables, equilibration_time
from fastegnn_md.errors import DataError
from fastegnn_md.metrics import radius_of_gyration

ROOT = Path(__file__).resolve().parents[1]
ADK = ROOT / "trajectories" / "adk-obc"


def chain(rng: np.random.Generator, frames: int, scale: np.ndarray) -> np.ndarray:
    """A 30-atom random-walk chain (3.8 Å steps) whose size is multiplied by ``scale`` (T,) per
    frame, with 0.1 Å thermal noise: a structure that swells or compacts over time."""
    steps = rng.normal(size=(30, 3))
    base = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    base -= base.mean(axis=0)
    return scale[:, None, None] * base[None] + rng.normal(scale=0.1, size=(frames, 30, 3))


def test_a_relaxing_structure_is_discarded_until_it_reaches_its_equilibrium_band():
    rng = np.random.default_rng(0)
    t = np.arange(400.0)  # ps, 1 ps frames
    # Rg relaxes by 25 % with a 30 ps time constant; the noise of the scale makes the band.
    scale = 1.0 + 0.25 * np.exp(-t / 30.0) + rng.normal(scale=0.004, size=len(t))
    check = equilibration_time(chain(rng, len(t), scale), 1.0, block_ps=10.0)
    assert not check.drifting
    # The excess 0.25·exp(-t/30) falls below the band's half-width (2 SD of 10-ps block means of
    # the scale noise, ~0.003·4) between 80 and 130 ps.
    assert 80.0 <= check.discard_ps <= 130.0
    low, high = check.bands["rg"]
    assert not low <= check.block_means["rg"][0] <= high
    first_kept = int(check.discard_ps / 10.0)
    assert low <= check.block_means["rg"][first_kept] <= high


def test_an_equilibrium_run_loses_at_most_a_block_and_a_drifting_one_is_flagged():
    rng = np.random.default_rng(1)
    steady = equilibration_time(chain(rng, 300, 1.0 + rng.normal(scale=0.004, size=300)), 1.0, block_ps=10.0)
    assert steady.discard_ps <= 10.0 and not steady.drifting
    growing = equilibration_time(chain(rng, 300, np.linspace(1.0, 1.3, 300)), 1.0, block_ps=10.0)
    assert growing.drifting  # the last half still swells: the discard is only a lower bound
    with pytest.raises(ValueError, match="needs 8"):
        equilibration_time(chain(rng, 70, np.ones(70)), 1.0, block_ps=10.0)


def test_the_observables_are_rg_and_residue_contacts():
    rng = np.random.default_rng(2)
    frames = chain(rng, 3, np.array([1.0, 1.2, 0.8]))
    observed = drift_observables(frames)
    np.testing.assert_allclose(observed["rg"], radius_of_gyration(frames), rtol=0, atol=1e-12)
    # Compacting the chain brings more atoms within 8 Å of each other.
    assert observed["contacts"][2] > observed["contacts"][0] > observed["contacts"][1]


def read(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_md_pairs(ADK / "adk_obc.pdb", ADK / "adk_obc.xtc", jump=10, progress=False, **options)


def test_discarding_equilibration_leaves_out_the_first_frames_and_keeps_the_file_numbering():
    whole = read(fit=FIRST_FRAME)
    cut = read(fit=FIRST_FRAME, discard_ps=20.0)  # 0.5 ps frames: 40 frames
    assert cut.spec_fields["extra"]["discard_ps"] == 20.0 and "discard_ps" not in whole.spec_fields["extra"]
    expected = contiguous_splits(241 - 40, jump=10, history=10)
    for name, inputs in expected.items():
        assert cut.frames[name] == range(inputs.start + 40, inputs.stop + 40)
    assert cut.splits["train"][0].metadata["frames"][0] == 50  # the file's numbering: 40 discarded + 10 of history
    assert whole.splits["train"][0].metadata["frames"][0] == 10
    assert cut.spec_fields["extra"]["train_frames"] == {"adk_obc.xtc": [40, cut.frames["train"].stop - 1 + 10]}

    class Spec:  # what md_options_for_spec reads of a DataSpec
        extra, selection, velocity_convention, cutoff, frame_stride = cut.spec_fields["extra"], "backbone", \
            "backward", 10.0, 10

    assert md_options_for_spec(Spec()).discard_ps == 20.0  # evaluate reads the same blocks
    with pytest.raises(DataError, match="discarding 200 ps leaves"):
        read(discard_ps=200.0)
    with pytest.raises(DataError, match="discard: must be a time >= 0"):
        read(discard_ps=-1.0)


def test_the_fit_of_a_cut_trajectory_is_onto_its_first_kept_frame():
    """Frame 40 (the first kept) is the fit's reference: fitted, it stays where the lab frame has
    it, and every later frame is superposed onto it."""
    cut = read(fit=FIRST_FRAME, discard_ps=20.0)
    lab = read(discard_ps=20.0)
    first_cut, first_lab = cut.splits["train"][0], lab.splits["train"][0]  # input frame 50, history frame 40
    dt = first_cut.metadata["dt"]
    history_cut = first_cut.positions - first_cut.velocities * dt
    history_lab = first_lab.positions - first_lab.velocities * dt
    np.testing.assert_allclose(history_cut, history_lab, rtol=0, atol=1e-4)
    lab_frames = np.array([history_lab, first_lab.positions, first_lab.target_positions])
    fitted, _ = fit_frames(lab_frames, None, FIRST_FRAME)
    np.testing.assert_allclose(first_cut.positions, fitted[1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(first_cut.target_positions, fitted[2], rtol=0, atol=1e-4)
