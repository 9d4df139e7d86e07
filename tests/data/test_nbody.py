"""Tests for the charged N-body generator and reader (tiny systems; the file runs in seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fastegnn_md.data import nbody
from fastegnn_md.data.nbody import generate_dataset, load_nbody, simulate_charged_nbody
from fastegnn_md.errors import DataError
from fastegnn_md.graph import FramePair

SMALL = dict(num_particles=10, num_frames=4, sample_every=5, progress=False, use_compile=False)


# --------------------------------------------------------------------------- reference


def reference_forces(x: np.ndarray, q: np.ndarray, max_force: float) -> np.ndarray:
    """Plain per-particle Coulomb sum of one system: x (N, 3), q (N,)."""
    forces = np.zeros_like(x)
    for i in range(len(q)):
        diff = x[i] - np.delete(x, i, axis=0)
        dist = np.linalg.norm(diff, axis=1, keepdims=True)
        forces[i] = (q[i] * np.delete(q, i)[:, None] * diff / dist**3).sum(axis=0)
    return np.clip(forces, -max_force, max_force)


def reference_simulation(x0, v0, q, num_frames, sample_every, dt):
    """NRI leapfrog for one system, written out step by step."""
    x, v = x0.copy(), v0.copy()
    max_force = 0.1 / dt
    xs, vs = [x.copy()], [v.copy()]
    v = v + dt * reference_forces(x, q, max_force)
    for step in range(1, (num_frames - 1) * sample_every + 1):
        x = x + dt * v
        if step % sample_every == 0:
            xs.append(x.copy())
            vs.append(v.copy())
        v = v + dt * reference_forces(x, q, max_force)
    return np.stack(xs), np.stack(vs)


def energy(x: np.ndarray, v: np.ndarray, q: np.ndarray) -> float:
    """Kinetic + Coulomb energy of one system (unit masses): 1/2 sum v^2 + sum_{i<j} q_i q_j / r_ij."""
    i, j = np.triu_indices(len(q), k=1)
    potential = (q[i] * q[j] / np.linalg.norm(x[i] - x[j], axis=1)).sum()
    return 0.5 * (v**2).sum() + potential


# --------------------------------------------------------------------------- simulation


def test_shapes_dtypes_and_initial_state():
    out = simulate_charged_nbody(6, seed=3, **SMALL)
    assert out["positions"].shape == (6, 4, 10, 3) and out["positions"].dtype == np.float32
    assert out["velocities"].shape == (6, 4, 10, 3) and out["velocities"].dtype == np.float32
    assert out["charges"].shape == (6, 10) and out["charges"].dtype == np.float32
    assert set(np.unique(out["charges"])) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(out["velocities"][:, 0], axis=-1), 0.5, rtol=1e-6)
    x0, v0, q = nbody.initial_conditions(6, 10, seed=3)
    np.testing.assert_array_equal(out["positions"][:, 0], x0.astype(np.float32))
    np.testing.assert_array_equal(out["charges"], q.astype(np.float32))


def test_initial_positions_keep_density_of_five_particle_system():
    x0, _, q = nbody.initial_conditions(20, 100, seed=1)
    assert nbody.initial_loc_std(5) == pytest.approx(1.0)
    assert x0.std() == pytest.approx(20 ** (1 / 3), rel=0.05)
    assert abs(q.mean()) < 0.1


def test_reproducible_and_independent_of_chunk_size():
    first = simulate_charged_nbody(6, seed=7, chunk_size=6, **SMALL)
    again = simulate_charged_nbody(6, seed=7, chunk_size=6, **SMALL)
    for chunk_size in (4, 1):
        chunked = simulate_charged_nbody(6, seed=7, chunk_size=chunk_size, **SMALL)
        for key in first:
            np.testing.assert_array_equal(chunked[key], first[key])
    prefix = simulate_charged_nbody(2, seed=7, **SMALL)  # system k does not depend on S
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
        np.testing.assert_array_equal(prefix[key], first[key][:2])


def test_seeds_and_splits_differ():
    base = simulate_charged_nbody(3, seed=0, **SMALL)
    other_seed = simulate_charged_nbody(3, seed=1, **SMALL)
    other_split = simulate_charged_nbody(3, seed=0, split_index=1, **SMALL)
    assert not np.allclose(base["positions"], other_seed["positions"])
    assert not np.allclose(base["positions"], other_split["positions"])


@pytest.mark.parametrize("kernel", [nbody._forces_eager, nbody._forces_fused])
def test_vectorised_matches_numpy_reference(kernel):
    x0, v0, q = nbody.initial_conditions(4, 10, seed=5)
    x0[0, 1] = x0[0, 0] + 1e-3  # a close pair, so the force clip is exercised
    xs, vs = nbody._integrate(x0, v0, q, 4, 5, 0.001, kernel)
    for k in range(4):
        ref_x, ref_v = reference_simulation(x0[k], v0[k], q[k], 4, 5, 0.001)
        np.testing.assert_allclose(xs[k], ref_x, rtol=0, atol=1e-10)
        np.testing.assert_allclose(vs[k], ref_v, rtol=0, atol=1e-10)
    assert np.abs(vs[0, 1] - v0[0]).max() > 0.09  # the clipped kick 0.1 / dt * dt happened


def test_public_simulation_matches_reference_in_float32():
    out = simulate_charged_nbody(2, seed=2, **SMALL)
    x0, v0, q = nbody.initial_conditions(2, 10, seed=2)
    for k in range(2):
        ref_x, ref_v = reference_simulation(x0[k], v0[k], q[k], 4, 5, 0.001)
        np.testing.assert_allclose(out["positions"][k], ref_x, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out["velocities"][k], ref_v, rtol=0, atol=1e-5)


def test_compiled_kernel_matches_eager():
    try:
        compiled = simulate_charged_nbody(3, seed=4, chunk_size=3, **{**SMALL, "use_compile": True})
    except Exception as exc:  # no C++ toolchain here: the eager path is what runs
        pytest.skip(f"torch.compile unavailable: {exc}")
    eager = simulate_charged_nbody(3, seed=4, chunk_size=3, **SMALL)
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=0, atol=1e-6)


def test_force_components_are_clipped():
    pos = np.array([[[0.0, 0.0, 0.0], [1e-3, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    q = np.array([[1.0, 1.0, -1.0]])
    diag_pad = torch.diag(torch.full((3,), np.inf, dtype=torch.float64))
    args = (torch.tensor(pos).transpose(1, 2).contiguous(), torch.tensor(q), diag_pad, 100.0)
    for kernel in (nbody._forces_eager, nbody._forces_fused):
        forces = kernel(*args).transpose(1, 2).numpy()[0]
        np.testing.assert_allclose(forces[:2, 0], [-100.0, 100.0])  # 1e6 unclipped; repulsion
        np.testing.assert_allclose(forces, reference_forces(pos[0], q[0], 100.0), rtol=1e-12)


def test_energy_is_conserved_without_clipping():
    grid = np.stack(np.meshgrid(*[[0.0, 2.0]] * 3, indexing="ij"), -1).reshape(1, 8, 3)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(1, 8, 3))
    v0 = 0.5 * direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    q = np.array([[1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0]])
    dt, sample_every = 0.001, 100
    xs, vs = nbody._integrate(grid, v0, q, 11, sample_every, dt, nbody._forces_eager)
    energies = []
    for x, v in zip(xs[0, 1:], vs[0, 1:]):
        unclipped = reference_forces(x, q[0], np.inf)
        assert np.abs(unclipped).max() < 0.1 / dt
        # Recorded velocities lag half a step behind the positions: synchronise them first.
        energies.append(energy(x, v + 0.5 * dt * unclipped, q[0]))
    scale = 0.5 * (vs[0] ** 2).sum(axis=(1, 2)).max() + 1.0
    assert np.ptp(energies) / scale < 1e-7
    # NRI starts with a full kick v0 + dt F0 (a leapfrog would use dt/2): an O(dt) offset.
    assert abs(energies[0] - energy(xs[0, 0], vs[0, 0], q[0])) / scale < 1e-4
    assert np.abs(xs[0, -1] - xs[0, 0]).max() > 0.1  # the particles did move


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nbody") / "data"
    path = generate_dataset(out, num_train=3, num_valid=2, num_test=1, num_particles=5, seed=11,
                            progress=False, use_compile=False)
    assert path == out
    return out


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def test_generate_dataset_files_and_metadata(dataset: Path):
    assert sorted(p.name for p in dataset.iterdir()) == ["metadata.json", "test.npz", "train.npz", "valid.npz"]
    meta = json.loads((dataset / "metadata.json").read_text())
    assert meta["format"] == "fastegnn-md nbody" and meta["format_version"] == 1
    assert meta["splits"] == {"train": 3, "valid": 2, "test": 1}
    assert (meta["num_particles"], meta["num_frames"], meta["sample_every"], meta["seed"]) == (5, 41, 100, 11)
    assert meta["dt"] == 0.001 and meta["frame_dt"] == pytest.approx(0.1)
    assert meta["units"] == "dimensionless" and meta["description"]
    with np.load(dataset / "train.npz") as npz:
        assert npz["positions"].shape == (3, 41, 5, 3) and npz["charges"].shape == (3, 5)
    expected = simulate_charged_nbody(2, num_particles=5, seed=11, split_index=1, progress=False, use_compile=False)
    with np.load(dataset / "valid.npz") as npz:
        np.testing.assert_array_equal(npz["positions"], expected["positions"])


def test_load_round_trip(dataset: Path):
    pairs = load_nbody(dataset, "train")
    assert len(pairs) == 3 and all(isinstance(p, FramePair) for p in pairs)
    with np.load(dataset / "train.npz") as npz:
        positions, velocities, charges = npz["positions"], npz["velocities"], npz["charges"]
    for k, pair in enumerate(pairs):
        np.testing.assert_array_equal(pair.positions, positions[k, 30])
        np.testing.assert_array_equal(pair.velocities, velocities[k, 30])
        np.testing.assert_array_equal(pair.target_positions, positions[k, 40])
        np.testing.assert_array_equal(pair.target_velocities, velocities[k, 40])
        np.testing.assert_array_equal(pair.node_attrs, charges[k][:, None])
        np.testing.assert_array_equal(pair.masses, np.ones(5))
        assert pair.metadata["dt"] == pytest.approx(1.0)
        assert pair.metadata["source"] == str(dataset / "train.npz")
        assert pair.metadata["frames"] == (30, 40) and pair.metadata["system"] == k
    short = load_nbody(dataset, "valid", frame_in=0, frame_out=5, max_systems=1)
    assert len(short) == 1 and short[0].metadata["dt"] == pytest.approx(0.5)
    assert load_nbody(dataset, "test", max_systems=0) == []


def test_generate_dataset_overwrites_atomically(copy: Path):
    generate_dataset(copy, 1, 1, 1, num_particles=3, num_frames=3, seed=0, progress=False,
                     sample_every=2, use_compile=False)
    assert sorted(p.name for p in copy.iterdir()) == ["metadata.json", "test.npz", "train.npz", "valid.npz"]
    assert load_nbody(copy, frame_in=0, frame_out=2)[0].num_nodes == 3


def _rewrite_metadata(root: Path, **changes) -> None:
    meta = json.loads((root / "metadata.json").read_text())
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    (root / "metadata.json").write_text(json.dumps(meta))


def _rewrite_train(root: Path, **changes) -> None:
    with np.load(root / "train.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changes)
    np.savez(root / "train.npz", **{k: v for k, v in arrays.items() if v is not None})


def _break(root: Path, how: str) -> None:
    if how == "no metadata":
        (root / "metadata.json").unlink()
    elif how == "metadata not json":
        (root / "metadata.json").write_text("{oops")
    elif how == "wrong format":
        _rewrite_metadata(root, format="something else")
    elif how == "metadata lacks keys":
        _rewrite_metadata(root, frame_dt=None)
    elif how == "split file missing":
        (root / "train.npz").unlink()
    elif how == "not an npz":
        (root / "train.npz").write_bytes(b"definitely not a zip archive")
    elif how == "npz without arrays":
        np.savez(root / "train.npz", something=np.zeros(3))
    elif how == "velocities shape":
        _rewrite_train(root, velocities=np.zeros((3, 41, 5, 2), np.float32))
    elif how == "charges shape":
        _rewrite_train(root, charges=np.zeros((2, 5), np.float32))
    elif how == "frames disagree with metadata":
        _rewrite_metadata(root, num_frames=50)


BROKEN = [
    ("no metadata", "metadata.json"),
    ("metadata not json", "metadata.json"),
    ("wrong format", "metadata.json"),
    ("metadata lacks keys", "metadata.json"),
    ("split file missing", "train.npz"),
    ("not an npz", "train.npz"),
    ("npz without arrays", "train.npz"),
    ("velocities shape", "train.npz"),
    ("charges shape", "train.npz"),
    ("frames disagree with metadata", "train.npz"),
]


@pytest.mark.parametrize("how, file_name", BROKEN, ids=[how for how, _ in BROKEN])
def test_broken_datasets_raise_data_error(copy: Path, how: str, file_name: str):
    _break(copy, how)
    with pytest.raises(DataError, match=file_name) as info:
        load_nbody(copy, "train")
    assert "\n" not in str(info.value)


def test_missing_directory_and_unknown_split(tmp_path: Path, dataset: Path):
    with pytest.raises(DataError, match="no_such_dir"):
        load_nbody(tmp_path / "no_such_dir")
    with pytest.raises(DataError, match="metadata.json.*'holdout'"):
        load_nbody(dataset, "holdout")


@pytest.mark.parametrize("frames", [(30, 41), (-1, 40), (40, 30), (10, 10)])
def test_bad_frame_indices(dataset: Path, frames: tuple[int, int]):
    with pytest.raises(DataError, match="train.npz") as info:
        load_nbody(dataset, "train", *frames)
    if frames == (30, 41):
        assert "41 frames" in str(info.value)
