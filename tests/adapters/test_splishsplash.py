"""SPlisHSPlasH adapter: reproducible, physically sane "water falling in a box" trajectories.

Small scenes only (125-343 water particles, a few frames, coarse particles): each simulation
is a child process taking well under a second of solver time.
"""

import dataclasses
import json
import os
import tempfile

import numpy as np
import pytest

# pysplishsplash and h5py are install requirements: no skips. Never import pysplishsplash here:
# without libGLdispatch preloaded (the adapter does that) the import segfaults.

from fastegnn_md.adapters import splishsplash  # noqa: E402
from fastegnn_md.adapters.sph import open_sph_dataset  # noqa: E402
from fastegnn_md.adapters.sph import box_wall_particles  # noqa: E402
from fastegnn_md.adapters.splishsplash import (  # noqa: E402
    WALL_TYPE,
    WATER_TYPE,
    SPHSceneSettings,
    generate_sph_dataset,
    scene_layout,
    simulate_scene,
)
from fastegnn_md.cli import main  # noqa: E402
from fastegnn_md.errors import DataError  # noqa: E402

# d = 5 cm in a 1 m box: 5-7 particles per block axis, free fall from rest (block scenes only;
# the other kinds have their own tests below).
SMALL = SPHSceneSettings(
    particle_radius=0.025, time_step=0.0025, num_frames=8, block_size_range=(0.3, 0.4), initial_speed=0.0, seed=3,
    scenes=("block",),
)


@pytest.fixture(scope="module")
def trajectory():
    return simulate_scene(SMALL, 0)


def test_same_seed_gives_identical_arrays_and_indices_differ(trajectory):
    again = simulate_scene(SMALL, 0)
    np.testing.assert_array_equal(again.positions, trajectory.positions)
    other = simulate_scene(SMALL, 1)
    assert scene_layout(SMALL, 1) != scene_layout(SMALL, 0) != scene_layout(SMALL, 0, split_index=1)
    assert scene_layout(SMALL, 0) == scene_layout(dataclasses.replace(SMALL, num_frames=50), 0)
    assert other.positions.shape != trajectory.positions.shape or not np.array_equal(
        other.positions, trajectory.positions
    )


def test_shape_types_and_particle_count_match_the_layout(trajectory):
    layout = scene_layout(SMALL, 0)
    (block,) = layout.blocks
    assert layout.scene == "block"
    n_x, n_y, n_z = block.particles_per_axis
    assert trajectory.positions.shape == (SMALL.num_frames, n_x * n_y * n_z, 3)
    assert trajectory.positions.dtype == np.float32
    assert trajectory.particle_type.dtype == np.int64
    assert (trajectory.particle_type == WATER_TYPE).all()
    assert trajectory.key == 0 and trajectory.convention == "deepmind"
    # Frame 0 is SPlisHSPlasH's lattice, x slowest and z fastest: the particle order is known.
    d = SMALL.diameter
    axes = [lo + d * np.arange(1, n + 1) for lo, n in zip(block.block_min, block.particles_per_axis)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3) / SMALL.box_size
    np.testing.assert_allclose(trajectory.positions[0], lattice, atol=1e-5)


def test_particles_stay_in_the_box_and_keep_their_identity(trajectory):
    x = trajectory.positions
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Falling from rest for 35 ms moves a particle < 2 mm per frame; a reordering of rows
    # (z-sort) would move rows by about a lattice spacing (5 cm).
    step = np.linalg.norm(np.diff(x, axis=0), axis=-1)
    assert step.max() < 0.1 * SMALL.diameter / SMALL.box_size


def test_water_falls(trajectory):
    mean_y = trajectory.positions[:, :, 1].mean(axis=1)
    assert (np.diff(mean_y) < 0).all()
    # Until it lands the block falls freely. SPlisHSPlasH integrates with symplectic Euler
    # (v += g dt, then x += v dt), so after k steps the drop is g dt^2 k (k + 1) / 2.
    k = np.arange(SMALL.num_frames) * SMALL.steps_per_frame
    drop = SMALL.gravity * SMALL.time_step**2 * k * (k + 1) / 2 / SMALL.box_size
    np.testing.assert_allclose(mean_y[0] - mean_y, drop, rtol=1e-3, atol=1e-6)


def test_generate_writes_the_dataset_and_nothing_else(tmp_path, monkeypatch, trajectory):
    cwd = tmp_path / "cwd"
    scratch = tmp_path / "tmp"
    cwd.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = generate_sph_dataset(tmp_path / "data", SMALL, num_train=1, num_valid=1, num_test=1, progress=False)
    assert list(cwd.iterdir()) == [] and list(scratch.iterdir()) == []
    names = sorted(p.name for p in out.iterdir())
    files = [f"{split}.{ext}" for split in ("train", "valid", "test") for ext in ("h5", "tfrecord")]
    assert names == sorted(["metadata.json"] + files)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["bounds"] == [[0.0, 1.0]] * 3
    assert meta["sequence_length"] == SMALL.num_frames - 1
    assert meta["dt"] == SMALL.frame_interval and meta["dim"] == 3
    assert meta["default_connectivity_radius"] == pytest.approx(1.6 * SMALL.diameter)
    assert all(len(meta[key]) == 3 for key in ("vel_mean", "vel_std", "acc_mean", "acc_std"))
    assert meta["generator"]["solver_version"] == splishsplash.solver_version() != "unknown"
    assert meta["generator"]["settings"]["seed"] == SMALL.seed
    # The train split is trajectory 0 of split 0: the same arrays as simulate_scene, then the walls.
    _, trajectories = open_sph_dataset(out, "train")
    (written,) = list(trajectories)
    water = trajectory.num_particles
    np.testing.assert_array_equal(written.positions[:, :water], trajectory.positions)
    np.testing.assert_array_equal(written.particle_type[:water], trajectory.particle_type)
    walls = box_wall_particles(np.array([[0.0, 1.0]] * 3), SMALL.diameter / SMALL.box_size)
    np.testing.assert_array_equal(written.positions[:, water:], np.broadcast_to(walls.astype(np.float32), (SMALL.num_frames, *walls.shape)))
    assert (written.particle_type[water:] == WALL_TYPE).all() and WALL_TYPE == 3
    assert meta["generator"]["walls"] == {"particle_type": 3, "spacing": SMALL.diameter, "particles": len(walls)}
    # The velocity statistics are the water's: walls do not move and are not counted.
    speeds = np.diff(trajectory.positions.astype(np.float64), axis=0).reshape(-1, 3)
    np.testing.assert_allclose(meta["vel_mean"], speeds.mean(axis=0), rtol=1e-5, atol=1e-9)


def test_generate_without_walls_stores_the_water_alone(tmp_path, trajectory):
    out = generate_sph_dataset(tmp_path / "data", dataclasses.replace(SMALL, store_walls=False), num_train=1,
                               num_valid=0, num_test=0, progress=False, formats=("h5",))
    (written,) = list(open_sph_dataset(out, "train")[1])
    np.testing.assert_array_equal(written.positions, trajectory.positions)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["generator"]["walls"] is None and "not stored" in meta["generator"]["boundary_handling"]


MIXED = dataclasses.replace(SMALL, scenes=("block", "dam_break", "drop"), initial_speed=1.0, num_frames=12)


def test_scene_kinds_are_drawn_reproducibly_and_blocks_stay_as_before():
    layouts = [scene_layout(MIXED, k) for k in range(40)]
    assert {layout.scene for layout in layouts} == {"block", "dam_break", "drop"}
    assert layouts == [scene_layout(MIXED, k) for k in range(40)]
    only_blocks = dataclasses.replace(MIXED, scenes=("block",))
    for k, layout in enumerate(layouts):  # a block trajectory does not depend on the other kinds allowed
        if layout.scene == "block":
            assert layout == scene_layout(only_blocks, k)
    d = MIXED.diameter
    gap = splishsplash.WALL_GAP * d
    for layout in layouts:
        if layout.scene == "dam_break":
            (block,) = layout.blocks
            assert block.initial_velocity == (0.0, 0.0, 0.0) and block.block_min[1] == pytest.approx(gap)
            for axis in (0, 2):  # in a corner: against one wall along x and one along z
                assert (block.block_min[axis] == pytest.approx(gap)
                        or block.block_max[axis] == pytest.approx(MIXED.box_size - gap))
        if layout.scene == "drop":
            pool, falling = layout.blocks
            n = pool.particles_per_axis
            assert n[0] == n[2] == round((MIXED.box_size - 2 * gap) / d) - 1 and 2 <= n[1] <= 4
            assert pool.block_min == pytest.approx((gap, gap, gap))
            assert falling.block_min[1] >= pool.block_max[1] + d - 1e-12 and falling.initial_velocity[1] <= 0
            assert falling.block_max[1] <= MIXED.box_size + 1e-12


@pytest.mark.parametrize("scene", ["dam_break", "drop"])
def test_other_scene_kinds_simulate_in_the_box(scene):
    settings = dataclasses.replace(MIXED, scenes=(scene,))
    layout = scene_layout(settings, 0)
    trajectory = simulate_scene(settings, 0)
    x = trajectory.positions
    assert x.shape == (settings.num_frames, layout.num_particles, 3) and np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Frame 0 holds the blocks in order: block 0's lattice first.
    first = layout.blocks[0]
    lattice = np.stack(np.meshgrid(*[lo + settings.diameter * np.arange(1, k + 1) for lo, k in
                                     zip(first.block_min, first.particles_per_axis)], indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(x[0, : first.num_particles], lattice / settings.box_size, atol=1e-5)
    if scene == "drop":  # the falling block falls
        falling = x[:, first.num_particles:, 1].mean(axis=1)
        assert falling[-1] < falling[0]
    else:  # the dam collapses: its top comes down
        assert x[-1, :, 1].max() < x[0, :, 1].max()
    # Nothing is blown off a wall at the start (blocks against a wall keep WALL_GAP more).
    speed = np.linalg.norm(np.diff(x[:, : first.num_particles], axis=0), axis=-1) / settings.frame_interval
    assert speed.max() < 1.5


def test_scenes_setting_is_checked():
    with pytest.raises(DataError, match="scenes must be a non-empty list of block, dam_break, drop"):
        dataclasses.replace(SMALL, scenes=("waves",)).validate()
    with pytest.raises(DataError, match="scenes must be a non-empty list"):
        dataclasses.replace(SMALL, scenes=()).validate()


def test_box_wall_particles_cover_every_face_once():
    bounds = np.array([[0.0, 1.0], [-0.5, 0.5], [0.0, 2.0]])
    walls = box_wall_particles(bounds, 0.25)
    n = np.array([4, 4, 8])
    assert walls.shape == (np.prod(n + 1) - np.prod(n - 1), 3)
    assert len(np.unique(np.round(walls, 9), axis=0)) == len(walls)  # no point twice (edges, corners)
    on_face = np.isclose(walls, bounds[:, 0]) | np.isclose(walls, bounds[:, 1])
    assert on_face.any(axis=1).all()  # every point lies on a face ...
    for axis in range(3):  # ... and every face is covered at the lattice spacing
        for side in (0, 1):
            face = walls[np.isclose(walls[:, axis], bounds[axis, side])]
            assert len(face) == np.prod(np.delete(n + 1, axis))
    with pytest.raises(ValueError, match="spacing must be a positive length"):
        box_wall_particles(bounds, 0.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"block_size_range": (0.5, 1.2)}, "does not fit in the box"),
        ({"min_block_height": 0.7}, "reaches above the box"),
        ({"block_size_range": (0.05, 0.1)}, "fewer than 2 particles per axis"),
        ({"block_size_range": (0.41, 0.42)}, "no whole number of particles fits"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"particle_radius": -0.01}, "particle_radius must be a positive number"),
        ({"frame_interval": 0.006}, "whole number of time steps"),
        ({"time_step": 0.025, "frame_interval": 0.025}, "more than a particle diameter"),
        ({"num_frames": 2}, "num_frames must be an integer >= 3"),
    ],
)
def test_impossible_settings_raise_one_line_data_errors(tmp_path, change, message):
    settings = dataclasses.replace(SMALL, **change)
    with pytest.raises(DataError, match=message) as info:
        generate_sph_dataset(tmp_path / "data", settings, 1, 1, 1, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "data").exists()  # refused before anything was simulated or written


def test_solver_failure_is_a_data_error_with_the_log_tail(tmp_path, monkeypatch):
    worker = tmp_path / "worker.py"
    worker.write_text("print('solver says: boom')\nraise SystemExit(3)\n")
    monkeypatch.setattr(splishsplash, "_WORKER", worker)
    with pytest.raises(DataError, match=r"SPlisHSPlasH failed: exit status 3 \(log: solver says: boom\)"):
        simulate_scene(SMALL, 0)


def test_cli_generates_and_reports_bad_settings_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["sph", "generate", "data", "--train", "1", "--valid", "1", "--test", "1", "--frames", "3",
            "--particle-radius", "0.025", "--time-step", "0.0025", "--block-size-range", "0.3", "0.3",
            "--format", "h5", "--quiet"]
    assert main(args) == 0
    assert "wrote SPH dataset (3 trajectories of 3 frames" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "data")) == ["metadata.json", "test.h5", "train.h5", "valid.h5"]
    assert sorted(os.listdir(tmp_path)) == ["data"]

    assert main(args[:3] + ["--block-size-range", "0.5", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastegnn-md: error: SPH settings: block_size_range") and "\n" not in err
