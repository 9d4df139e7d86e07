"""Training and evaluating on SPH datasets (Water-3D style): CLI, data spec, checkpoint reload.

Two tiny datasets, made once per module:

* ``water``: `fastegnn-md sph generate`'s Python API (SPlisHSPlasH; skipped without it):
  2 train / 1 valid / 1 test trajectories of 80-100 particles and 40 frames, h5 files.
* ``walls``: written by hand with `write_dataset` (no solver): water particles (DeepMind type 5)
  in free fall beside static wall particles (type 3), TFRecord files only.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.cli import main
from fastegnn_md.data.nbody import generate_dataset
from fastegnn_md.data.sources import SPH_FORMAT, SPHOptions, open_dataset, open_for_checkpoint
from fastegnn_md.errors import DataError
from fastegnn_md.predictor import Predictor
from fastegnn_md.training import TrainConfig, Trainer, evaluate_mse

from fastegnn_md.adapters.sph import SPHTrajectory, write_dataset

ERROR_PREFIX = "fastegnn-md: error: "
TINY = ["--hidden", "4", "--layers", "1", "--epochs", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def water(tmp_path_factory) -> Path:
    from fastegnn_md.adapters.splishsplash import SPHSceneSettings, generate_sph_dataset

    settings = SPHSceneSettings(
        particle_radius=0.025, time_step=0.005, num_frames=40, block_size_range=(0.25, 0.3), seed=3
    )
    root = tmp_path_factory.mktemp("sph") / "water"
    return generate_sph_dataset(root, settings, num_train=2, num_valid=1, num_test=1, progress=False, threads=1,
                                formats=("h5",))


@pytest.fixture(scope="module")
def walls(tmp_path_factory) -> Path:
    """Free fall (g = 1 along −y, frame dt 0.1) of 12 water particles above 8 static wall particles."""
    rng = np.random.default_rng(0)
    t = np.arange(30)[:, None, None] * 0.1

    def trajectory(key: int) -> SPHTrajectory:
        start = rng.uniform(0.2, 0.8, size=(12, 3))
        velocity = rng.normal(scale=0.2, size=(12, 3))
        water = start + velocity * t + 0.5 * np.array([0.0, -1.0, 0.0]) * t**2
        wall = np.broadcast_to(rng.uniform(0.0, 1.0, size=(8, 3)) * [1, 0.05, 1], (30, 8, 3))
        types = np.array([5] * 12 + [3] * 8)
        return SPHTrajectory(np.concatenate([water, wall], axis=1), types, key, convention="deepmind")

    root = tmp_path_factory.mktemp("sph") / "walls"
    splits = {"train": [trajectory(0), trajectory(1)], "valid": [trajectory(2)], "test": [trajectory(3)]}
    write_dataset(root, splits, {"bounds": [[0.0, 1.0]] * 3, "dt": 0.1, "default_connectivity_radius": 0.3},
                  formats=("tfrecord",))
    return root


@pytest.fixture(scope="module")
def water_run(water, tmp_path_factory) -> Path:
    """The brief's command on the generated data (2 epochs of a tiny FastEGNN<3, 0.75>)."""
    run = tmp_path_factory.mktemp("runs") / "w"
    code = main(["train", "--data", str(water), "--model", "fastegnn", "-C", "3", "--drop-rate", "0.75",
                 "--out", str(run), "--hidden", "8", "--layers", "1", "--epochs", "2", "--threads", "1", "--quiet"])
    assert code == 0
    return run


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def run_error(capsys, argv) -> str:
    argv = [str(a) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}, stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err
    return lines[0]


# ----------------------------------------------------------------------------- happy path
def test_train_records_the_sph_spec(water, water_run, capsys):
    ckpt = load_checkpoint(water_run / "best.pt")
    spec = ckpt.data_spec
    metadata = json.loads((water / "metadata.json").read_text())
    assert spec.gravity_axis == [0.0, -1.0, 0.0]  # the generator's "-y"
    assert ckpt.hparams["gravity_axis"] == [0.0, -1.0, 0.0] and ckpt.hparams["virtual_nodes"] == 3
    assert spec.cutoff == metadata["default_connectivity_radius"] and spec.drop_rate == 0.75
    assert spec.units == {"length": "dimensionless", "time": "s"}
    assert spec.frame_stride == 15 and spec.dt == pytest.approx(15 * metadata["dt"])
    assert spec.velocity_convention == "backward" and spec.num_node_attrs == 9
    extra = spec.extra
    assert extra["dataset_format"] == SPH_FORMAT and extra["particle_type_convention"] == "deepmind"
    assert extra["kinematic_attr_columns"] == [3] and extra["bounds"] == metadata["bounds"]
    assert (extra["num_starts"], extra["start_window"], extra["seed"]) == (15, 250, 0)
    config = ckpt.training["config"]
    assert config["mmd_weight"] == 0.01 and config["batch_size"] == 20  # the SPH defaults
    assert ckpt.build_model().gravity_axis == [0.0, -1.0, 0.0]
    # Velocities in box units per second: the model's time unit is the jump (issue 16).
    assert config["time_scale"] == "jump" and ckpt.hparams["time_scale"] == pytest.approx(spec.dt)
    assert ckpt.build_model().time_scale == pytest.approx(spec.dt)


def test_time_scale_jump_starts_linear_at_constant_velocity():
    """With T = the jump's dt, Linear's alpha starts at 1 in the model's units: x + dt·v exactly."""
    import torch

    from fastegnn_md.graph import FramePair, collate
    from fastegnn_md.training import TrainConfig, make_model

    rng = np.random.default_rng(0)
    pair = FramePair(rng.random((6, 3)), rng.normal(size=(6, 3)), rng.random((6, 3)), np.ones((6, 1)))
    batch = collate([pair], cutoff=None, dtype=torch.float64)
    for time_scale in ("jump", 1.0, 0.01):
        model, hparams = make_model(TrainConfig(model="linear", time_scale=time_scale), 1, dt=0.075)
        with torch.no_grad():
            out = model.double()(batch).positions.numpy()
        np.testing.assert_allclose(out, pair.positions + 0.075 * pair.velocities, rtol=0, atol=1e-7)  # alpha: float32
        assert ("time_scale" in hparams) == (time_scale != 1.0)
    with pytest.raises(ValueError, match="time_scale must be a positive time or 'jump'"):
        TrainConfig(time_scale="step")


def test_evaluate_on_the_dataset_matches_a_reload(water, water_run, capsys):
    assert main(["evaluate", str(water_run / "best.pt"), "--data", str(water), "--json", "--repeats", "1",
                 "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    # 40 frames, jump 15, backward velocities: input frames 15..24, all 10 taken (fewer than 15).
    assert result["examples"] == 10 and math.isfinite(result["mse"]) and result["mse"] > 0

    ckpt = load_checkpoint(water_run / "best.pt")
    reopened = open_for_checkpoint(water, ckpt.data_spec)
    pairs = reopened.load("test")
    mse = evaluate_mse(ckpt.build_model(), pairs, ckpt.data_spec.cutoff, ckpt.data_spec.drop_rate)
    assert mse == pytest.approx(result["mse"], rel=1e-6)


def test_open_for_checkpoint_reads_the_same_pairs(water, water_run):
    spec = load_checkpoint(water_run / "best.pt").data_spec
    trained = open_dataset(water, sph=SPHOptions())
    reopened = open_for_checkpoint(water, spec)
    assert reopened.spec_fields["extra"] == trained.spec_fields["extra"]
    for split in ("train", "test"):
        a, b = trained.load(split), reopened.load(split)
        assert [p.metadata["frames"] for p in a] == [p.metadata["frames"] for p in b]
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p.positions, q.positions)
            np.testing.assert_array_equal(p.velocities, q.velocities)
            np.testing.assert_array_equal(p.target_positions, q.target_positions)
    assert [p.metadata["frames"][0] for p in trained.load("train")][:10] == list(range(15, 25))


def test_flags_change_jump_velocity_cutoff_and_gravity(water, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("train", "--data", water, "--model", "egnn", "--out", run, "--jump", "5", "--velocity", "paper",
               "--cutoff", "0.1", "--gravity-axis", "none", "--time-scale", "1", "--max-train", "4",
               "--max-valid", "2", *TINY) == 0
    ckpt = load_checkpoint(run / "best.pt")
    spec = ckpt.data_spec
    assert (spec.frame_stride, spec.velocity_convention, spec.cutoff, spec.gravity_axis) == (5, "forward", 0.1, None)
    assert spec.dt == pytest.approx(0.025) and "gravity_axis" not in ckpt.hparams
    assert "time_scale" not in ckpt.hparams and ckpt.build_model().time_scale == 1.0
    capsys.readouterr()
    assert cli("evaluate", run / "best.pt", "--data", water, "--json", "--repeats", "1", "--max-examples", "3") == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 3

    run = tmp_path / "run-x"
    assert cli("train", "--data", water, "--model", "linear", "--out", run, "--gravity-axis", "x",
               "--max-train", "4", "--max-valid", "2", *TINY) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.data_spec.gravity_axis == ckpt.hparams["gravity_axis"] == [-1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- walls, TFRecord, Python API
def test_walls_are_inputs_only_through_training_and_prediction(walls, tmp_path):
    dataset = open_dataset(walls, sph=SPHOptions(jump=3))
    assert dataset.format == SPH_FORMAT
    assert dataset.spec_fields["extra"]["kinematic_attr_columns"] == [3]
    assert dataset.spec_fields["gravity_axis"] == [0.0, -1.0, 0.0]  # no record: Water-3D's −y
    train = dataset.load("train")
    assert len(train) == 2 * 15 and train[0].moving.tolist() == [True] * 12 + [False] * 8
    spec = dataset.spec_fields
    config = TrainConfig(model="fastegnn", hidden=8, layers=1, virtual_nodes=2, cutoff=spec["cutoff"], epochs=1,
                         batch_size=10, mmd_weight=0.01, gravity_axis=spec["gravity_axis"])
    Trainer(config, train, dataset.load("valid"), tmp_path, spec, progress=False).fit(resume=False)

    predictor = Predictor.from_checkpoint(tmp_path / "best.pt")
    pair = dataset.load("test")[0]
    jump = predictor.predict(pair.positions, pair.velocities, pair.node_attrs)
    np.testing.assert_array_equal(jump.positions[12:], pair.positions[12:].astype(np.float32))
    assert np.abs(jump.positions[:12] - pair.positions[:12]).max() > 1e-4
    reopened = open_for_checkpoint(walls, predictor.spec)
    assert len(reopened.load("test")) == 15


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def nbody(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nbody")
    kwargs = dict(num_train=2, num_valid=1, num_test=1, num_particles=4, num_frames=6, seed=1, progress=False)
    if "use_compile" in inspect.signature(generate_dataset).parameters:
        kwargs["use_compile"] = False
    generate_dataset(root, **kwargs)
    return root


def test_flags_of_another_kind_are_one_line_errors(walls, nbody, tmp_path, capsys):
    out = ["--out", tmp_path / "run", *TINY]
    for flags, needle in (
        (["--topology", walls / "metadata.json"], "--topology: applies to MD trajectory files"),
        (["--stride", "2"], "--stride: applies to MD trajectory files"),
        (["--frames", "1", "2"], "--frames: applies to N-body"),
        (["--velocity", "physical"], "--velocity: SPH dataset"),
        (["--cutoff", "0"], "--cutoff"),
        (["--time-scale", "step"], "--time-scale: must be a positive time or 'jump', got 'step'"),
        (["--time-scale", "-1"], "train: time_scale must be a positive time or 'jump', got -1.0"),
    ):
        assert needle in run_error(capsys, ["train", "--data", walls, *flags, *out])
    line = run_error(capsys, ["train", "--data", walls, "--gravity-axis", "w", *out])
    assert "--gravity-axis: must be x, y, z or none" in line
    line = run_error(capsys, ["train", "--data", nbody, "--gravity-axis", "y", *out])
    assert "--gravity-axis: applies to SPH dataset directories" in line and "N-body" in line
    line = run_error(capsys, ["train", "--data", nbody, "--velocity", "paper", *out])
    assert "--velocity" in line and "N-body" in line
    trajectory = tmp_path / "md.xtc"
    trajectory.write_bytes(b"")
    line = run_error(capsys, ["train", "--data", trajectory, "--gravity-axis", "z", *out])
    assert "--gravity-axis: applies to SPH" in line


def test_box_weight_trains_on_sph_data_and_is_a_one_line_error_on_data_without_a_box(walls, nbody, tmp_path,
                                                                                     capsys):
    assert cli("train", "--data", walls, "--jump", "3", "--box-weight", "5", "--out", tmp_path / "box", *TINY) == 0
    assert load_checkpoint(tmp_path / "box" / "best.pt").training["config"]["box_weight"] == 5.0
    assert "train_box" in json.loads((tmp_path / "box" / "metrics.jsonl").read_text().splitlines()[0])
    line = run_error(capsys, ["train", "--data", nbody, "--frames", "1", "4", "--box-weight", "5", "--out", tmp_path / "nb", *TINY])
    assert "box_weight needs data with a box" in line
    assert "must be a finite number >= 0" in run_error(
        capsys, ["train", "--data", walls, "--jump", "3", "--box-weight", "-1", "--out", tmp_path / "neg", *TINY])


def test_density_weight_trains_on_sph_data_with_the_graph_cutoff_as_its_default_radius(walls, tmp_path, capsys):
    assert cli("train", "--data", walls, "--jump", "3", "--density-weight", "0.5", "--out", tmp_path / "d", *TINY) == 0
    config = load_checkpoint(tmp_path / "d" / "best.pt").training["config"]
    assert config["density_weight"] == 0.5 and config["density_radius"] is None and config["cutoff"] > 0
    assert json.loads((tmp_path / "d" / "metrics.jsonl").read_text().splitlines()[0])["train_density"] >= 0
    assert "density_radius must be a positive length" in run_error(
        capsys, ["train", "--data", walls, "--jump", "3", "--density-weight", "1", "--density-radius", "0",
                 "--out", tmp_path / "neg", *TINY])


def test_starts_and_start_window_choose_the_input_frames_and_are_recorded(walls, nbody, tmp_path, capsys):
    """--starts N --start-window F: N input frames per trajectory among the first F (the authors'
    15 among 250 by default), recorded so evaluate and rollouts read the data the same way."""
    run = tmp_path / "window"
    assert cli("train", "--data", walls, "--jump", "3", "--starts", "4", "--start-window", "10", "--out", run,
               *TINY) == 0
    spec = load_checkpoint(run / "best.pt").data_spec
    assert (spec.extra["num_starts"], spec.extra["start_window"]) == (4, 10)
    pairs = open_for_checkpoint(walls, spec).load("train")
    frames = [p.metadata["frames"][0] for p in pairs]
    assert len(frames) == 2 * 4 and max(frames) < 10 and min(frames) >= 3  # backward velocities need t >= jump
    default = open_dataset(walls, sph=SPHOptions(jump=3)).load("train")
    assert max(p.metadata["frames"][0] for p in default) >= 10  # the window is what moved them
    line = run_error(capsys, ["train", "--data", nbody, "--starts", "4", "--out", tmp_path / "nb", *TINY])
    assert "--starts: applies to SPH dataset directories" in line
    assert "--start-window" in run_error(
        capsys, ["train", "--data", walls, "--start-window", "0", "--out", tmp_path / "zero", *TINY])


def test_evaluate_refuses_data_of_another_kind(walls, nbody, tmp_path, capsys):
    spec = open_dataset(walls, sph=SPHOptions(jump=3)).spec_fields
    config = TrainConfig(model="linear", cutoff=spec["cutoff"], epochs=1, batch_size=10)
    dataset = open_dataset(walls, sph=SPHOptions(jump=3))
    Trainer(config, dataset.load("train", 10), dataset.load("valid", 5), tmp_path / "run", spec, progress=False).fit()
    best = tmp_path / "run" / "best.pt"
    assert "trained on an SPH dataset" in run_error(capsys, ["evaluate", best, "--data", nbody])
    assert "--topology: applies to MD" in run_error(capsys, ["evaluate", best, "--data", walls, "--topology", best])

    slower = tmp_path / "slower"
    shutil.copytree(walls, slower)
    metadata = json.loads((slower / "metadata.json").read_text())
    metadata["dt"] = 0.2
    (slower / "metadata.json").write_text(json.dumps(metadata))
    line = run_error(capsys, ["evaluate", best, "--data", slower])
    assert "jump of 3 frames spans 0.6" in line and "0.3" in line

    ckpt = load_checkpoint(best)
    with pytest.raises(DataError, match="is an SPH dataset"):
        ckpt.data_spec.extra = {"dataset_format": "fastegnn-md nbody"}
        open_for_checkpoint(walls, ckpt.data_spec)


def test_a_sampled_jump_trains_with_the_energy_score_from_a_deterministic_start(walls, tmp_path, capsys):
    """--noise-channels K --position-loss energy-score, fine-tuned (--init) from a deterministic run:
    the noise heads start at zero (the start's jump exactly) and training moves them, so the jump
    becomes a sample; without noise channels the energy score is a one-line error."""
    tiny = ["--hidden", "8", "--layers", "1", "--threads", "1", "--quiet", "--jump", "3", "--seed", "0"]
    assert cli("train", "--data", walls, "--epochs", "1", "--out", tmp_path / "plain", *tiny) == 0
    start = str(tmp_path / "plain" / "last.pt")
    assert cli("train", "--data", walls, "--epochs", "3", "--lr", "1e-2", "--init", start, "--noise-channels", "2",
               "--position-loss", "energy-score", "--out", tmp_path / "sampled", *tiny) == 0
    ckpt = load_checkpoint(tmp_path / "sampled" / "last.pt")
    mmd_weight = ckpt.training["config"]["mmd_weight"]
    assert mmd_weight > 0
    for line in (tmp_path / "sampled" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)  # the loss is the energy score plus the MMD term, not the MSE
        assert record["train_loss"] == pytest.approx(record["train_energy_score"] + mmd_weight * record["train_mmd"],
                                                     rel=1e-6)
    assert ckpt.hparams["noise_channels"] == 2 and ckpt.training["config"]["position_loss"] == "energy-score"
    heads = [v for k, v in ckpt.state_dict.items() if ".noise_head.second." in k]
    assert heads and max(float(v.abs().max()) for v in heads) > 0
    predictor = Predictor.from_checkpoint(tmp_path / "sampled" / "last.pt")
    pair = open_for_checkpoint(walls, ckpt.data_spec).load("test")[0]
    first = predictor.predict(pair.positions, pair.velocities, pair.node_attrs).positions
    second = predictor.predict(pair.positions, pair.velocities, pair.node_attrs).positions
    assert np.abs(first - second).max() > 0
    # A rollout of a sampled jump is seeded: the same seed repeats it, another draws another.
    from fastegnn_md.adapters.sph import read_lagrangebench
    from fastegnn_md.rollouts.sph import rollout_sph

    def rolled(seed: int, name: str) -> tuple[np.ndarray, str]:
        out = rollout_sph(walls, tmp_path / "sampled" / "last.pt", split="test", jumps=3, progress=False,
                          report_dir=tmp_path / name, seed=seed)
        (frames,) = list(read_lagrangebench(out.predicted))
        return frames.positions, out.report["info"]["jumps"]

    (a, described), (b, _), (c, _) = rolled(1, "r1"), rolled(1, "r1b"), rolled(2, "r2")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0 and "a sample of the model (2 noise channels, seed 1)" in described
    # Noise into the node features instead: the same fine-tune, its embedding leaves zero.
    assert cli("train", "--data", walls, "--epochs", "1", "--lr", "1e-2", "--init", start, "--noise-channels", "2",
               "--noise-into", "features", "--position-loss", "energy-score", "--out", tmp_path / "f", *tiny) == 0
    features = load_checkpoint(tmp_path / "f" / "last.pt")
    assert features.hparams["noise_into"] == "features"
    assert float(features.state_dict["noise_embedding.weight"].abs().max()) > 0
    assert not any(".noise_head." in key for key in features.state_dict)
    assert "energy-score scores sampled jumps: it needs noise_channels > 0" in run_error(
        capsys, ["train", "--data", walls, "--position-loss", "energy-score", "--out", tmp_path / "e", *TINY])
    assert "noise_channels: model egnn has no sampled jump" in run_error(
        capsys, ["train", "--data", walls, "--model", "egnn", "--noise-channels", "2", "--out", tmp_path / "g", *TINY])
