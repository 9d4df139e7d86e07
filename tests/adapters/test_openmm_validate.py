"""`fastegnn-md validate` (adapters/openmm_validate.py): stepper vs ordinary MD, report, resume.

Same small real system as test_openmm_stepper: AdK (MDAnalysisTests adk_open.pdb) in vacuum
amber14, 2 fs, one thread; a tiny model trained on the shipped trajectory with Δt = 0.5 ps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")
datafiles = pytest.importorskip("MDAnalysisTests.datafiles")

from fastegnn_md.adapters import openmm as omm  # noqa: E402
from fastegnn_md.adapters.openmm_validate import validate  # noqa: E402
from fastegnn_md.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAJ = ROOT / "trajectories" / "adk-obc"
ADK = Path(datafiles.PDB_small)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_md_model) -> Path:
    return tiny_md_model(tmp_path_factory.mktemp("run"), TRAJ / "adk_obc.pdb", TRAJ / "adk_obc.xtc", jump=1,
                         length_scale=10.0)


def settings(**changes) -> omm.SimulationSettings:
    values = dict(forcefield="amber14", solvent="vacuum", cutoff_nm=1.0, timestep_fs=2.0, hydrogen_mass_amu=None,
                  equilibration_ps=0.0, minimise_iterations=20, seed=3)
    values.update(changes)
    return omm.SimulationSettings(**values)


OPTIONS = {"relax_steps": 10, "minimise_iterations": 5}


@pytest.fixture(scope="module")
def two_jumps(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate(ADK, out, checkpoint, settings(), jumps=2, threads=1, stepper_options=OPTIONS,
                          progress=False, log=lambda _: None)
    return out, result


def test_report_holds_both_runs(two_jumps):
    out, result = two_jumps
    report = json.loads((out / "validation.json").read_text())
    assert report == json.loads(json.dumps(result.report, default=str))
    s = report["summary"]
    assert s["jumps"] == 2 and s["dt_ps"] == pytest.approx(0.5) and s["steps_per_jump"] == 250
    assert s["simulated_ps"] == pytest.approx(1.0)
    assert report["stepper"]["jumps"] == 2
    assert report["stepper"]["accepted"] + report["stepper"]["rejected"] == 2
    assert s["rejected"] == report["stepper"]["rejected"]
    assert s["rejected_fraction"] == pytest.approx(s["rejected"] / 2)
    rows = report["per_jump"]
    assert [r["jump"] for r in rows] == [0, 1, 2]
    assert [r["time_ps"] for r in rows] == pytest.approx([0.0, 0.5, 1.0])
    assert rows[0]["rmsd_between"] == pytest.approx(0.0, abs=1e-6)  # common start
    for r in rows[1:]:
        assert r["wall_reference_s"] > 0 and r["wall_stepper_s"] > 0
        assert np.isfinite(r["pe_reference"]) and np.isfinite(r["pe_stepper"])
        assert 0 < r["rmsd_between"] < 5 and 15 < r["rg_reference"] < 25
    total_ref = sum(r["wall_reference_s"] for r in rows[1:])
    total_stepper = sum(r["wall_stepper_s"] for r in rows[1:])
    assert s["speed_up"] == pytest.approx(total_ref / total_stepper)
    assert s["reference_s_per_ns"] == pytest.approx(total_ref / 1e-3)
    assert s["stepper_ns_per_day"] == pytest.approx(1e-3 * 86400 / total_stepper)
    assert s["speed_up_goal_met"] == (s["speed_up"] >= 20)
    md = (out / "validation.md").read_text()
    assert "Speed-up" in md and "| 2 | 1 |" in md
    assert (out / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_trajectories_have_one_frame_per_jump(two_jumps):
    import MDAnalysis

    out, result = two_jumps
    rows = result.report["per_jump"]
    for name in ("reference", "stepper"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = MDAnalysis.Universe(str(out / "selected.pdb"), str(out / f"{name}.xtc"))
        assert len(u.atoms) == 856 and set(u.atoms.names) == {"N", "CA", "C", "O"}
        assert len(u.trajectory) == 3
        assert [ts.time for ts in u.trajectory] == pytest.approx([0.0, 0.5, 1.0])
    from fastegnn_md import metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MDAnalysis.Universe(str(out / "selected.pdb"), str(out / "reference.xtc"))
        step = MDAnalysis.Universe(str(out / "selected.pdb"), str(out / "stepper.xtc"))
    ref.trajectory[2]
    step.trajectory[2]
    assert metrics.kabsch_rmsd(step.atoms.positions, ref.atoms.positions) == pytest.approx(
        rows[2]["rmsd_between"], abs=2e-3)  # XTC stores 1e-3 nm


def test_rerun_resumes_and_extends(two_jumps, checkpoint):
    out, first = two_jumps
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate(ADK, out, checkpoint, settings(), jumps=3, threads=1, stepper_options=OPTIONS,
                          progress=False, log=messages.append)
    assert any("resuming" in m and "jump 2" in m for m in messages)
    rows = result.report["per_jump"]
    assert len(rows) == 4
    for old, new in zip(first.report["per_jump"], rows):
        assert new == old  # the first two jumps are the recorded ones, not rerun
    assert result.report["stepper"]["jumps"] == 3
    assert rows[3]["time_ps"] == pytest.approx(1.5)


def test_other_settings_refuse_the_checkpoint(two_jumps, checkpoint):
    out, _ = two_jumps
    with pytest.raises(DataError, match="another structure, model or settings"):
        validate(ADK, out, checkpoint, settings(seed=4), jumps=1, threads=1, stepper_options=OPTIONS,
                 progress=False, log=lambda _: None)


def test_cli_errors_are_one_line(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "fastegnn_md.cli", "validate", str(tmp_path / "nope.pdb")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"fastegnn-md: error: {tmp_path / 'nope.pdb'}: no such structure file"]
    bad = subprocess.run([sys.executable, "-m", "fastegnn_md.cli", "validate", str(ADK), "--jumps", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--jumps" in bad.stderr
