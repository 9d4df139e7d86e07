"""`fastegnn-md rollout DATASET_DIR`: SPH rollouts, their LagrangeBench HDF5 output, report and stops.

A tiny Water-3D-style dataset (SPlisHSPlasH, 175-210 coarse water particles, 40 frames) and a
tiny FastEGNN trained in-process on its backward-velocity pairs (jump 5 frames) are made once
per module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch


from fastegnn_md.adapters.sph import (  # noqa: E402
    DEEPMIND_KINEMATIC,
    SPHTrajectory,
    frame_pairs,
    open_sph_dataset,
    particle_types_to_attrs,
    read_lagrangebench,
    write_dataset,
)
from fastegnn_md.adapters.splishsplash import SPHSceneSettings, generate_sph_dataset  # noqa: E402
from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from fastegnn_md.cli import main  # noqa: E402
from fastegnn_md.predictor import Predictor  # noqa: E402
from fastegnn_md.reports.sph import _errors_figure, density_at_last_jump  # noqa: E402
from fastegnn_md.sph_rollout import rollout_sph  # noqa: E402
from fastegnn_md.training import TrainConfig, Trainer  # noqa: E402

ERROR_PREFIX = "fastegnn-md: error: "
JUMP = 5  # frames per learned jump
# d = 5 cm in a 1 m box, 5-7 particles per block axis, 40 frames 5 ms apart (~1 s to simulate).
# Water alone (the format before issue 16, still read): the pipeline tests below count on every
# particle being scored; `test_stored_walls_follow_the_reference_and_are_not_scored` uses the walls.
SETTINGS = SPHSceneSettings(
    particle_radius=0.025, time_step=0.0025, num_frames=40, block_size_range=(0.3, 0.4), initial_speed=0.5, seed=3,
    store_walls=False,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sph") / "water"
    return generate_sph_dataset(root, SETTINGS, num_train=1, num_valid=1, num_test=1, progress=False, formats=("h5",))


def _pairs(directory: Path, split: str):
    metadata, trajectories = open_sph_dataset(directory, split)
    return [
        pair
        for trajectory in trajectories
        for pair in frame_pairs(trajectory, JUMP, starts=range(JUMP, trajectory.num_frames - JUMP, 4),
                                velocity="backward", frame_dt=metadata["dt"])
    ], metadata


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory) -> Path:
    """Tiny FastEGNN (hidden 8, 1 layer, 1 epoch) on the train split's backward pairs."""
    torch.set_num_threads(1)
    train, metadata = _pairs(dataset, "train")
    valid, _ = _pairs(dataset, "valid")
    spec = {  # what fastegnn_md.data.sources records for SPH directories
        "units": {"length": "dimensionless", "time": "s"},
        "dt": JUMP * metadata["dt"],
        "frame_stride": JUMP,
        "velocity_convention": "backward",
        "extra": {"particle_type_convention": "deepmind", "kinematic_attr_columns": [DEEPMIND_KINEMATIC]},
    }
    config = TrainConfig(hidden=8, layers=1, cutoff=metadata["default_connectivity_radius"], epochs=1,
                         batch_size=4, sigma=0.1, mmd_weight=0.1, mmd_samples=20)
    run = tmp_path_factory.mktemp("run")
    Trainer(config, train, valid, run, spec, str(dataset), progress=False).fit(resume=False)
    return run / "best.pt"


@pytest.fixture(scope="module")
def reference(dataset) -> np.ndarray:
    """The test trajectory's positions (T, N, 3), float64."""
    _, trajectories = open_sph_dataset(dataset, "test")
    return next(iter(trajectories)).positions.astype(np.float64)


@pytest.fixture(scope="module")
def cli_rollout(dataset, checkpoint, tmp_path_factory):
    """`fastegnn-md rollout DATASET --checkpoint ... --jumps 5` (start frame = JUMP): the report dir and stdout."""
    report_dir = tmp_path_factory.mktemp("rollout") / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["rollout", str(dataset), "--checkpoint", str(checkpoint), "--split", "test", "--trajectory", "0",
                     "--jumps", "5", "--report", str(report_dir), "--quiet"])
    assert code == 0
    return report_dir, stdout.getvalue()


def test_cli_writes_the_predicted_h5_report_and_plots(cli_rollout, reference):
    report_dir, stdout = cli_rollout
    (predicted,) = list(read_lagrangebench(report_dir / "predicted.h5"))
    assert predicted.positions.shape == (6, reference.shape[1], 3)  # the start frame + 5 jumps
    assert predicted.positions.dtype == np.float32
    np.testing.assert_array_equal(predicted.positions[0], reference[JUMP].astype(np.float32))
    assert np.isfinite(predicted.positions).all()
    assert predicted.convention == "deepmind" and (predicted.particle_type == 5).all()
    for name in ("report.json", "report.md", "frames.png", "errors.png"):
        assert (report_dir / name).stat().st_size > 0
    assert (report_dir / "frames.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["jumps"] == report["model_jumps"] == 5 and report["info"]["stopped"] is None
    assert [row["frame"] for row in report["per_jump"]] == [10, 15, 20, 25, 30]
    assert set(report["horizons"]["mse_at"]) == {"1", "5", "20"}
    assert report["horizons"]["mse_at"]["20"]["model"] is None  # only 5 jumps made
    for row in report["per_jump"]:
        assert set(row["sinkhorn"]) == {"model", "no motion", "constant velocity"}
        assert all(value >= 0 for value in row["sinkhorn"].values())
    assert "MSE at 1 / 5 / 20 jumps: model" in stdout and "report.md" in stdout
    assert "most particles outside the box at any jump: reference 0, model " in stdout
    markdown = (report_dir / "report.md").read_text()
    assert "MSE_5" in markdown and "![frames](frames.png)" in markdown


def test_trivial_predictors_match_hand_computed_errors(cli_rollout, reference):
    report_dir, _ = cli_rollout
    report = json.loads((report_dir / "report.json").read_text())
    start = reference[JUMP]
    step = reference[JUMP] - reference[0]  # constant velocity: the last jump's displacement again
    dt = report["jump_time"]
    for k, row in enumerate(report["per_jump"], start=1):
        target = reference[JUMP + k * JUMP]
        assert row["mse"]["no motion"] == pytest.approx(((target - start) ** 2).sum(axis=1).mean(), rel=1e-9)
        const = start + k * step
        assert row["mse"]["constant velocity"] == pytest.approx(((target - const) ** 2).sum(axis=1).mean(), rel=1e-9)
        assert row["kinetic_energy"]["no motion"] == 0.0
        assert row["kinetic_energy"]["constant velocity"] == pytest.approx(0.5 * (step**2).sum() / dt**2, rel=1e-9)
        previous = reference[k * JUMP]
        energy = 0.5 * ((target - previous) ** 2).sum() / dt**2
        assert row["kinetic_energy"]["reference"] == pytest.approx(energy, rel=1e-6)
    mse = [row["mse"]["no motion"] for row in report["per_jump"]]
    assert report["horizons"]["mse_n"]["5"]["no motion"] == pytest.approx(np.mean(mse))


def test_horizon_table_reads_the_kinetic_energy_error_and_the_wins_at_each_horizon(cli_rollout):
    """Item 4's horizon reading: |KE error| at jump n per predictor, and whether the model is below
    both trivial predictors there on MSE, Sinkhorn and kinetic energy, from the per-jump rows;
    None past the model's last jump (5 of 20 here)."""
    report_dir, _ = cli_rollout
    report = json.loads((report_dir / "report.json").read_text())
    horizons = report["horizons"]
    for n in ("1", "5"):
        row = report["per_jump"][int(n) - 1]
        for name, error in row["kinetic_energy_error"].items():
            assert horizons["kinetic_energy_error_at"][n][name] == pytest.approx(abs(error), rel=1e-12)
        for metric in ("mse", "sinkhorn", "kinetic_energy_error"):
            model = abs(row[metric]["model"])
            expected = all(model < abs(row[metric][other]) for other in ("no motion", "constant velocity"))
            assert horizons["model_beats_all"][n][metric] is expected
    assert horizons["kinetic_energy_error_at"]["20"]["model"] is None
    assert set(horizons["model_beats_all"]["20"].values()) == {None}
    markdown = (report_dir / "report.md").read_text()
    assert "| abs. KE error at 5 |" in markdown and "below every trivial predictor at jump n" in markdown
    assert "20: – · – · –" in markdown


def test_density_rows_recomputed_by_brute_force(cli_rollout, reference, dataset):
    """The per-jump density (neighbours within the connectivity radius, nearest-neighbour distance,
    densest water relative to rest with the metadata's particle radius), recomputed by brute force
    for the reference's frame, "no motion" (the start at every jump) and the model's stored frame;
    the report's last-jump and densest lines."""
    from fastegnn_md.sph_kernel import cubic_kernel

    report_dir, _ = cli_rollout
    report = json.loads((report_dir / "report.json").read_text())
    (predicted,) = list(read_lagrangebench(report_dir / "predicted.h5"))

    def nearest(frame: np.ndarray) -> float:
        distances = np.linalg.norm(frame[:, None] - frame[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        return float(distances.min(axis=1).mean())

    def count(frame: np.ndarray, radius: float) -> float:
        distances = np.linalg.norm(frame[:, None] - frame[None], axis=-1)
        return float(((distances <= radius).sum() - len(frame)) / len(frame))

    def densest(frame: np.ndarray, particle_radius: float) -> float:
        distances = np.linalg.norm(frame[:, None] - frame[None], axis=-1)
        return float(((2 * particle_radius) ** 3 * cubic_kernel(distances, 4 * particle_radius).sum(axis=1)).max())

    radius = report["density_radius"]
    assert radius == json.loads((dataset / "metadata.json").read_text())["default_connectivity_radius"]
    assert report["particle_radius"] == SETTINGS.particle_radius
    for k, row in enumerate(report["per_jump"], start=1):
        frames = {"reference": reference[JUMP + k * JUMP], "no motion": reference[JUMP],
                  "model": predicted.positions[k].astype(np.float64)}
        for name, frame in frames.items():
            assert row["nearest_neighbour_distance"][name] == pytest.approx(nearest(frame), rel=1e-5)
            assert row["neighbour_count"][name] == pytest.approx(count(frame, radius), abs=0.05)
            assert row["densest_water"][name] == pytest.approx(densest(frame, SETTINGS.particle_radius), rel=1e-5)
    assert row["densest_water"]["reference"] < 1.01  # the solver's water
    last = report["per_jump"][-1]
    assert density_at_last_jump(report) == {
        metric: {name: last[metric][name] for name in ("reference", *report["predictors"])}
        for metric in ("neighbour_count", "nearest_neighbour_distance", "densest_water")}
    assert report["densest_water"] == {
        name: max(row["densest_water"][name] for row in report["per_jump"]) for name in ("reference", *report["predictors"])}
    markdown = (report_dir / "report.md").read_text()
    assert "mean nearest-neighbour distance of the water at jump 5" in markdown
    assert f"density of the water at jump 5, mean number of neighbours within {radius:g}" in markdown
    assert "densest water at any jump, relative to the rest density (particle radius 0.025" in markdown
    # errors.png: a fourth and fifth panel, the densities, where the rows have them
    assert len(_errors_figure(report).axes) == 5
    for dropped, panels in (({"densest_water"}, 4), ({"neighbour_count", "densest_water"}, 3)):
        rows = [{key: value for key, value in row.items() if key not in dropped} for row in report["per_jump"]]
        assert len(_errors_figure(dict(report, per_jump=rows)).axes) == panels


def test_win_counts_follow_the_per_jump_rows(cli_rollout):
    """The report's win counts, recomputed from its own per-jump rows: per trivial predictor and
    against both at once; the signed kinetic-energy error wins by being nearer zero."""
    report_dir, stdout = cli_rollout
    report = json.loads((report_dir / "report.json").read_text())
    rows, summary = report["per_jump"], report["summary"]
    trivial = ("no motion", "constant velocity")
    for metric in ("mse", "sinkhorn", "kinetic_energy_error"):
        for name in trivial:
            lower = sum(abs(row[metric]["model"]) < abs(row[metric][name]) for row in rows)
            assert summary["model_vs_trivial"][name][f"model_lower_{metric}"] == lower
        both = sum(all(abs(row[metric]["model"]) < abs(row[metric][name]) for name in trivial) for row in rows)
        assert summary["model_beats_all"][metric] == both
    # "no motion" has zero kinetic energy, so its error is minus the reference's: where the
    # reference is nearly still, any motion of the model's loses to it
    assert all(row["kinetic_energy_error"]["no motion"] == -row["kinetic_energy"]["reference"] for row in rows)
    wins = summary["model_beats_all"]
    line = (f"jumps where the model is below both trivial predictors: MSE {wins['mse']}, Sinkhorn {wins['sinkhorn']}, "
            f"kinetic energy {wins['kinetic_energy_error']} of 5 jumps")
    assert line in stdout and "below every trivial predictor at once: MSE" in (report_dir / "report.md").read_text()


def test_the_model_is_fed_its_own_outputs(cli_rollout, checkpoint, reference):
    report_dir, _ = cli_rollout
    (predicted,) = list(read_lagrangebench(report_dir / "predicted.h5"))
    predictor = Predictor.from_checkpoint(checkpoint)
    attrs, _ = particle_types_to_attrs(predicted.particle_type, "deepmind")
    dt = predictor.dt
    x0 = reference[JUMP]
    x1 = predictor.predict(x0, (x0 - reference[0]) / dt, attrs).positions
    x2 = predictor.predict(x1, (x1 - x0) / dt, attrs).positions
    np.testing.assert_allclose(predicted.positions[1], x1, atol=1e-6)
    np.testing.assert_allclose(predicted.positions[2], x2, atol=1e-6)


def test_walls_follow_the_reference_and_are_not_scored(dataset, checkpoint, reference, tmp_path):
    # The generated data store no walls: add 30 static wall particles (DeepMind type 3) on the floor.
    metadata, trajectories = open_sph_dataset(dataset, "test")
    water = next(iter(trajectories))
    floor = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 6), [0.0], np.linspace(0.2, 0.8, 5), indexing="ij"), -1)
    floor = np.broadcast_to(floor.reshape(1, -1, 3), (water.num_frames, 30, 3))
    with_walls = SPHTrajectory(
        np.concatenate([water.positions, floor], axis=1),
        np.concatenate([water.particle_type, np.full(30, DEEPMIND_KINEMATIC)]),
        key=0, convention="deepmind",
    )
    meta = {key: value for key, value in metadata.items() if key != "num_particles_max"}
    write_dataset(tmp_path / "walls", {"test": [with_walls]}, meta, formats=("h5",))
    out = rollout_sph(tmp_path / "walls", checkpoint, jumps=3, report_dir=tmp_path / "r", sinkhorn_particles=50,
                      progress=False)
    (predicted,) = list(read_lagrangebench(out.predicted))
    np.testing.assert_array_equal(predicted.positions[:, -30:], floor[:4].astype(np.float32))
    assert out.report["scored_particles"] == water.num_particles and out.report["particles"] == water.num_particles + 30
    assert out.report["sinkhorn"]["particles"] == 50
    assert any("30 wall particles" in note for note in out.report["notes"])


def test_stored_walls_follow_the_reference_and_are_not_scored(checkpoint, reference, tmp_path):
    """`sph generate`'s own format: the box's walls after the water, type 3, in every frame."""
    data = generate_sph_dataset(tmp_path / "walled", dataclasses.replace(SETTINGS, store_walls=True), num_train=1,
                                num_valid=0, num_test=1, progress=False, formats=("h5",))
    (stored,) = list(open_sph_dataset(data, "test")[1])
    water = reference.shape[1]
    walls = stored.num_particles - water
    assert walls > 0 and (stored.particle_type[water:] == DEEPMIND_KINEMATIC).all()
    np.testing.assert_array_equal(stored.positions[:, :water], reference.astype(np.float32))  # same scene
    out = rollout_sph(data, checkpoint, jumps=3, report_dir=tmp_path / "r", sinkhorn_particles=50, progress=False)
    (predicted,) = list(read_lagrangebench(out.predicted))
    np.testing.assert_array_equal(predicted.positions[:, water:], stored.positions[:4, water:])
    assert not np.array_equal(predicted.positions[1:, :water], stored.positions[2 * JUMP:5 * JUMP:JUMP, :water])
    assert out.report["scored_particles"] == water and out.report["particles"] == water + walls


def put_seven_below_the_floor(monkeypatch) -> None:
    """Every prediction of the test puts water particles 0–6 at y = −0.05, under the box's floor."""
    original = Predictor.predict

    def seven_below_the_floor(self, *args, **kwargs):
        jump = original(self, *args, **kwargs)
        jump.positions[:7, 1] = -0.05
        return jump

    monkeypatch.setattr(Predictor, "predict", seven_below_the_floor)


def test_particles_outside_the_box_are_counted(dataset, checkpoint, tmp_path, monkeypatch):
    """Issue 16: the report counts scored particles outside metadata["bounds"] per jump and at worst."""
    put_seven_below_the_floor(monkeypatch)
    out = rollout_sph(dataset, checkpoint, jumps=3, report_dir=tmp_path / "r", sinkhorn_particles=50, progress=False)
    assert [row["outside_box"]["model"] for row in out.report["per_jump"]] == [7, 7, 7]
    assert all(row["outside_box"]["reference"] == 0 for row in out.report["per_jump"])
    assert out.report["outside_box"] == {"reference": 0, "model": 7, "no motion": 0, "constant velocity": 0}
    assert "outside the box at any jump: reference 0, model 7" in (tmp_path / "r" / "report.md").read_text()


def test_keep_in_box_moves_water_back_and_reports_it(dataset, checkpoint, tmp_path, monkeypatch):
    """--keep-in-box M: after every jump the water lies in the box shrunk by M, for the model and
    the trivial predictors; the report counts the model's particles moved at each jump (jump 1's
    count is the unconstrained jump's particles outside the shrunk box) and says so."""
    put_seven_below_the_floor(monkeypatch)
    free = rollout_sph(dataset, checkpoint, jumps=1, report_dir=tmp_path / "free", sinkhorn_particles=50,
                       progress=False)
    (unconstrained,) = list(read_lagrangebench(free.predicted))
    margin = 0.05
    first = unconstrained.positions[1].astype(np.float64)
    expected_first = int(((first < margin) | (first > 1 - margin)).any(axis=1).sum())
    assert expected_first >= 7

    out = rollout_sph(dataset, checkpoint, jumps=3, report_dir=tmp_path / "r", sinkhorn_particles=50, progress=False,
                      keep_in_box=margin)
    (predicted,) = list(read_lagrangebench(out.predicted))
    water = predicted.positions[1:].astype(np.float64)
    assert water.min() >= margin - 1e-6 and water.max() <= 1 - margin + 1e-6
    np.testing.assert_allclose(water[:, :7, 1], margin, atol=1e-6)
    moved = out.report["info"]["constrained_particles"]
    assert len(moved) == 3 and moved[0] == expected_first and min(moved) >= 7
    assert out.report["info"]["keep_in_box"] == margin
    assert out.report["outside_box"] == {"reference": 0, "model": 0, "no motion": 0, "constant velocity": 0}
    assert free.report["outside_box"]["model"] == 7
    assert any(note.startswith(f"--keep-in-box {margin:g}") and f"at most {max(moved)}" in note
               for note in out.report["notes"])


def test_keep_in_box_clips_water_only_and_counts_what_it_moved():
    """The constraint alone: water outside [M, 1 − M] goes to the limit on each crossed axis, water
    inside stays bit for bit, walls are never moved (even outside), and a dataset without a box
    is a one-line error."""
    from fastegnn_md.errors import DataError
    from fastegnn_md.rollouts.box_constraint import KeepInBox

    moving = np.array([True, True, True, False])
    box = KeepInBox([[0.0, 1.0]] * 3, 0.1, moving)
    positions = np.array([[0.5, -0.2, 0.5], [1.3, 1.05, 0.95], [0.2, 0.3, 0.4], [-1.0, -1.0, -1.0]])
    out = box(1, positions)
    np.testing.assert_array_equal(out, [[0.5, 0.1, 0.5], [0.9, 0.9, 0.9], [0.2, 0.3, 0.4], [-1.0, -1.0, -1.0]])
    assert box.last_moved == 2
    np.testing.assert_array_equal(positions[0], [0.5, -0.2, 0.5])  # the input is not changed in place
    assert box(2, out).tolist() == out.tolist() and box.last_moved == 0
    with pytest.raises(DataError, match="needs the dataset's box"):
        KeepInBox(None, 0.02, moving)


def test_keep_density_spreads_squeezed_water_and_reports_it(dataset, checkpoint, tmp_path, monkeypatch):
    """--keep-density: a model that squeezes the water to 0.7 of its size about its centre gets
    every frame back to at most 1 + tolerance of rest density (the metadata's particle radius),
    inside the box; the report holds the model's densest water before each push, and says so."""
    from fastegnn_md.rollouts.density_constraint import DEFAULT_TOLERANCE
    from fastegnn_md.sph_kernel import relative_density

    original = Predictor.predict

    def squeeze(self, *args, **kwargs):
        jump = original(self, *args, **kwargs)
        centre = jump.positions.mean(axis=0)
        jump.positions[:] = centre + 0.7 * (jump.positions - centre)
        return jump

    monkeypatch.setattr(Predictor, "predict", squeeze)
    free = rollout_sph(dataset, checkpoint, jumps=3, report_dir=tmp_path / "free", sinkhorn_particles=50,
                       progress=False)
    (squeezed,) = list(read_lagrangebench(free.predicted))
    radius = SETTINGS.particle_radius
    assert relative_density(squeezed.positions[1].astype(np.float64), radius).max() > 1.5

    out = rollout_sph(dataset, checkpoint, jumps=3, report_dir=tmp_path / "r", sinkhorn_particles=50, progress=False,
                      keep_density=True)
    (predicted,) = list(read_lagrangebench(out.predicted))
    for frame in predicted.positions[1:].astype(np.float64):
        assert relative_density(frame, radius).max() <= 1 + DEFAULT_TOLERANCE + 1e-5  # float32 file
        assert frame.min() >= radius - 1e-6 and frame.max() <= 1 - radius + 1e-6
    info = out.report["info"]["keep_density"]
    assert info["particle_radius"] == radius and info["tolerance"] == DEFAULT_TOLERANCE
    assert len(info["densest_before"]) == 3 and min(info["densest_before"]) > 1.5
    assert len(info["pushed_particles"]) == 3 and min(info["pushed_particles"]) > 0
    assert len(info["densest_after"]) == 3 and max(info["densest_after"]) <= 1 + DEFAULT_TOLERANCE
    assert not any("stopped after" in note for note in out.report["notes"])
    assert any(note.startswith("--keep-density: after every jump") for note in out.report["notes"])
    assert "--keep-density" in (tmp_path / "r" / "report.md").read_text()
    # a push cut short (one sweep) is said so, with the density it left
    import functools

    from fastegnn_md.rollouts import sph as sph_case
    monkeypatch.setattr(sph_case, "KeepDensity", functools.partial(sph_case.KeepDensity, iterations=1))
    short = rollout_sph(dataset, checkpoint, jumps=1, report_dir=tmp_path / "short", sinkhorn_particles=50,
                        progress=False, keep_density=True)
    (after,) = short.report["info"]["keep_density"]["densest_after"]
    assert after > 1 + DEFAULT_TOLERANCE
    assert any(note.startswith("--keep-density: at 1 of 1 jumps the push stopped after 1 sweeps") and f"{after:.3g}" in note
               for note in short.report["notes"])
    monkeypatch.undo()
    monkeypatch.setattr(Predictor, "predict", squeeze)
    # --particle-radius overrides the metadata's: a larger radius is a stricter (larger) spacing
    wider = rollout_sph(dataset, checkpoint, jumps=1, report_dir=tmp_path / "w", sinkhorn_particles=50,
                        progress=False, keep_density=True, particle_radius=1.2 * radius)
    assert wider.report["info"]["keep_density"]["particle_radius"] == pytest.approx(1.2 * radius)
    (wide,) = list(read_lagrangebench(wider.predicted))
    assert relative_density(wide.positions[1].astype(np.float64), 1.2 * radius).max() <= 1 + DEFAULT_TOLERANCE + 1e-5


def test_keep_density_needs_a_particle_radius(dataset, checkpoint, tmp_path, capsys):
    """Metadata without the generator's settings: --keep-density is a one-line error naming the way out."""
    edited = tmp_path / "no-radius"
    shutil.copytree(dataset, edited)
    metadata = json.loads((edited / "metadata.json").read_text())
    metadata.pop("generator", None)
    (edited / "metadata.json").write_text(json.dumps(metadata))
    err = _run_error(["rollout", edited, "--checkpoint", checkpoint, "--report", tmp_path / "r", "--quiet",
                      "--keep-density"], capsys)
    assert "--keep-density: needs the solver's particle radius" in err and "pass --particle-radius R" in err
    plain = rollout_sph(edited, checkpoint, jumps=1, report_dir=tmp_path / "plain", sinkhorn_particles=50,
                        progress=False)  # without a radius: no densest-water readout, nothing else missing
    assert plain.report["densest_water"] is None and "densest_water" not in plain.report["per_jump"][0]


def test_sampled_sph_rollouts_draw_from_the_fitted_spread_reproducibly(dataset, checkpoint, tmp_path):
    """rollout_sph(sample=True): a checkpoint calibrated on the valid split's pairs rolls out
    sampled jumps; the same seed gives the same frames, another seed others, and neither is the
    mean rollout."""
    from fastegnn_md.calibration import calibrate_checkpoint, save_with_spread

    ckpt = load_checkpoint(checkpoint)
    valid, _ = _pairs(dataset, "valid")
    spread, _ = calibrate_checkpoint(ckpt, valid)
    spread_ckpt = save_with_spread(ckpt, spread, tmp_path / "spread.pt")

    def frames(name: str, **options) -> np.ndarray:
        out = rollout_sph(dataset, spread_ckpt, jumps=2, report_dir=tmp_path / name, sinkhorn_particles=50,
                          progress=False, **options)
        (predicted,) = list(read_lagrangebench(out.predicted))
        return predicted.positions

    first, again, other = frames("a", sample=True, seed=1), frames("b", sample=True, seed=1), frames("c", sample=True, seed=2)
    mean = frames("mean")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[1:], other[1:]) and not np.allclose(first[1:], mean[1:])
    np.testing.assert_array_equal(first[0], mean[0])


def test_non_finite_predictions_stop_the_rollout_keeping_frames(dataset, checkpoint, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = Predictor.predict

    def nan_on_third_jump(self, *args, **kwargs):
        calls["n"] += 1
        jump = original(self, *args, **kwargs)
        if calls["n"] == 3:
            jump.positions = np.full_like(jump.positions, np.nan)
        return jump

    monkeypatch.setattr(Predictor, "predict", nan_on_third_jump)
    code = main(["rollout", str(dataset), "--checkpoint", str(checkpoint), "--jumps", "5",
                 "--report", str(tmp_path / "r"), "--sinkhorn-particles", "50", "--quiet"])
    assert code == 1
    assert "rollout stopped early: jump 3: the model predicted non-finite positions" in capsys.readouterr().err
    (predicted,) = list(read_lagrangebench(tmp_path / "r" / "predicted.h5"))
    assert predicted.positions.shape[0] == 3  # start + the 2 jumps made; nothing invented after the stop
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["model_jumps"] == 2 and report["info"]["stopped"].startswith("jump 3:")
    assert report["horizons"]["mse_at"]["5"]["model"] is None
    assert report["horizons"]["mse_at"]["5"]["no motion"] is not None
    assert (tmp_path / "r" / "frames.png").is_file()


def test_predicted_h5_is_streamed_and_a_killed_run_keeps_its_frames(dataset, checkpoint, tmp_path, monkeypatch):
    """While the rollout runs, every frame made is on disk in ``predicted.partial.h5`` (a copy of
    its bytes taken mid-run reads back); a run killed at jump 3 leaves start + 2 jumps there and an earlier
    finished ``predicted.h5`` untouched; a finished run renames the partial file into place."""
    report = tmp_path / "r"
    assert main(["rollout", str(dataset), "--checkpoint", str(checkpoint), "--jumps", "2",
                 "--report", str(report), "--sinkhorn-particles", "50", "--quiet"]) == 0
    earlier = (report / "predicted.h5").read_bytes()
    seen = []
    original = Predictor.predict

    def read_then_kill(self, *args, **kwargs):
        # The bytes on disk now are what a SIGKILL would leave: a copy must read back whole.
        shutil.copy(report / "predicted.partial.h5", tmp_path / "snapshot.h5")
        with h5py.File(tmp_path / "snapshot.h5", "r") as handle:
            seen.append(handle["00000/position"].shape[0])
        if len(seen) == 3:
            raise KeyboardInterrupt  # as a killed process: no finish
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", read_then_kill)
    code = main(["rollout", str(dataset), "--checkpoint", str(checkpoint), "--jumps", "5",
                 "--report", str(report), "--sinkhorn-particles", "50", "--quiet"])
    assert code == 130  # the CLI's "interrupted"
    assert seen == [1, 2, 3]  # the start, then one more frame before each jump
    (partial,) = list(read_lagrangebench(report / "predicted.partial.h5"))
    assert partial.positions.shape[0] == 3
    assert (report / "predicted.h5").read_bytes() == earlier
    monkeypatch.setattr(Predictor, "predict", original)
    assert main(["rollout", str(dataset), "--checkpoint", str(checkpoint), "--jumps", "4",
                 "--report", str(report), "--sinkhorn-particles", "50", "--quiet"]) == 0
    (predicted,) = list(read_lagrangebench(report / "predicted.h5"))
    assert predicted.positions.shape[0] == 5 and not (report / "predicted.partial.h5").exists()


def _run_error(args, capsys) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith(ERROR_PREFIX) and err.count("\n") == 1, err
    return err


def _edited_checkpoint(source: Path, target: Path, **spec_changes) -> Path:
    ckpt = load_checkpoint(source)
    for key, value in spec_changes.items():
        setattr(ckpt.data_spec, key, value)
    return save_checkpoint(target, ckpt.model_name, ckpt.hparams, ckpt.build_model(), ckpt.data_spec, ckpt.training)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"velocity_convention": "forward"}, "'forward' velocity convention"),
        ({"units": {"length": "Å", "time": "ps"}}, "is a molecular model"),
    ],
)
def test_checkpoints_that_cannot_roll_out_sph_are_refused(dataset, checkpoint, tmp_path, capsys, change, message):
    edited = _edited_checkpoint(checkpoint, tmp_path / "edited.pt", **change)
    err = _run_error(["rollout", dataset, "--checkpoint", edited, "--report", tmp_path / "r", "--quiet"], capsys)
    assert message in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--topology", "x.pdb"], "--topology: applies to MD trajectory files"),
        (["--start", "2"], "--start 2: must be in 5..34"),
        (["--jumps", "9"], "--jumps 9: from start frame 5"),
        (["--trajectory", "3"], "--trajectory 3: split 'test'"),
        (["--split", "nope"], "no nope.h5 or nope.tfrecord"),
        (["--out", "pred.xtc"], "LagrangeBench HDF5"),
        (["--keep-in-box", "-1"], "--keep-in-box -1.0: must be a length >= 0"),
        (["--keep-in-box", "0.6"], "--keep-in-box 0.6: leaves no room in the box"),
        (["--particle-radius", "0"], "--particle-radius 0.0: must be a positive length"),
        (["--keep-density", "--particle-radius", "-1"], "--particle-radius -1.0: must be a positive length"),
    ],
)
def test_bad_sph_arguments_are_one_line_errors(dataset, checkpoint, tmp_path, capsys, extra, message):
    err = _run_error(["rollout", dataset, "--checkpoint", checkpoint, "--report", tmp_path / "r", "--quiet", *extra],
                     capsys)
    assert message in err


def test_without_checkpoint_the_shipped_sph_model_rolls_out_the_shipped_trajectory(tmp_path, capsys):
    """`fastegnn-md rollout trajectories/sph` needs no --checkpoint: the shipped water-box model
    rolls out the shipped test trajectory (water and stored walls), and the report says so."""
    shipped = Path(__file__).resolve().parents[1] / "trajectories" / "sph"
    report = tmp_path / "r"
    assert main(["rollout", str(shipped), "--jumps", "2", "--report", str(report), "--quiet"]) == 0
    capsys.readouterr()
    saved = json.loads((report / "report.json").read_text())
    assert saved["info"]["checkpoint"] == "water-box"
    assert "no --checkpoint: used the shipped SPH model water-box" in saved["notes"]
    assert "used the shipped SPH model water-box" in (report / "report.md").read_text()
    assert (report / "predicted.h5").is_file()


def test_a_shipped_default_that_does_not_fit_says_to_pass_a_checkpoint(dataset, tmp_path, capsys):
    """A dataset whose particle types the default model was not trained on: one line, with the way out."""
    edited = tmp_path / "other"
    shutil.copytree(dataset, edited)
    metadata = json.loads((edited / "metadata.json").read_text())
    metadata["particle_type_convention"] = "lagrangebench"
    (edited / "metadata.json").write_text(json.dumps(metadata))
    err = _run_error(["rollout", edited, "--report", tmp_path / "r", "--quiet"], capsys)
    assert "water-box" in err and "pass --checkpoint" in err


def test_md_refuses_sph_flags(dataset, tmp_path, capsys):
    assert "--split: applies to SPH dataset directories" in _run_error(
        ["rollout", tmp_path / "traj.dcd", "--split", "test"], capsys)
    assert "--keep-in-box: applies to SPH dataset directories" in _run_error(
        ["rollout", tmp_path / "traj.dcd", "--keep-in-box", "0.02"], capsys)
    assert "--keep-density: applies to SPH dataset directories" in _run_error(
        ["rollout", tmp_path / "traj.dcd", "--keep-density"], capsys)
    (tmp_path / "empty").mkdir()
    assert "without metadata.json" in _run_error(["rollout", tmp_path / "empty"], capsys)
