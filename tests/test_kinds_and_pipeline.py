"""The data-kind registry and the one rollout pipeline: recognition, flags, specs, sampled jumps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PSF

from fastegnn_md.checkpoint import DataSpec, load_checkpoint
from fastegnn_md.data.kinds import check_flags, kind_for_path, kind_for_spec, kind_named, registered_kinds
from fastegnn_md.datasets import open_for_checkpoint
from fastegnn_md.errors import CheckpointError, DataError
from fastegnn_md.predictor import Jump, Predictor
from fastegnn_md.rollout import StartState, roll_out
from fastegnn_md.rollouts import MDRollout, RolloutRequest, rollout_case_for, rollout_kinds, run_rollout

SPH_DIR = Path(__file__).parents[1] / "trajectories" / "sph"


def test_kinds_are_looked_up_in_their_order_whatever_was_imported_first():
    assert [kind.name for kind in registered_kinds()] == ["md", "sph", "nbody"]
    assert [kind.name for kind in rollout_kinds()] == ["md", "sph"]
    assert kind_named("sph").plural == "SPH dataset directories"
    with pytest.raises(KeyError, match="no data kind named 'water'"):
        kind_named("water")


def test_a_path_is_recognised_by_exactly_the_kind_that_reads_it(tmp_path):
    assert kind_for_path(DCD).name == "md"
    assert kind_for_path(tmp_path / "not-yet.xtc").name == "md"  # a file name: MDAnalysis decides
    assert kind_for_path(SPH_DIR).name == "sph"
    assert kind_for_path(tmp_path).name == "nbody"  # any other directory: its reader says what is missing
    with pytest.raises(DataError, match="is a directory without metadata.json; rollout takes an MD trajectory file or "
                                        "an SPH dataset directory"):
        kind_for_path(tmp_path, rollout_kinds(), purpose="rollout")
    with pytest.raises(DataError, match="N-body dataset directories have no rollout"):
        rollout_case_for(kind_named("nbody"))


def test_a_flag_of_another_kind_names_the_kinds_that_take_it():
    sph, md = kind_named("sph"), kind_named("md")
    with pytest.raises(DataError) as info:
        check_flags(sph, {"--stride": 2, "--jump": 5}, "--data water")
    assert str(info.value) == "--stride: applies to MD trajectory files, but --data water is an SPH dataset directory"
    with pytest.raises(DataError, match=r"--frames: applies to N-body dataset directories, .*; use --jump/--stride"):
        check_flags(md, {"--frames": [1, 2]}, "--data adk.dcd")
    with pytest.raises(DataError, match="--jump: applies to MD trajectory files and SPH dataset directories"):
        check_flags(kind_named("nbody"), {"--jump": 3}, "--data nbody")
    check_flags(md, {"--jump": 3, "--frames": None, "--no-such-flag": 1}, "--data adk.dcd")  # nothing to refuse


def test_options_are_checked_and_converted_by_their_kind():
    sph = kind_named("sph")
    options = sph.make_options({"jump": 5, "gravity_axis": "none", "cutoff": 0.1, "progress": False}, "water")
    assert (options.jump, options.gravity_axis, options.cutoff) == (5, None, 0.1)
    assert not hasattr(options, "progress")  # a field SPH options do not have is skipped
    with pytest.raises(DataError, match="--velocity: SPH dataset water stores no velocities"):
        sph.make_options({"velocity_convention": "physical"}, "water")
    assert kind_named("md").make_options({"selection": "name CA", "progress": False}, "x").selection == "name CA"


def test_a_checkpoint_spec_belongs_to_one_kind(adk_dcd_checkpoint, tmp_path):
    spec = load_checkpoint(adk_dcd_checkpoint).data_spec
    assert kind_for_spec(spec).name == "md" and spec.is_molecular
    assert kind_for_spec(DataSpec(extra={"frame_in": 30, "frame_out": 40})).name == "nbody"
    with pytest.raises(CheckpointError, match="names no known kind of data"):
        kind_for_spec(DataSpec(extra={"dataset_format": "somebody else's"}))
    with pytest.raises(DataError, match="is an SPH dataset directory, but the checkpoint was trained on an MD trajectory"):
        open_for_checkpoint(SPH_DIR, spec)


class NoisyJump:
    """A jump that is a seeded sample: the model's mean plus Gaussian noise from the loop's generator."""

    def __init__(self, predictor: Predictor, scale: float) -> None:
        self.predictor, self.scale, self.calls = predictor, scale, 0

    def __call__(self, positions, velocities, node_attrs, *, rng: np.random.Generator) -> Jump:
        self.calls += 1
        mean = self.predictor.predict(positions, velocities, node_attrs)
        mean.positions = mean.positions + rng.normal(scale=self.scale, size=mean.positions.shape)
        return mean


def test_the_loop_takes_a_seeded_sampled_jump(adk_dcd_checkpoint):
    predictor = Predictor.from_checkpoint(adk_dcd_checkpoint)
    x = np.random.default_rng(0).normal(scale=10.0, size=(855, 3))
    start = StartState(x, np.zeros_like(x))

    def frames(seed: int, jump=None) -> np.ndarray:
        result = roll_out(predictor, start, 3, jump=jump, seed=seed)
        return np.array([frame.positions for frame in result.frames])

    sampled = NoisyJump(predictor, 0.1)
    first, again, other = frames(1, sampled), frames(1, sampled), frames(2, sampled)
    assert sampled.calls == 9
    np.testing.assert_array_equal(first, again)  # same seed, same rollout
    assert np.abs(first - other).max() > 0.01  # another seed, another sample
    mean = frames(1)
    assert 0.05 < np.abs(first - mean).std() < 0.5  # the noise is the sample's, not a different model
    # The velocity fed to jump k + 1 is the sampled jump's own displacement (backward convention).
    seen = []

    def recording(positions, velocities, node_attrs, *, rng):
        seen.append(np.array(velocities))
        return sampled(positions, velocities, node_attrs, rng=rng)

    recorded = frames(1, recording)
    np.testing.assert_array_equal(recorded, first)
    np.testing.assert_allclose(seen[1], (first[0] - x) / predictor.dt)
    np.testing.assert_allclose(seen[2], (first[1] - first[0]) / predictor.dt)


def test_the_pipeline_passes_the_sampled_jump_to_every_case(adk_dcd_checkpoint, tmp_path):
    predictor = Predictor.from_checkpoint(adk_dcd_checkpoint)
    sampled = NoisyJump(predictor, 0.05)
    case = MDRollout(DCD, PSF, RolloutRequest(start=10, jumps=2, report_dir=tmp_path / "r"))
    outputs = run_rollout(case, adk_dcd_checkpoint, progress=False, jump=sampled, seed=3)
    assert sampled.calls == 2 and outputs.stopped is None
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [row["reference_frame"] for row in report["per_jump"]] == [15, 20]
    assert report["info"]["checkpoint"] == str(adk_dcd_checkpoint)
