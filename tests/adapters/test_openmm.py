"""OpenMM reference MD (`fastegnn_md.adapters.openmm`, `fastegnn-md simulate`).

Real OpenMM runs on MDAnalysisTests' AdK (adk_open.pdb, CHARMM names, 3,341 atoms with
hydrogens) in vacuum with amber14 and a 1 nm cutoff, a few 0.02 ps frames each, one thread
(another simulation may be using the other core).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")
MDAnalysis = pytest.importorskip("MDAnalysis")
datafiles = pytest.importorskip("MDAnalysisTests.datafiles")

import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402

from fastegnn_md import cli  # noqa: E402
from fastegnn_md.adapters import openmm as omm  # noqa: E402
from fastegnn_md.adapters.openmm import reference as omm_reference  # noqa: E402  (where simulate looks up)
from fastegnn_md.errors import DataError  # noqa: E402

ADK = Path(datafiles.PDB_small)  # adk_open.pdb
ADK_ATOMS = 3341
ADK_RESIDUES = 214
INTERVAL = 0.02  # ps: 10 steps of 2 fs


def fast(**overrides) -> omm.SimulationSettings:
    """Vacuum amber14, 1 nm cutoff, 2 fs without mass repartitioning, frames 0.02 ps apart."""
    values = dict(
        forcefield="amber14", solvent="vacuum", cutoff_nm=1.0, timestep_fs=2.0, hydrogen_mass_amu=None,
        frame_interval_ps=INTERVAL, length_ps=0.06, equilibration_ps=0.0, minimise_iterations=5, seed=7,
    )
    values.update(overrides)
    return omm.SimulationSettings(**values)


def run(out: Path, settings: omm.SimulationSettings, log=None, **kwargs) -> omm.SimulationResult:
    return omm.simulate(ADK, out, settings, threads=1, progress=False, log=log or (lambda _: None), **kwargs)


def read(out: Path) -> tuple[MDAnalysis.Universe, np.ndarray, np.ndarray, np.ndarray]:
    """Universe, times (ps), positions (Å) and velocities (Å/ps, or None) of every frame."""
    with quiet():
        universe = MDAnalysis.Universe(str(omm.topology_path(out)), str(out))
    times, positions, velocities = [], [], []
    for ts in universe.trajectory:
        times.append(ts.time)
        positions.append(ts.positions.copy())
        velocities.append(ts.velocities.copy() if ts.has_velocities else None)
    has_vel = all(v is not None for v in velocities)
    return universe, np.array(times), np.array(positions), (np.array(velocities) if has_vel else None)


@contextlib.contextmanager
def quiet():
    """The tests' own MDAnalysis reads of PDBs warn about fields PDBs lack; not what is tested."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"MDAnalysis\.")
        yield


@pytest.fixture
def capture_simulation(monkeypatch):
    """Keeps the app.Simulation that `simulate` builds (its final state is the last frame's)."""
    made: list[app.Simulation] = []

    def make(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    original = omm.make_simulation
    monkeypatch.setattr(omm_reference, "make_simulation", make)
    return made


# ------------------------------------------------------------------------------------------
# Structure preparation
# ------------------------------------------------------------------------------------------


def test_charmm_names_are_renamed_to_amber():
    """AdK uses CHARMM names; the prepared topology has none of them left."""
    raw = [(line[17:21].strip(), line[12:16].strip()) for line in ADK.read_text().splitlines()
           if line.startswith("ATOM")]
    assert {"HSD"} <= {res for res, _ in raw}
    assert {("ILE", "CD"), ("GLY", "OT1"), ("GLY", "OT2")} <= set(raw)
    topology, _ = omm.prepare_structure(ADK)
    names = [(a.residue.name, a.name) for a in topology.atoms()]
    assert not {res for res, _ in names} & {"HSD", "HSE", "HSP"}
    assert "HIS" in {res for res, _ in names}
    assert not {atom for _, atom in names} & {"OT1", "OT2"}
    assert ("ILE", "CD") not in names and ("ILE", "CD1") in names
    last = list(topology.residues())[-1]
    assert {"O", "OXT"} <= {a.name for a in last.atoms()}


def test_rename_covers_every_charmm_histidine_and_ile_cd():
    topology = app.Topology()
    chain = topology.addChain()
    for name in ("HSD", "HSE", "HSP"):
        residue = topology.addResidue(name, chain)
        topology.addAtom("CA", app.element.carbon, residue)
    ile = topology.addResidue("ILE", chain)
    topology.addAtom("CD", app.element.carbon, ile)
    topology.addAtom("OT1", app.element.oxygen, ile)
    topology.addAtom("OT2", app.element.oxygen, ile)
    gly = topology.addResidue("GLY", chain)
    topology.addAtom("CD", app.element.carbon, gly)  # only ILE's CD is renamed
    assert omm.rename_charmm_to_amber(topology) == 3 + 3
    assert [r.name for r in topology.residues()] == ["HIS", "HIS", "HIS", "ILE", "GLY"]
    assert [a.name for a in topology.atoms()][3:] == ["CD1", "O", "OXT", "CD"]


def test_prepared_adk_has_hydrogens_amber_names_and_no_box():
    topology, positions = omm.prepare_structure(ADK)
    assert topology.getNumAtoms() == ADK_ATOMS == len(positions)
    assert topology.getNumResidues() == ADK_RESIDUES
    assert topology.getPeriodicBoxVectors() is None
    elements = [a.element.symbol for a in topology.atoms()]
    assert elements.count("H") > 1500
    residues = list(topology.residues())
    assert not {r.name for r in residues} & {"HSD", "HSE", "HSP"}
    assert {"O", "OXT"} <= {a.name for a in residues[-1].atoms()}
    # ...so that amber14 parametrises it without complaint
    system = omm.build_system(topology, fast())
    assert system.getNumParticles() == ADK_ATOMS


# ------------------------------------------------------------------------------------------
# Trajectories
# ------------------------------------------------------------------------------------------


def test_trr_run_frames_times_units_and_velocities(tmp_path, capture_simulation):
    out = tmp_path / "adk.trr"
    settings = fast(minimise_iterations=0)  # frame 0 is then the prepared structure itself
    result = run(out, settings)

    assert result.num_frames == settings.num_frames == 4  # 0.06 / 0.02 + 1
    assert result.num_atoms == ADK_ATOMS and result.resumed_from_frame == 0
    assert result.trajectory == out and result.topology == tmp_path / "adk.pdb"
    assert np.isfinite(result.ns_per_day) and result.ns_per_day > 0
    assert "ns/day" in result.summary()

    universe, times, positions, velocities = read(out)
    assert len(universe.atoms) == ADK_ATOMS
    assert positions.shape == (4, ADK_ATOMS, 3)
    np.testing.assert_allclose(times, [0.0, 0.02, 0.04, 0.06], atol=1e-6)
    assert universe.trajectory.ts.dimensions is None

    # Å: frame 0 is the prepared structure (nm x 10) ...
    _, prepared = omm.prepare_structure(ADK)
    np.testing.assert_allclose(positions[0], np.asarray(prepared.value_in_unit(unit.nanometer)) * 10, atol=2e-3)
    # ... and the last frame is the final OpenMM state, positions Å and velocities Å/ps.
    state = capture_simulation[-1].context.getState(getPositions=True, getVelocities=True)
    nm = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    nm_ps = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    np.testing.assert_allclose(positions[-1], nm * 10, atol=2e-3)
    assert velocities is not None and velocities.shape == positions.shape
    np.testing.assert_allclose(velocities[-1], nm_ps * 10, rtol=1e-4, atol=1e-4)
    # Loose equipartition check: 1 amu Å²/ps² = 0.01 kJ/mol.
    system = capture_simulation[-1].system
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(ADK_ATOMS)])
    dof = 3 * ADK_ATOMS - system.getNumConstraints()
    kinetic_kj = 0.5 * np.sum(masses[:, None] * velocities[-1] ** 2) * 0.01
    temperature = 2 * kinetic_kj / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))
    assert 200 < temperature < 420

    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["forcefield"] == "amber14" and meta["solvent"] == "vacuum"
    assert meta["frame_interval_ps"] == INTERVAL and meta["length_ps"] == 0.06
    assert meta["topology"] == "adk.pdb" and meta["force_field_files"] == ["amber14-all.xml"]
    assert omm.checkpoint_path(out).is_file()


def test_xtc_run_selection_has_no_velocities(tmp_path):
    out = tmp_path / "ca.xtc"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(out, fast(selection="name CA", length_ps=0.04))
    assert [str(w.message) for w in caught if "MDAnalysis" in w.filename] == []  # no PDB-field spam
    assert result.num_atoms == ADK_RESIDUES and result.num_frames == 3
    universe, times, positions, velocities = read(out)
    assert len(universe.atoms) == ADK_RESIDUES
    assert set(universe.atoms.names) == {"CA"} and set(universe.atoms.elements) == {"C"}
    assert velocities is None
    assert positions.shape == (3, ADK_RESIDUES, 3)
    np.testing.assert_allclose(times, [0.0, 0.02, 0.04], atol=1e-5)
    # Å: the CA trace of AdK spans tens of Å, consecutive CA about 3.8 Å apart
    bond = np.linalg.norm(positions[0, 1:] - positions[0, :-1], axis=1)
    assert 3.6 < np.median(bond) < 4.0


@pytest.mark.parametrize("suffix", [".trr", ".ncdf", ".xtc"])
def test_write_trajectory_round_trip(tmp_path, suffix):
    """Velocities go to every format that holds them (NetCDF needs velocities=True)."""
    top = tmp_path / "top.pdb"
    with quiet():
        MDAnalysis.Universe(str(ADK)).select_atoms("resid 1:3").write(str(top))
        n = len(MDAnalysis.Universe(str(top)).atoms)
    rng = np.random.default_rng(0)
    positions = rng.uniform(-20, 20, (3, n, 3)).astype(np.float32)
    velocities = rng.normal(0, 5, (3, n, 3)).astype(np.float32)
    out = tmp_path / f"t{suffix}"
    omm.write_trajectory(out, top, positions, velocities, 0.5)
    with quiet():
        universe = MDAnalysis.Universe(str(top), str(out))
    assert len(universe.trajectory) == 3
    for i, ts in enumerate(universe.trajectory):
        assert ts.time == pytest.approx(0.5 * i, abs=1e-4)
        np.testing.assert_allclose(ts.positions, positions[i], atol=6e-3 if suffix == ".xtc" else 1e-4)
        if suffix == ".xtc":
            assert not ts.has_velocities
        else:
            assert ts.has_velocities
            np.testing.assert_allclose(ts.velocities, velocities[i], rtol=1e-4, atol=1e-3)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


# ------------------------------------------------------------------------------------------
# Resume and extend
# ------------------------------------------------------------------------------------------


def test_interrupted_run_resumes_without_lost_or_repeated_frames(tmp_path, monkeypatch):
    out = tmp_path / "adk.trr"
    settings = fast(length_ps=0.1)  # 6 frames
    original = omm._selected_state
    calls = []

    def interrupt_at_fourth_frame(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(omm_reference, "_selected_state", interrupt_at_fourth_frame)
    with pytest.raises(KeyboardInterrupt):
        run(out, settings, checkpoint_seconds=0)  # checkpoint after every frame
    monkeypatch.setattr(omm_reference, "_selected_state", original)
    _, times, first, first_vel = read(out)
    assert len(first) == 3
    messages = []
    result = run(out, settings, log=messages.append)
    assert result.resumed_from_frame == 3 and result.num_frames == 6
    assert any("resuming" in m and "frame 3 of 6" in m for m in messages)
    assert not any("minimising" in m for m in messages)

    _, times, positions, velocities = read(out)
    assert len(positions) == 6
    np.testing.assert_allclose(times, INTERVAL * np.arange(6), atol=1e-5)
    # The frames written before come back from the TRR (nm) through float32 unit conversions.
    np.testing.assert_allclose(positions[:3], first, rtol=2e-7, atol=0)
    np.testing.assert_allclose(velocities[:3], first_vel, rtol=2e-7, atol=1e-7)
    # Every frame is a new state (none repeated) and one interval after the previous one (none lost):
    # the step across the interruption looks like the others.
    step = np.sqrt(np.mean(np.sum(np.diff(positions, axis=0) ** 2, axis=2), axis=1))
    assert np.all(step > 0)
    assert step[2] < 2 * np.median(step) and step[2] > 0.5 * np.median(step)

    # The resumed run is the run that was interrupted: an uninterrupted one from scratch agrees.
    reference = tmp_path / "ref" / "adk.trr"
    run(reference, settings)
    _, _, ref_positions, _ = read(reference)
    np.testing.assert_allclose(positions, ref_positions, atol=2e-3)


def test_finished_run_is_extended_by_a_longer_length(tmp_path):
    out = tmp_path / "adk.xtc"
    run(out, fast(length_ps=0.04))
    first_bytes = out.read_bytes()
    _, _, first, _ = read(out)
    assert len(first) == 3

    result = run(out, fast(length_ps=0.1))
    assert result.resumed_from_frame == 3 and result.num_frames == 6
    _, times, positions, _ = read(out)
    np.testing.assert_allclose(times, INTERVAL * np.arange(6), atol=1e-5)
    np.testing.assert_array_equal(positions[:3], first)
    assert out.read_bytes()[: len(first_bytes) // 2] == first_bytes[: len(first_bytes) // 2]
    assert json.loads(Path(f"{out}.json").read_text())["length_ps"] == 0.1

    # Asking again for what is already there runs nothing more.
    again = run(out, fast(length_ps=0.1))
    assert again.resumed_from_frame == 6 and again.num_frames == 6


def test_the_checkpoint_is_small_and_holds_no_frames(tmp_path):
    """Version 2: the OpenMM checkpoint, the portable state and a frame count; the frames are the
    trajectory's, so a long run's resume file can be committed beside its trajectory."""
    out = tmp_path / "adk.xtc"
    run(out, fast(length_ps=0.04))
    with np.load(omm.checkpoint_path(out)) as data:
        assert int(data["version"]) == 2 and int(data["num_frames"]) == 3
        assert "positions" not in data.files and "velocities" not in data.files
        assert data["state_xml"].size > 0
    assert omm.checkpoint_path(out).stat().st_size < 1_000_000  # 3,341 atoms


def test_a_checkpoint_openmm_cannot_load_resumes_from_its_portable_state(tmp_path):
    """Another machine or OpenMM version: the binary checkpoint fails to load, the XML state
    (positions, velocities, time) carries on with a fresh noise stream."""
    out = tmp_path / "adk.trr"
    run(out, fast(length_ps=0.04))
    _, _, first, first_vel = read(out)
    path = omm.checkpoint_path(out)
    with np.load(path) as data:
        stored = {name: data[name] for name in data.files}
    stored["openmm_checkpoint"] = np.frombuffer(b"not a checkpoint", dtype=np.uint8)
    np.savez(path, **stored)
    messages = []
    result = run(out, fast(length_ps=0.1), log=messages.append)
    assert result.resumed_from_frame == 3 and result.num_frames == 6
    _, times, positions, velocities = read(out)
    np.testing.assert_allclose(times, INTERVAL * np.arange(6), atol=1e-5)
    np.testing.assert_allclose(positions[:3], first, rtol=2e-7, atol=0)
    step = np.sqrt(np.mean(np.sum(np.diff(positions, axis=0) ** 2, axis=2), axis=1))
    assert step[2] < 2 * np.median(step) and step[2] > 0.5 * np.median(step)  # continues from frame 3's state


def test_a_version_1_checkpoint_still_resumes(tmp_path, monkeypatch):
    """Files written before version 2 held every frame; they resume as before."""
    out = tmp_path / "adk.xtc"
    run(out, fast(length_ps=0.04))
    _, _, first, _ = read(out)
    path = omm.checkpoint_path(out)
    with np.load(path) as data:
        key, binary = data["key"], data["openmm_checkpoint"]
    # The run key (structure and settings) does not depend on the file's layout version.
    monkeypatch.setattr(omm_reference, "CHECKPOINT_VERSION", 1)
    assert str(key) == omm_reference._run_key(ADK, fast(length_ps=0.04))
    np.savez(path, key=key, version=np.array(1), openmm_checkpoint=binary, positions=first.astype(np.float32),
             velocities=np.zeros_like(first, dtype=np.float32))
    out.unlink()  # version 1 did not need the trajectory: the frames come from the checkpoint
    result = run(out, fast(length_ps=0.1))
    assert result.resumed_from_frame == 3 and result.num_frames == 6
    np.testing.assert_array_equal(read(out)[2][:3], first)


def test_a_checkpoint_without_its_trajectory_is_a_one_line_error(tmp_path):
    out = tmp_path / "adk.xtc"
    run(out, fast(length_ps=0.04))
    out.unlink()
    with pytest.raises(DataError, match="adk.xtc is missing; the checkpoint resumes only beside") as excinfo:
        run(out, fast(length_ps=0.1))
    assert "\n" not in str(excinfo.value)


def test_other_settings_with_existing_checkpoint_are_refused(tmp_path):
    out = tmp_path / "adk.xtc"
    run(out, fast(length_ps=0.02))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(DataError) as excinfo:
        run(out, fast(length_ps=0.02, selection="name CA"))
    message = str(excinfo.value)
    assert "\n" not in message and "delete it" in message and str(omm.checkpoint_path(out)) in message
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # trajectory, its topology, settings and checkpoint untouched


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_missing_structure_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        omm.simulate(tmp_path / "nope.pdb", tmp_path / "x.xtc", fast(), threads=1, progress=False)
    assert "nope.pdb" in one_line(excinfo) and "no such" in one_line(excinfo)
    assert not (tmp_path / "x.xtc").exists()


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"forcefield": "gromos54"}, "unknown 'gromos54'"),
        ({"forcefield": "amber99sb", "solvent": "gbn2"}, "not available with amber99sb"),
        ({"solvent": "obc"}, "not available with amber14"),
        ({"frame_interval_ps": 0.0005}, "shorter than one 2.0 fs step"),
        ({"frame_interval_ps": 0.003}, "not a whole number"),
        ({"length_ps": 0.0}, "length_ps"),
        ({"cutoff_nm": -1.0}, "cutoff_nm"),
    ],
)
def test_bad_settings(overrides, needle):
    with pytest.raises(DataError) as excinfo:
        fast(**overrides)
    assert needle in one_line(excinfo)


def test_selection_matching_nothing(tmp_path):
    with pytest.raises(DataError) as excinfo:
        run(tmp_path / "x.xtc", fast(selection="resname XYZ"))
    assert "matches no atom" in one_line(excinfo)
    assert not (tmp_path / "x.xtc").exists() and not omm.checkpoint_path(tmp_path / "x.xtc").exists()


@pytest.mark.parametrize("name", ["x.foo", "x"])
def test_unknown_output_extension(tmp_path, name):
    with pytest.raises(DataError) as excinfo:
        run(tmp_path / name, fast())
    assert "no trajectory writer" in one_line(excinfo)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

CLI_FAST = ["--forcefield", "amber14", "--solvent", "vacuum", "--cutoff", "1.0", "--timestep", "2",
            "--hydrogen-mass", "0", "--frame-interval", "0.02", "--equilibrate", "0", "--minimise", "5",
            "--threads", "1", "--quiet"]


def test_cli_simulate_prints_summary(tmp_path, capsys):
    out = tmp_path / "cli.xtc"
    code = cli.main(["simulate", str(ADK), "--out", str(out), "--length", "0.04", *CLI_FAST])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "wrote 3 frames of 3341 atoms" in stdout and "ns/day" in stdout
    assert out.is_file() and (tmp_path / "cli.pdb").is_file()
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["hydrogen_mass_amu"] is None and meta["cutoff_nm"] == 1.0 and meta["length_ps"] == 0.04


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--cutoff", "-1"], "--cutoff"),
        (["--threads", "0"], "--threads"),
        (["--forcefield", "gromos54"], "gromos54"),
        (["--solvent", "tip3p"], "tip3p"),
        (["--frame-interval", "0.0001"], "frame_interval_ps"),
    ],
)
def test_cli_bad_argument_is_one_line(tmp_path, capsys, extra, needle):
    out = tmp_path / "bad.xtc"
    code = cli.main(["simulate", str(ADK), "--out", str(out), *CLI_FAST, *extra])
    stdout, stderr = capsys.readouterr()
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("fastegnn-md: error:") and needle in stderr
    assert not out.exists()


def test_cli_missing_structure(tmp_path, capsys):
    code = cli.main(["simulate", str(tmp_path / "nope.pdb"), "--out", str(tmp_path / "x.xtc"), *CLI_FAST])
    _, stderr = capsys.readouterr()
    assert code == 2 and stderr.count("\n") == 1 and "nope.pdb" in stderr
