"""`FastEGNNStepper`: learned jumps inside an OpenMM Simulation (fastegnn_md.adapters.openmm).

AdK (MDAnalysisTests adk_open.pdb prepared by `prepare_structure`, 3,341 atoms, backbone 856)
in vacuum amber14, 1 nm cutoff, 2 fs, HBonds, CPU platform with one thread. A tiny model is
trained once (module fixture) on the shipped trajectories/adk-obc run with jump = 1 frame =
0.5 ps = 250 integrator steps, so a jump is cheap; relax_steps = 20.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")
pytest.importorskip("MDAnalysis")
datafiles = pytest.importorskip("MDAnalysisTests.datafiles")

import openmm  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402

from fastegnn_md.adapters import openmm as omm  # noqa: E402
from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from fastegnn_md.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAJ = ROOT / "trajectories" / "adk-obc"
ADK = Path(datafiles.PDB_small)
STEPS_PER_JUMP = 250  # 0.5 ps of 2 fs
RELAX = 20

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_md_model) -> Path:
    return tiny_md_model(tmp_path_factory.mktemp("run"), TRAJ / "adk_obc.pdb", TRAJ / "adk_obc.xtc", jump=1,
                               length_scale=10.0)


@pytest.fixture(scope="module")
def nan_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """The fixture model with every weight NaN: its predictions are non-finite."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    target = tmp_path_factory.mktemp("nan") / "nan.pt"
    save_checkpoint(target, ckpt.model_name, ckpt.hparams, model, ckpt.data_spec, ckpt.training)
    return target


@pytest.fixture(scope="module")
def prepared():
    return omm.prepare_structure(ADK)


def settings() -> omm.SimulationSettings:
    return omm.SimulationSettings(forcefield="amber14", solvent="vacuum", cutoff_nm=1.0, timestep_fs=2.0,
                                  hydrogen_mass_amu=None, seed=3)


@pytest.fixture(scope="module")
def base(prepared):
    """System XML and briefly minimised positions, built once (each test gets its own copy)."""
    topology, positions = prepared
    s = settings()
    system = omm.build_system(topology, s)
    sim = omm.make_simulation(topology, system, s, threads=1)
    sim.context.setPositions(positions)
    sim.minimizeEnergy(maxIterations=20)
    return openmm.XmlSerializer.serialize(system), sim.context.getState(getPositions=True).getPositions()


@pytest.fixture
def simulation(prepared, base) -> app.Simulation:
    topology, _ = prepared
    xml, positions = base
    sim = omm.make_simulation(topology, openmm.XmlSerializer.deserialize(xml), settings(), threads=1)
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return sim


def gentle(stepper: omm.FastEGNNStepper, factor: float = 0.1) -> list:
    """Damp the tiny (barely trained) model's displacements: these tests check the mechanics.

    Returns the list the wrapped predictions are appended to.
    """
    original, made = stepper.predictor.predict, []

    def predict(x, v):
        jump = original(x, v)
        jump.positions = x + factor * (jump.positions - x)
        made.append(jump)
        return jump

    stepper.predictor.predict = predict
    return made


def test_unit_conversion_is_exact():
    x = np.array([[0.1, -2.5, 3.25]])
    np.testing.assert_array_equal(omm.nm_to_angstrom(x), [[1.0, -25.0, 32.5]])
    np.testing.assert_array_equal(omm.angstrom_to_nm([[1.0, -25.0, 32.5]]), x)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 3))
    np.testing.assert_allclose(omm.angstrom_to_nm(omm.nm_to_angstrom(y)), y, rtol=1e-15, atol=0)
    assert omm.NM_TO_ANGSTROM == 10.0


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_placement_moves_residues_rigidly():
    rng = np.random.default_rng(1)
    residues = np.repeat(np.arange(4), 7)  # 4 residues of 7 atoms, 4 selected each
    positions = rng.normal(scale=3.0, size=(28, 3))
    selected = np.array([i for i in range(28) if i % 7 < 4])
    predicted = positions[selected].copy()
    for r in range(4):  # a different rigid motion per residue, plus a little noise
        rows = slice(4 * r, 4 * r + 4)
        predicted[rows] = predicted[rows] @ _random_rotation(rng).T + rng.normal(size=3) * 5
    predicted += rng.normal(scale=0.05, size=predicted.shape)
    out = omm.place_unselected(positions, selected, predicted, residues)
    np.testing.assert_array_equal(out[selected], predicted)
    for r in range(4):
        movers = np.flatnonzero(residues == r)[4:]
        d_old = np.linalg.norm(positions[movers][:, None] - positions[movers][None], axis=-1)
        d_new = np.linalg.norm(out[movers][:, None] - out[movers][None], axis=-1)
        np.testing.assert_allclose(d_new, d_old, atol=1e-9)
    # exact rigid motion of a residue: all its atoms follow it exactly
    rot, shift = _random_rotation(rng), np.array([1.0, 2.0, 3.0])
    exact = positions[selected] @ rot.T + shift
    out = omm.place_unselected(positions, selected, exact, residues)
    np.testing.assert_allclose(out, positions @ rot.T + shift, atol=1e-9)


def test_kabsch_transform_recovers_rotation():
    rng = np.random.default_rng(2)
    old = rng.normal(size=(6, 3))
    rot = _random_rotation(rng)
    r, t = omm.kabsch_transform(old, old @ rot.T + [0.5, -1.0, 2.0])
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, [0.5, -1.0, 2.0], atol=1e-10)


def test_step_count_time_and_reporters(checkpoint, simulation, tmp_path):
    n = 3
    dcd, log = tmp_path / "out.dcd", tmp_path / "log.csv"
    stepper = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, guarded=False)
    gentle(stepper)
    assert stepper.steps_per_jump == STEPS_PER_JUMP
    assert len(stepper.selected) == 856
    simulation.reporters.append(app.DCDReporter(str(dcd), STEPS_PER_JUMP))
    simulation.reporters.append(app.StateDataReporter(str(log), STEPS_PER_JUMP, step=True, time=True,
                                                      potentialEnergy=True))
    stepper.step(n)
    assert simulation.currentStep == n * STEPS_PER_JUMP
    t = simulation.context.getState().getTime().value_in_unit(unit.picosecond)
    assert t == pytest.approx(n * 0.5, abs=1e-9)
    assert stepper.summary()["accepted"] == n and stepper.summary()["rejected"] == 0
    assert stepper.last_velocity_source == "history"
    for r in simulation.reporters:
        if hasattr(r, "close"):
            r.close()
    simulation.reporters.clear()
    import MDAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pdb = tmp_path / "top.pdb"
        state = simulation.context.getState(getPositions=True)
        with open(pdb, "w") as h:
            app.PDBFile.writeFile(simulation.topology, state.getPositions(), h)
        u = MDAnalysis.Universe(str(pdb), str(dcd))
    assert len(u.trajectory) == n
    lines = [line for line in log.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == n
    assert [int(line.split(",")[0]) for line in lines] == [STEPS_PER_JUMP * (k + 1) for k in range(n)]
    # the last DCD frame is the final state
    u.trajectory[-1]
    final = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10
    np.testing.assert_allclose(u.atoms.positions, final, atol=1e-3)
    # normal MD after the stepper: restraint off, energy finite
    assert simulation.context.getParameter(omm.RESTRAINT_K_PARAMETER) == 0.0
    simulation.step(10)
    assert simulation.currentStep == n * STEPS_PER_JUMP + 10


def test_selected_atoms_end_near_the_prediction(checkpoint, simulation):
    stepper = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, restraint_k=5e4, guarded=False)
    made = gentle(stepper)
    stepper.step(1)
    state = simulation.context.getState(getPositions=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[stepper.selected] * 10
    deviation = np.linalg.norm(x - made[0].positions, axis=1)
    assert deviation.max() < 0.5  # Å, after 20 relax steps at k = 5e4 kJ/mol/nm²
    assert stepper.last_velocity_source == "context"


def test_corrupted_prediction_is_rejected_in_guarded_mode(nan_checkpoint, simulation, tmp_path):
    log = tmp_path / "log.csv"
    simulation.reporters.append(app.StateDataReporter(str(log), STEPS_PER_JUMP, step=True))
    stepper = omm.FastEGNNStepper(simulation, nan_checkpoint, relax_steps=RELAX)
    stepper.step(2)
    simulation.reporters[0]._out.close()
    simulation.reporters.clear()
    assert simulation.currentStep == 2 * STEPS_PER_JUMP
    assert simulation.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(1.0)
    summary = stepper.summary()
    assert summary["rejected"] == 2 and summary["accepted"] == 0
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy)
    lines = [line for line in log.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 2


def test_huge_jump_is_rejected_by_the_energy_check(checkpoint, simulation):
    # no minimisation: the energy check on a structure blown apart 1e4-fold is what is tested
    stepper = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, minimise_iterations=0)
    original = stepper.predictor.predict

    def predict(x, v):  # a corrupted model: displacements 1e4 times too large (finite)
        jump = original(x, v)
        jump.positions = x + 1e4 * (jump.positions - x)
        return jump

    stepper.predictor.predict = predict
    before = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    stepper.step(1)
    summary = stepper.summary()
    assert summary["rejected"] == 1 and summary["accepted"] == 0
    assert summary["retried"] == 1  # placed again with the longer descent before MD took over
    assert "potential energy" in summary["last_rejection"] or "non-finite" in summary["last_rejection"]
    assert simulation.currentStep == STEPS_PER_JUMP
    after = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    moved = np.linalg.norm(np.asarray(after.value_in_unit(unit.nanometer) - before.value_in_unit(unit.nanometer)),
                           axis=1)
    assert np.median(moved) < 0.1 and moved.max() < 1.0  # nm: 0.5 ps of plain MD, nothing of the jump kept


def test_unguarded_nan_raises(nan_checkpoint, simulation):
    stepper = omm.FastEGNNStepper(simulation, nan_checkpoint, relax_steps=RELAX, guarded=False)
    with pytest.raises(DataError, match="non-finite"):
        stepper.step(1)


def test_bad_arguments(checkpoint, simulation):
    with pytest.raises(DataError, match="velocity_policy"):
        omm.FastEGNNStepper(simulation, checkpoint, velocity_policy="magic")
    with pytest.raises(DataError, match="relax_steps"):
        omm.FastEGNNStepper(simulation, checkpoint, relax_steps=STEPS_PER_JUMP + 1)
    with pytest.raises(DataError, match="picks"):
        omm.FastEGNNStepper(simulation, checkpoint, selection="name CA")
    with pytest.raises(DataError, match="retry_minimise_iterations"):
        omm.FastEGNNStepper(simulation, checkpoint, retry_minimise_iterations=-1)
    with pytest.raises(DataError, match="sample_scale"):
        omm.FastEGNNStepper(simulation, checkpoint, sample_scale=-0.5)


def test_example_runs(checkpoint, tmp_path):
    out = tmp_path / "ex"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "openmm_stepper.py"), "--jumps", "1", "--out", str(out),
         "--checkpoint", str(checkpoint), "--relax-steps", str(RELAX), "--threads", "1",
         "--minimise-iterations", "5"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stdout
    assert (out / "stepper.dcd").stat().st_size > 0
    lines = [line for line in (out / "stepper.csv").read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 2  # the warm-up Δt of ordinary MD, then the jump
    assert [int(line.split(",")[0]) for line in lines] == [STEPS_PER_JUMP, 2 * STEPS_PER_JUMP]


def test_capped_descent_removes_a_clash(simulation):
    context = simulation.context
    state = context.getState(getPositions=True, getEnergy=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    unclashed = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    clashed = x.copy()
    clashed[100] = x[200] + 0.02  # nm: atom 100 sits almost on atom 200
    context.setPositions(clashed)
    context.applyConstraints(1e-5)  # atom 100's hydrogens follow it, so the cap below is the only motion
    clashed = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    start = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    end = omm.capped_steepest_descent(context, 40, max_step_nm=0.01)
    state = context.getState(getPositions=True, getEnergy=True)
    assert end == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert start - unclashed > 1e6 and end - unclashed < 0.01 * (start - unclashed)
    moved = np.linalg.norm(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) - clashed, axis=1)
    assert moved.max() <= 40 * 0.01 + 0.1  # nm: the cap per iteration, plus constraint corrections of H


def test_warm_up_and_set_history_give_the_first_jump_a_history(checkpoint, simulation):
    stepper = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, guarded=False)
    gentle(stepper)
    stepper.warm_up()
    assert simulation.currentStep == STEPS_PER_JUMP and stepper.summary()["warm_up_jumps"] == 1
    assert stepper.summary()["jumps"] == 0
    stepper.step(1)
    assert stepper.last_velocity_source == "history"

    stepper2 = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, guarded=False)
    gentle(stepper2)
    with pytest.raises(DataError, match="set_history"):
        stepper2.set_history(np.zeros((3, 3)))
    now = stepper2.history
    assert now is None
    x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    previous = x[stepper2.selected] * 10 - 0.1
    stepper2.set_history(previous)
    np.testing.assert_allclose(stepper2.history[0], previous)
    made = []
    original = stepper2.predictor.predict
    stepper2.predictor.predict = lambda x, v: made.append(v) or original(x, v)
    stepper2.step(1)
    assert stepper2.last_velocity_source == "history"
    np.testing.assert_allclose(made[0], np.full_like(previous, 0.1 / 0.5), atol=1e-9)  # Å/ps over Δt = 0.5 ps


def test_release_schedule_lets_the_restraint_go(checkpoint, simulation):
    held = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, restraint_k=900.0)
    assert held.release_schedule() == [(900.0, RELAX)]
    released = omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, restraint_k=900.0, release_stages=4)
    schedule = released.release_schedule()
    assert [k for k, _ in schedule] == pytest.approx([900.0, 600.0, 300.0, 0.0])
    assert sum(n for _, n in schedule) == RELAX and all(n > 0 for _, n in schedule)
    assert omm.FastEGNNStepper(simulation, checkpoint, relax_steps=0).release_schedule() == []
    for bad in (0, RELAX + 1):
        with pytest.raises(DataError, match="release_stages"):
            omm.FastEGNNStepper(simulation, checkpoint, relax_steps=RELAX, release_stages=bad)
    gentle(released)
    released.step(1)
    assert released.summary()["accepted"] == 1 and released.summary()["release_stages"] == 4
    assert simulation.currentStep == STEPS_PER_JUMP
    assert simulation.context.getParameter(omm.RESTRAINT_K_PARAMETER) == 0.0


@pytest.fixture(scope="module")
def calibrated_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """The fixture model with a spread fitted on its validation block (`fastegnn-md calibrate`)."""
    from fastegnn_md.calibration import calibrate_checkpoint, save_with_spread
    from fastegnn_md.datasets import open_for_checkpoint

    ckpt = load_checkpoint(checkpoint)
    pairs = open_for_checkpoint(TRAJ / "adk_obc.xtc", ckpt.data_spec, progress=False).load("valid")
    spread, _ = calibrate_checkpoint(ckpt, pairs[:10])
    return save_with_spread(ckpt, spread, tmp_path_factory.mktemp("cal") / "sampled.pt")


def test_sampled_jumps_need_a_spread_and_draw_around_the_mean(checkpoint, calibrated_checkpoint, simulation):
    with pytest.raises(DataError, match="calibrate"):
        omm.FastEGNNStepper(simulation, checkpoint, sample=True)
    stepper = omm.FastEGNNStepper(simulation, calibrated_checkpoint, relax_steps=RELAX, restraint_k=5e4,
                                  sample=True)
    drawn = []
    original = stepper.predictor.sample

    def sample(x, v, *extra, **options):  # damped as `gentle` does: the fixture model is barely trained
        jump = original(x, v, *extra, **options)
        jump.positions, jump.mean = x + 0.1 * (jump.positions - x), x + 0.1 * (jump.mean - x)
        drawn.append((jump, options))
        return jump

    stepper.predictor.sample = sample
    stepper.step(1)
    assert len(drawn) == 1 and stepper.summary()["sample"] is True
    jump, options = drawn[0]
    assert options["scale"] == 0.3 and stepper.summary()["accepted"] == 1  # the default share of the spread
    # Each peptide ω is held (CA-CA and O-CA across every peptide bond of the selection), from the topology.
    held = options["held_pairs"]
    names = np.array([a.name for a in simulation.topology.atoms()])[stepper.selected]
    assert len(held) == 2 * int(np.sum(names == "CA") - 1)
    assert set(names[held[:, 0]]) == {"CA", "O"} and set(names[held[:, 1]]) == {"CA"}
    assert not np.allclose(jump.positions, jump.mean)
    x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    x = 10 * np.asarray(x)[stepper.selected]
    # The Context follows the sample, not the mean.
    assert np.linalg.norm(x - jump.positions, axis=1).mean() < np.linalg.norm(x - jump.mean, axis=1).mean()
