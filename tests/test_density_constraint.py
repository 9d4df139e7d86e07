"""The solver's kernel and relative density (`fastegnn_md.sph_kernel`), and the opt-in
incompressibility constraint of SPH rollouts (`fastegnn_md.rollouts.density_constraint`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.spatial.transform import Rotation

from fastegnn_md.adapters.sph import DEEPMIND_KINEMATIC, open_sph_dataset
from fastegnn_md.adapters.splishsplash import SPHSceneSettings, generate_sph_dataset
from fastegnn_md.errors import DataError
from fastegnn_md.rollouts.density_constraint import DEFAULT_TOLERANCE, KeepDensity, particle_radius_of
from fastegnn_md.sph_kernel import cubic_kernel, cubic_kernel_slope, relative_density

RADIUS = 0.02


def lattice(count: int, spacing: float, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A simple cubic lattice of count^3 points: (count^3, 3)."""
    axis = np.arange(count) * spacing
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid + np.asarray(origin)


def test_cubic_kernel_integrates_to_one_and_its_slope_is_its_derivative():
    support = 0.08
    integral, _ = quad(lambda r: 4 * math.pi * r**2 * float(cubic_kernel(np.array([r]), support)[0]), 0, support,
                       points=[support / 2])
    assert integral == pytest.approx(1.0, abs=1e-10)
    d = np.linspace(0.001, 0.095, 200)
    step = 1e-7
    numeric = (cubic_kernel(d + step, support) - cubic_kernel(d - step, support)) / (2 * step)
    np.testing.assert_allclose(cubic_kernel_slope(d, support), numeric, rtol=1e-6, atol=1e-3)
    assert cubic_kernel(np.array([support, 0.1]), support).tolist() == [0.0, 0.0]
    assert cubic_kernel_slope(np.array([0.0]), support)[0] == 0.0


def test_the_seeding_lattice_is_at_rest_density_and_a_squeezed_one_above():
    rest = relative_density(lattice(9, 2 * RADIUS), RADIUS)
    interior = rest.reshape(9, 9, 9)[2:-2, 2:-2, 2:-2]
    np.testing.assert_allclose(interior, 1.0, atol=2e-4)
    assert rest.min() < 0.65  # corners: a free surface is below rest density
    squeezed = relative_density(lattice(9, 1.6 * RADIUS), RADIUS).reshape(9, 9, 9)[2:-2, 2:-2, 2:-2]
    assert squeezed.min() > 1.5


def test_relative_density_matches_a_brute_force_sum():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.2, size=(150, 3))
    support = 4 * RADIUS
    distance = np.linalg.norm(x[:, None] - x[None], axis=-1)
    expected = (2 * RADIUS) ** 3 * cubic_kernel(distance, support).sum(axis=1)  # includes i itself (d = 0)
    np.testing.assert_allclose(relative_density(x, RADIUS), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="particle_radius"):
        relative_density(x, 0.0)


def test_solver_water_is_never_denser_than_at_rest(tmp_path):
    """The fact the constraint rests on, on the solver's own output: every frame of a small
    SPlisHSPlasH scene (water and its stored walls) keeps its water within 0.5 % of rest density,
    while the seeding lattice is at it."""
    settings = SPHSceneSettings(particle_radius=0.025, time_step=0.0025, num_frames=40, block_size_range=(0.3, 0.4),
                                initial_speed=0.5, seed=3, store_walls=True)
    data = generate_sph_dataset(tmp_path / "w", settings, num_train=1, num_valid=0, num_test=1, progress=False,
                                formats=("h5",))
    metadata, trajectories = open_sph_dataset(data, "test")
    (trajectory,) = list(trajectories)
    water = trajectory.particle_type != DEEPMIND_KINEMATIC
    radius = particle_radius_of(metadata, None)
    assert radius == 0.025
    densest = [relative_density(frame.astype(np.float64), radius)[water].max() for frame in trajectory.positions]
    assert densest[0] == pytest.approx(1.0, abs=2e-4)
    assert max(densest) < 1.005


def squeezed_block(with_floor: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 6^3 water block at 0.7 of the rest spacing resting on a floor of wall particles at rest
    spacing (walls last): positions (N, 3), moving (N,)."""
    water = lattice(6, 0.7 * 2 * RADIUS, origin=(0.1, 0.02, 0.1))
    parts, moving = [water], [np.ones(len(water), bool)]
    if with_floor:
        axis = np.arange(-2, 12) * 2 * RADIUS + 0.06
        floor = np.stack(np.meshgrid(axis, [0.0], axis, indexing="ij"), axis=-1).reshape(-1, 3)
        parts.append(floor)
        moving.append(np.zeros(len(floor), bool))
    return np.concatenate(parts), np.concatenate(moving)


def test_compressed_water_is_spread_to_rest_density_in_the_box_and_walls_never_move():
    """A block squeezed to three times rest density on the floor: spread until it is at most
    1 + tolerance, upwards (the push never takes water nearer a face than r), walls untouched."""
    positions, moving = squeezed_block()
    before = relative_density(positions, RADIUS)[moving].max()
    assert before > 2.0
    keep = KeepDensity(RADIUS, moving, bounds=[[0.0, 1.0]] * 3)
    out = keep(1, positions)
    after = relative_density(out, RADIUS)[moving]
    assert after.max() <= 1 + DEFAULT_TOLERANCE
    assert keep.last_density == pytest.approx(before, rel=1e-12)
    assert keep.last_after == pytest.approx(after.max(), rel=1e-12)
    assert 1 <= keep.last_iterations < keep.iterations
    assert keep.last_moved == moving.sum()
    np.testing.assert_array_equal(out[~moving], positions[~moving])
    assert out[moving].min() >= RADIUS - 1e-15 and out[moving].max() <= 1 - RADIUS
    assert out[moving, 1].max() > positions[moving, 1].max() + RADIUS  # the top rose
    np.testing.assert_array_equal(positions, squeezed_block()[0])  # the input is not changed in place


def test_the_push_never_takes_water_out_of_the_box_nor_further_out():
    """Without the box a hard push carries water between the one-particle-thick floor's particles
    (their push is parallel to the floor there); with it, water the model put below the floor
    is not pushed further down."""
    positions, moving = squeezed_block()
    free = KeepDensity(RADIUS, moving)(1, positions)
    assert free[moving, 1].min() < 0.0
    below = positions.copy()
    below[0, 1] = -0.01  # the model put one particle under the floor
    out = KeepDensity(RADIUS, moving, bounds=[[0.0, 1.0]] * 3)(1, below)
    assert out[0, 1] >= -0.01 and np.delete(out[moving], 0, axis=0).min() >= RADIUS - 1e-15
    with pytest.raises(DataError, match="leaves no room in the box"):
        KeepDensity(RADIUS, moving, bounds=[[0.0, 0.03]] * 3)


def test_water_at_or_below_rest_density_does_not_move():
    positions = lattice(6, 2.05 * RADIUS)
    keep = KeepDensity(RADIUS, np.ones(len(positions), bool))
    out = keep(1, positions)
    np.testing.assert_array_equal(out, positions)
    assert keep.last_moved == 0 and keep.last_iterations == 0 and keep.last_density < 1.0


def test_the_constraint_is_equivariant_under_rotations_reflections_translations_and_permutations():
    positions, moving = squeezed_block()
    rng = np.random.default_rng(1)
    jitter = positions + np.where(moving[:, None], rng.normal(0, 0.003, positions.shape), 0.0)
    base = KeepDensity(RADIUS, moving, iterations=20)(1, jitter)
    assert not np.allclose(base, jitter)
    for improper in (False, True):
        rotation = Rotation.random(random_state=int(improper)).as_matrix()
        if improper:
            rotation = rotation @ np.diag([1.0, 1.0, -1.0])
        shift = np.array([0.3, -1.2, 2.5])
        moved = KeepDensity(RADIUS, moving, iterations=20)(1, jitter @ rotation.T + shift)
        np.testing.assert_allclose(moved, base @ rotation.T + shift, atol=1e-11)
    order = rng.permutation(len(positions))
    permuted = KeepDensity(RADIUS, moving[order], iterations=20)(1, jitter[order])
    np.testing.assert_allclose(permuted, base[order], atol=1e-11)


def test_bad_settings_are_one_line_errors():
    moving = np.ones(3, bool)
    with pytest.raises(DataError, match="particle radius -0.1 must be a positive length"):
        KeepDensity(-0.1, moving)
    with pytest.raises(DataError, match="iterations 0 must be >= 1"):
        KeepDensity(RADIUS, moving, iterations=0)
    with pytest.raises(DataError, match=r"metadata.json does not record .*pass --particle-radius R"):
        particle_radius_of({"dt": 0.005}, None)
    assert particle_radius_of({"generator": {"settings": {"particle_radius": 0.02}}}, None) == 0.02
    assert particle_radius_of({}, 0.03) == 0.03
    with pytest.raises(DataError, match="positions"):
        KeepDensity(RADIUS, moving)(1, np.zeros((4, 3)))

