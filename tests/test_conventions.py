"""`fastegnn_md.conventions`: one name per velocity convention, pairs from frames, the jump history."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastegnn_md.conventions import (
    BACKWARD,
    FORWARD,
    PHYSICAL,
    FastEGNNDeprecationWarning,
    JumpHistory,
    canonical_convention,
    frames_needed,
    invalid_input_frames,
    pair_velocities,
    require_pairs,
    valid_input_frames,
)
from fastegnn_md.errors import DataError


def test_each_convention_has_one_name_and_paper_is_a_deprecated_alias():
    for name in (PHYSICAL, BACKWARD, FORWARD):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the canonical names warn about nothing
            assert canonical_convention(name) == name
    with pytest.warns(FastEGNNDeprecationWarning, match="'paper' is a deprecated name of the 'forward'"):
        assert canonical_convention("paper", "--velocity") == FORWARD
    with pytest.raises(ValueError, match="velocity must be one of forward, backward, paper"):
        canonical_convention(PHYSICAL, "velocity", allowed=(FORWARD, BACKWARD))
    with pytest.raises(ValueError, match="got 'sideways'"):
        canonical_convention("sideways")


def test_valid_input_frames_and_the_frames_a_pair_needs():
    assert valid_input_frames(10, 3, BACKWARD) == range(3, 7)
    assert valid_input_frames(10, 3, FORWARD) == valid_input_frames(10, 3, PHYSICAL) == range(0, 7)
    assert frames_needed(3, BACKWARD) == 7 and frames_needed(3, FORWARD) == 4
    assert len(valid_input_frames(frames_needed(3, BACKWARD), 3, BACKWARD)) == 1
    assert len(valid_input_frames(frames_needed(3, BACKWARD) - 1, 3, BACKWARD)) == 0
    with pytest.raises(DataError, match=r"traj: 6 frames are too few for jump 3 with 'backward' velocities \(need at least 7\)"):
        require_pairs(6, 3, BACKWARD, "traj")
    assert invalid_input_frames([3, 2, 7, 4.5, 6], range(3, 7)) == [2, 7, 4.5]


def test_pair_velocities_by_hand():
    # x_t = t^2 along x for one particle, frames 0.5 apart: easy to difference by hand.
    t = np.arange(6.0)
    positions = np.zeros((6, 1, 3))
    positions[:, 0, 0] = t**2
    stored = np.full((6, 1, 3), 7.0)
    backward = pair_velocities(positions, 2, 2, 0.5, BACKWARD)
    np.testing.assert_allclose(backward.velocities[0, 0], (4 - 0) / 1.0)
    np.testing.assert_allclose(backward.target_velocities[0, 0], (16 - 4) / 1.0)
    forward = pair_velocities(positions, 2, 2, 0.5, FORWARD)
    np.testing.assert_allclose(forward.velocities[0, 0], (9 - 4) / 0.5)
    assert forward.target_velocities is None
    physical = pair_velocities(positions, 2, 2, 0.5, PHYSICAL, stored)
    assert physical.velocities is stored[2] or np.array_equal(physical.velocities, stored[2])
    with pytest.raises(ValueError, match="stored velocities"):
        pair_velocities(positions, 2, 2, 0.5, PHYSICAL)


def test_jump_history_gives_the_mean_velocity_only_after_the_recorded_jump():
    history = JumpHistory(dt=2.0, tol=1e-6)
    start = np.zeros((2, 3))
    end = np.array([[2.0, 0.0, 0.0], [0.0, -4.0, 0.0]])
    assert history.velocity(end) is None and not history.known  # nothing recorded yet
    history.record(start, end)
    np.testing.assert_allclose(history.velocity(end), [[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    np.testing.assert_allclose(history.velocity(end + 5e-7), (end + 5e-7 - start) / 2.0)  # within tol
    assert history.velocity(end + 1e-3) is None  # moved by something else: the caller falls back
    assert history.velocity(start) is None  # no start velocity was recorded
    given = np.full((2, 3), 0.25)
    history.record(start, end, start_velocity=given)
    np.testing.assert_array_equal(history.velocity(start), given)  # the same point asked again
    history.forget()
    assert history.velocity(end) is None
    with pytest.raises(ValueError):
        JumpHistory(dt=0.0)


def test_the_cli_prints_the_deprecation_on_one_line(tmp_path):
    # --velocity paper for an empty .xtc: the warning line, then the error line.
    trajectory = tmp_path / "md.xtc"
    trajectory.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "fastegnn_md.cli", "train", "--data", str(trajectory), "--velocity", "paper",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    warning, error = result.stderr.splitlines()
    assert warning == ("fastegnn-md: warning: --velocity: 'paper' is a deprecated name of the 'forward' "
                       "velocity convention; use 'forward'")
    assert error.startswith("fastegnn-md: error: ") and "cannot read as XTC" in error
