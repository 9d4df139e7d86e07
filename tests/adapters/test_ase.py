"""ASE adapter: FastEGNNCalculator, FastEGNNDynamics, atoms_from_mdanalysis and the example.

A tiny FastEGNN is trained once (module fixture, as in tests/test_rollout.py) on the
MDAnalysisTests AdK PSF/DCD backbone (855 atoms) with a jump of 5 frames = 5 ps (``backward``
velocities), and used in float64 so equivariance and Verlet identities hold to rounding.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.logger import MDLogger
from ase.md.verlet import VelocityVerlet
from MDAnalysisTests.datafiles import DCD, GRO, PSF, TPR, TRR

from fastegnn_md.adapters.ase import (
    ASE_TIME_PER_PS,
    FastEGNNCalculator,
    FastEGNNDynamics,
    ase_time_to_ps,
    atoms_from_mdanalysis,
    ps_to_ase_time,
    velocity_from_angstrom_per_ps,
    velocity_to_angstrom_per_ps,
)
from fastegnn_md.errors import CheckpointError, DataError
from fastegnn_md.predictor import Jump, Predictor

ROOT = Path(__file__).resolve().parents[2]
JUMP_FRAMES = 5  # DCD frames are 1 ps apart -> dt = 5 ps
START = 50  # DCD frame the tests start from

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def checkpoint(adk_dcd_checkpoint) -> Path:
    return adk_dcd_checkpoint


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, dtype=torch.float64)


@pytest.fixture(scope="module")
def frames() -> dict:
    """Backbone positions of frames START - 5 and START (Å) and the backbone masses."""
    universe = MDAnalysis.Universe(PSF, DCD)
    backbone = universe.select_atoms("backbone")
    previous = atoms_from_mdanalysis(backbone, frame=START - JUMP_FRAMES).get_positions()
    atoms = atoms_from_mdanalysis(backbone, frame=START)
    return {"previous": previous, "atoms": atoms}


def start_atoms(frames, rng_seed: int | None = None) -> Atoms:
    """Frame START with the backward velocity (x_t - x_{t-5ps}) / 5 ps as the Atoms' velocities."""
    atoms = frames["atoms"].copy()
    dt_ase = ps_to_ase_time(5.0)
    velocities = (atoms.get_positions() - frames["previous"]) / dt_ase
    if rng_seed is not None:
        velocities = velocities + np.random.default_rng(rng_seed).normal(0, 0.01, velocities.shape)
    atoms.set_velocities(velocities)
    return atoms


def spy_on(predictor: Predictor, monkeypatch) -> list:
    """Record (positions, velocities) of every model call on this predictor."""
    calls = []
    original = predictor.predict

    def spy(positions, velocities, node_attrs=None):
        calls.append((np.array(positions), np.array(velocities)))
        return original(positions, velocities, node_attrs)

    monkeypatch.setattr(predictor, "predict", spy)
    return calls


def one_line(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


def test_ase_time_and_velocity_units_are_exact(predictor, frames, monkeypatch):
    # One ps in ASE time: ASE's second is 1e10 * sqrt(e / amu) time units (Å sqrt(amu/eV)).
    assert ASE_TIME_PER_PS == 1000 * units.fs
    assert ASE_TIME_PER_PS == pytest.approx(1e-12 * 1e10 * math.sqrt(units._e / units._amu), rel=1e-14)
    assert ase_time_to_ps(ps_to_ase_time(5.0)) == pytest.approx(5.0, rel=1e-15)
    calc = FastEGNNCalculator(predictor, velocity_input="atoms")
    assert calc.timestep == predictor.dt * 1000 * units.fs
    assert calc.dt_ps == predictor.dt

    # 1 Å/ps set through ASE round-trips, and is what the model receives.
    atoms = frames["atoms"].copy()
    n = len(atoms)
    atoms.set_velocities(np.full((n, 3), 1.0) * (1 / (1000 * units.fs)))
    np.testing.assert_allclose(velocity_to_angstrom_per_ps(atoms.get_velocities()), 1.0, rtol=1e-14)
    np.testing.assert_allclose(velocity_from_angstrom_per_ps(np.ones(3)), 1 / (1000 * units.fs), rtol=1e-15)
    calls = spy_on(predictor, monkeypatch)
    atoms.calc = calc
    atoms.get_forces()
    np.testing.assert_allclose(calls[0][1], 1.0, rtol=1e-14)
    np.testing.assert_array_equal(calls[0][0], atoms.get_positions())
    # The kinetic energy of those velocities, from SI: 1 Å/ps = 100 m/s.
    masses = atoms.get_masses()
    expected = 0.5 * np.sum(masses * units._amu) * 3 * 100.0**2 / units._e
    assert atoms.get_kinetic_energy() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# The transport force
# ---------------------------------------------------------------------------------------------


def test_one_velocity_verlet_step_with_the_transport_force_lands_on_the_jump(predictor, frames):
    atoms = start_atoms(frames, rng_seed=1)
    calc = FastEGNNCalculator(predictor, velocity_input="atoms")
    atoms.calc = calc
    x, v, m = atoms.get_positions(), atoms.get_velocities(), atoms.get_masses()[:, None]
    jumped = calc.get_property("jumped_positions", atoms)
    expected = predictor.predict(x, velocity_to_angstrom_per_ps(v)).positions
    np.testing.assert_allclose(jumped, expected, atol=1e-10)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, 2 * m * (jumped - x - v * calc.timestep) / calc.timestep**2, rtol=1e-12)
    # By hand, in ASE units: x' = x + v dt + F/(2m) dt^2.
    dt = calc.timestep
    np.testing.assert_allclose(x + v * dt + forces / (2 * m) * dt**2, jumped, atol=1e-5)
    # ASE's VelocityVerlet with the checkpoint's dt.
    dyn = VelocityVerlet(atoms, timestep=dt)
    dyn.run(1)
    np.testing.assert_allclose(atoms.get_positions(), jumped, atol=1e-5)
    assert float(np.abs(atoms.get_positions() - jumped).max()) < 1e-9


def test_velocity_verlet_chains_jumps_with_backward_velocities(predictor, frames, monkeypatch):
    atoms = start_atoms(frames)
    calc = FastEGNNCalculator(predictor)
    calc.set_previous_positions(frames["previous"], atoms.get_positions())
    atoms.calc = calc
    calls = spy_on(predictor, monkeypatch)
    VelocityVerlet(atoms, timestep=calc.timestep).run(2)
    n_calls = len(calls)
    dt = predictor.dt
    x0 = frames["previous"]
    x1 = frames["atoms"].get_positions()
    np.testing.assert_allclose(calls[0][1], (x1 - x0) / dt, rtol=1e-12)
    x2 = predictor.predict(x1, (x1 - x0) / dt).positions
    x3 = predictor.predict(x2, (x2 - x1) / dt).positions
    np.testing.assert_allclose(atoms.get_positions(), x3, atol=1e-5)
    assert calc.last_velocity_source == "history"
    # Velocity Verlet asks twice per step at the same positions (half-step and full-step
    # momenta): the model input is the same, so it is evaluated once per position.
    assert calc.model_calls == n_calls == 3


# ---------------------------------------------------------------------------------------------
# Equivariance
# ---------------------------------------------------------------------------------------------


def test_calculator_is_e3_equivariant(predictor, frames):
    atoms = start_atoms(frames, rng_seed=2)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) > 0:
        q = q @ np.diag([1.0, 1.0, -1.0])  # a reflection as well as a rotation
    shift = np.array([12.5, -7.0, 3.25])
    moved = atoms.copy()
    moved.set_positions(atoms.get_positions() @ q.T + shift)
    moved.set_velocities(atoms.get_velocities() @ q.T)
    results = []
    for a in (atoms, moved):
        a.calc = FastEGNNCalculator(predictor, velocity_input="atoms")
        results.append({name: a.calc.get_property(name, a) for name in ("jumped_positions", "virtual_positions",
                                                                          "forces")})
    base, other = results
    np.testing.assert_allclose(other["jumped_positions"], base["jumped_positions"] @ q.T + shift, atol=1e-8)
    np.testing.assert_allclose(other["virtual_positions"], base["virtual_positions"] @ q.T + shift, atol=1e-8)
    scale = np.abs(base["forces"]).max()
    np.testing.assert_allclose(other["forces"], base["forces"] @ q.T, atol=1e-8 * scale)
    assert base["virtual_positions"].shape == (3, 3)


# ---------------------------------------------------------------------------------------------
# What the calculator refuses
# ---------------------------------------------------------------------------------------------


def test_energy_is_not_implemented_with_an_explanation(predictor, frames):
    atoms = start_atoms(frames)
    atoms.calc = FastEGNNCalculator(predictor, velocity_input="atoms")
    with pytest.raises(PropertyNotImplementedError) as excinfo:
        atoms.get_potential_energy()
    one_line(excinfo, "'energy'", "predicts positions", "transport forces")
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError):  # the model predicts no velocities
        atoms.calc.get_property("jumped_velocities", atoms)
    # MDLogger asks for the potential energy: it cannot be used (FastEGNNDynamics logs instead).
    dyn = FastEGNNDynamics(atoms)
    dyn.attach(MDLogger(dyn, atoms, io.StringIO()), interval=1)
    with pytest.raises(PropertyNotImplementedError):
        dyn.run(1)


def test_atoms_that_do_not_fit_the_checkpoint_give_one_line_errors(predictor, frames):
    atoms = frames["atoms"][:100]
    atoms.calc = FastEGNNCalculator(predictor)
    with pytest.raises(CheckpointError) as excinfo:
        atoms.get_forces()
    one_line(excinfo, "100 atoms", "855", "'backbone'")
    atoms = frames["atoms"].copy()
    atoms.calc = FastEGNNCalculator(predictor, selection_indices=np.arange(800))
    with pytest.raises(CheckpointError) as excinfo:
        atoms.get_forces()
    one_line(excinfo, "800 selected atoms (of 855)", "855")
    atoms.calc = FastEGNNCalculator(predictor)
    atoms.set_cell([100.0, 100.0, 100.0])
    atoms.pbc = True
    with pytest.raises(DataError) as excinfo:
        atoms.get_forces()
    one_line(excinfo, "periodic")
    nbody = predictor.spec.__class__(**{**predictor.spec.as_dict(), "units": {"length": "dimensionless",
                                                                              "time": "dimensionless"}})
    with pytest.raises(CheckpointError, match="needs a molecular checkpoint"):
        FastEGNNCalculator(Predictor(predictor.model, nbody, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Caching and the velocity input
# ---------------------------------------------------------------------------------------------


def test_results_are_cached_on_positions_and_momenta(predictor, frames, monkeypatch):
    atoms = start_atoms(frames)
    calc = FastEGNNCalculator(predictor, velocity_input="atoms")
    atoms.calc = calc
    calls = spy_on(predictor, monkeypatch)
    first = atoms.get_forces()
    calc.get_property("jumped_positions", atoms)
    np.testing.assert_array_equal(atoms.get_forces(), first)
    assert len(calls) == calc.model_calls == 1
    atoms.set_velocities(atoms.get_velocities() * 1.5)  # velocities matter: the model runs again
    assert calc.check_state(atoms) == ["momenta"]
    assert not np.allclose(atoms.get_forces(), first)
    assert len(calls) == 2
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 3


def test_velocity_input_policy(predictor, frames, monkeypatch):
    dt = predictor.dt
    x0, x1 = frames["previous"], frames["atoms"].get_positions()
    calls = spy_on(predictor, monkeypatch)

    # No history: the Atoms' instantaneous velocities, with a warning (approximation).
    atoms = start_atoms(frames, rng_seed=3)
    calc = FastEGNNCalculator(predictor)
    atoms.calc = calc
    with pytest.warns(UserWarning, match="approximation"):
        atoms.get_forces()
    np.testing.assert_allclose(calls[-1][1], velocity_to_angstrom_per_ps(atoms.get_velocities()), rtol=1e-14)
    assert calc.last_velocity_source == "atoms"

    # Positions moved by exactly the jump: (x' - x) / dt, whatever the Atoms' velocities are.
    jumped = calc.get_property("jumped_positions", atoms)
    atoms.set_positions(jumped)
    atoms.set_velocities(np.zeros((len(atoms), 3)))
    calc.get_property("forces", atoms)
    np.testing.assert_allclose(calls[-1][1], (jumped - x1) / dt, rtol=1e-12)
    assert calc.last_velocity_source == "history"
    # Same positions, other momenta: the same model input, no model call, new transport force.
    n_calls = len(calls)
    atoms.set_velocities(np.ones((len(atoms), 3)) * 1e-3)
    atoms.get_forces()
    assert len(calls) == n_calls and calc.last_velocity_source == "history"
    # Positions moved by something else: back to the Atoms' velocities.
    atoms.positions += 0.1
    atoms.get_forces()
    assert calc.last_velocity_source == "atoms"
    np.testing.assert_allclose(calls[-1][1], velocity_to_angstrom_per_ps(atoms.get_velocities()), rtol=1e-14)

    # Declared history (e.g. the MD frame one jump earlier).
    atoms = start_atoms(frames, rng_seed=4)
    calc = FastEGNNCalculator(predictor)
    calc.set_previous_positions(x0, x1)
    atoms.calc = calc
    atoms.get_forces()
    np.testing.assert_allclose(calls[-1][1], (x1 - x0) / dt, rtol=1e-12)

    # velocity_input="atoms": always the Atoms' velocities, even after a jump.
    atoms = start_atoms(frames, rng_seed=5)
    calc = FastEGNNCalculator(predictor, velocity_input="atoms")
    atoms.calc = calc
    atoms.set_positions(calc.get_property("jumped_positions", atoms))
    atoms.get_forces()
    assert calc.last_velocity_source == "atoms"
    np.testing.assert_allclose(calls[-1][1], velocity_to_angstrom_per_ps(atoms.get_velocities()), rtol=1e-14)


def test_unselected_atoms_are_held_fixed(predictor, frames):
    extra = Atoms("H2", positions=[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], velocities=[[0.01, 0, 0], [0, 0.02, 0]])
    atoms = extra + start_atoms(frames)
    atoms.calc = FastEGNNCalculator(predictor, selection_indices=np.arange(2, len(atoms)), velocity_input="atoms")
    jumped = atoms.calc.get_property("jumped_positions", atoms)
    np.testing.assert_array_equal(jumped[:2], atoms.get_positions()[:2])
    m, v = atoms.get_masses()[:2, None], atoms.get_velocities()[:2]
    np.testing.assert_allclose(atoms.get_forces()[:2], -2 * m * v / atoms.calc.timestep, rtol=1e-12)
    dyn = FastEGNNDynamics(atoms)
    dyn.run(1)
    np.testing.assert_array_equal(atoms.get_positions()[:2], extra.get_positions())
    np.testing.assert_array_equal(atoms.get_velocities()[:2], 0.0)


# ---------------------------------------------------------------------------------------------
# Dynamics
# ---------------------------------------------------------------------------------------------


def test_dynamics_run_advances_steps_time_trajectory_and_log(predictor, frames, tmp_path):
    atoms = start_atoms(frames)
    calc = FastEGNNCalculator(predictor)
    calc.set_previous_positions(frames["previous"], atoms.get_positions())
    log = tmp_path / "md.log"
    traj = tmp_path / "md.traj"
    dyn = FastEGNNDynamics(atoms, calc, velocity_policy="finite-difference", trajectory=str(traj),
                           logfile=str(log))
    seen = []
    dyn.attach(lambda: seen.append(dyn.nsteps), interval=1)
    assert dyn.dt == calc.timestep and atoms.calc is calc
    dyn.run(3)
    assert dyn.nsteps == 3 and seen == [0, 1, 2, 3]
    assert dyn.get_time() == pytest.approx(3 * calc.timestep)
    assert dyn.get_time_ps() == pytest.approx(3 * predictor.dt)
    dyn.close()
    # The chain of jumps, each fed the backward velocity of the previous one.
    dt = predictor.dt
    chain = [frames["previous"], frames["atoms"].get_positions()]
    for _ in range(3):
        chain.append(predictor.predict(chain[-1], (chain[-1] - chain[-2]) / dt).positions)
    written = read(str(traj), ":")
    assert len(written) == 4
    for image, expected in zip(written, chain[1:]):
        np.testing.assert_allclose(image.get_positions(), expected, atol=1e-8)
        assert image.get_chemical_formula() == "C428N214O213"
    # finite-difference velocities: (x' - x) / dt in ASE units
    np.testing.assert_allclose(written[-1].get_velocities(), (chain[-1] - chain[-2]) / calc.timestep, rtol=1e-10)
    # frames carry the transport force towards the next jump
    v1 = (chain[2] - chain[1]) / calc.timestep
    force = 2 * atoms.get_masses()[:, None] * (chain[3] - chain[2] - v1 * calc.timestep) / calc.timestep**2
    np.testing.assert_allclose(written[1].get_forces(), force, rtol=1e-6, atol=1e-9 * np.abs(force).max())
    lines = log.read_text().splitlines()
    assert lines[0].split()[:3] == ["Time[ps]", "Step", "RMSD[Å]"]
    assert len(lines) == 5
    last = lines[-1].split()
    assert float(last[0]) == pytest.approx(3 * dt, abs=1e-3) and last[1] == "3" and last[-1] == "history"
    moved = np.sqrt(np.mean(np.sum((chain[-1] - chain[-2]) ** 2, axis=1)))
    assert float(last[2]) == pytest.approx(moved, abs=1e-4)
    # Continuing a run keeps counting (as for VelocityVerlet).
    with Trajectory(str(traj), "a") as handle:
        dyn2 = FastEGNNDynamics(atoms, calc, velocity_policy="finite-difference", trajectory=handle)
        dyn2.run(1)
    assert len(read(str(traj), ":")) == 6  # frame 0 of the new run again, then one jump


def test_velocity_policies(checkpoint, frames):
    fake = Predictor.from_checkpoint(checkpoint, dtype=torch.float64)
    shift, predicted_v = 0.05, 2.0  # Å, Å/ps

    def with_velocities(positions, velocities, node_attrs=None):
        return Jump(positions + shift, np.full_like(positions, predicted_v), None, fake.dt)

    fake.predict = with_velocities
    atoms = start_atoms(frames)
    FastEGNNDynamics(atoms, FastEGNNCalculator(fake, velocity_input="atoms"), velocity_policy="predicted").run(1)
    np.testing.assert_allclose(velocity_to_angstrom_per_ps(atoms.get_velocities()), predicted_v, rtol=1e-12)
    np.testing.assert_allclose(atoms.get_positions(), frames["atoms"].get_positions() + shift, atol=1e-12)

    fake.predict = lambda x, v, node_attrs=None: Jump(x + shift, None, None, fake.dt)
    atoms = start_atoms(frames)
    FastEGNNDynamics(atoms, FastEGNNCalculator(fake, velocity_input="atoms"), velocity_policy="predicted").run(1)
    np.testing.assert_allclose(velocity_to_angstrom_per_ps(atoms.get_velocities()), shift / fake.dt, rtol=1e-9)

    velocities = []
    for seed in (7, 7, 8):
        atoms = start_atoms(frames)
        dyn = FastEGNNDynamics(atoms, FastEGNNCalculator(fake), velocity_policy="maxwell-boltzmann",
                               temperature_K=300.0, seed=seed)
        dyn.run(2)
        assert 250.0 < atoms.get_temperature() < 350.0
        velocities.append(atoms.get_velocities())
    np.testing.assert_array_equal(velocities[0], velocities[1])
    assert not np.allclose(velocities[0], velocities[2])

    with pytest.raises(ValueError, match="temperature_K"):
        FastEGNNDynamics(start_atoms(frames), FastEGNNCalculator(fake), velocity_policy="maxwell-boltzmann")
    with pytest.raises(ValueError, match="velocity_policy"):
        FastEGNNDynamics(start_atoms(frames), FastEGNNCalculator(fake), velocity_policy="langevin")


# ---------------------------------------------------------------------------------------------
# Atoms from MDAnalysis
# ---------------------------------------------------------------------------------------------


def test_atoms_from_mdanalysis_reads_ca_as_carbon(frames):
    universe = MDAnalysis.Universe(PSF, DCD)  # PSF: numeric types, no elements, masses
    backbone = universe.select_atoms("backbone")
    atoms = atoms_from_mdanalysis(backbone, frame=3)
    names = backbone.names
    symbols = np.array(atoms.get_chemical_symbols())
    assert set(symbols[names == "CA"]) == {"C"}
    assert set(symbols[names == "N"]) == {"N"} and set(symbols[names == "O"]) == {"O"}
    np.testing.assert_array_equal(atoms.get_masses(), backbone.masses)
    np.testing.assert_allclose(atoms.get_positions(), backbone.positions, rtol=0, atol=0)
    assert universe.trajectory.ts.frame == 3 and atoms.info["mdanalysis_frame"] == 3
    assert not atoms.pbc.any() and not atoms.has("momenta")
    every = atoms_from_mdanalysis(universe)  # a Universe: all atoms, every element from masses
    # In a protein (CHARMM names, no ions) the first letter of an atom name is its element.
    assert every.get_chemical_symbols() == [name[0] for name in universe.atoms.names]
    assert every.get_chemical_formula() == "C1040H1685N289O320S7"

    gro = MDAnalysis.Universe(GRO)  # names only, no elements or masses in the file
    first = gro.select_atoms("resid 1-3")
    symbols = atoms_from_mdanalysis(first).get_chemical_symbols()
    assert [s for s, n in zip(symbols, first.names) if n == "CA"] == ["C", "C", "C"]
    assert "Ca" not in symbols


def test_atoms_from_mdanalysis_converts_velocities():
    universe = MDAnalysis.Universe(TPR, TRR)  # elements in the TPR, velocities in the TRR
    group = universe.atoms[:200]
    atoms = atoms_from_mdanalysis(group, frame=1)
    assert universe.trajectory.ts.has_velocities
    np.testing.assert_allclose(atoms.get_velocities() * 1000 * units.fs, group.velocities, rtol=1e-12)
    np.testing.assert_array_equal(atoms.get_chemical_symbols(), [e.capitalize() for e in group.elements])
    with pytest.raises(DataError, match="out of range"):
        atoms_from_mdanalysis(group, frame=100)


# ---------------------------------------------------------------------------------------------
# Packaging and the example
# ---------------------------------------------------------------------------------------------


def test_import_fastegnn_md_does_not_import_ase():
    code = ("import sys, fastegnn_md; assert 'ase' not in sys.modules; "
            "from fastegnn_md import FastEGNNCalculator; assert 'ase' in sys.modules; "
            "print(FastEGNNCalculator.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "fastegnn_md.adapters.ase"


def test_ase_dynamics_example_runs(tmp_path):
    out = tmp_path / "adk.traj"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ase_dynamics.py"), "--jumps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "history from frame 45" in result.stdout
    assert "jump   2" in result.stdout
    assert f"wrote 3 frames to {out}" in result.stdout
    images = read(str(out), ":")
    assert len(images) == 3 and len(images[0]) == 855
