"""What the repository ships: reference trajectory, pretrained models, and the README's main job."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest

from fastegnn_md.checkpoint import PRETRAINED_DIR, load_checkpoint
from fastegnn_md.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRAJECTORY = ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc"
SHIPPED = ("adk-backbone", "adk-dims", "adk-dims-no-mmd")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_shipped_trajectory_opens_with_its_topology() -> None:
    universe = MDAnalysis.Universe(str(TRAJECTORY.with_suffix(".pdb")), str(TRAJECTORY))
    assert len(universe.trajectory) == 241
    assert universe.trajectory.dt == pytest.approx(0.5, abs=1e-3)
    settings = json.loads(TRAJECTORY.with_name("adk_obc.xtc.json").read_text())
    assert settings["forcefield"] == "amber99sb" and settings["solvent"] == "obc"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_by_name_and_describe_their_training(name: str) -> None:
    path = PRETRAINED_DIR / f"{name}.pt"
    assert path.stat().st_size < 5_000_000, "shipped models must stay a few MB"
    ckpt = load_checkpoint(name)
    assert ckpt.resume is None
    assert ckpt.data_spec.units == {"length": "Å", "time": "ps"}
    assert ckpt.data_spec.selection == "backbone"
    assert ckpt.data_spec.velocity_convention == "backward"
    assert ckpt.training["epochs"] >= 1 and "best_valid_mse" in ckpt.training
    assert ckpt.data_spec.extra["topology_pdb"]


def test_readme_main_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `fastegnn-md ...` part of the README's first command, as typed, from the repo root."""
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    step = [s.strip() for s in first.split("&&") if s.strip().startswith("fastegnn-md ")][0]
    argv = shlex.split(step)[1:] + ["--quiet"]
    monkeypatch.chdir(ROOT)
    report_dir = tmp_path / "report"
    argv[argv.index("--report") + 1] = str(report_dir)  # keep the work tree clean
    assert main(argv) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["info"]["model"] == "fastegnn"
    assert report["jumps_with_reference"] == report["jumps"] > 0
    assert (report_dir / "predicted.xtc").exists() and (report_dir / "predicted-virtual.pdb").exists()


def test_default_model_falls_back_to_a_shipped_model_that_fits(tmp_path: Path) -> None:
    from MDAnalysisTests.datafiles import DCD, PSF

    from fastegnn_md.trajectory_rollout import rollout_trajectory

    # adk-backbone has 856 backbone atoms (Amber names keep the C-terminal O); the CHARMM PSF has 855.
    out = rollout_trajectory(DCD, PSF, start=10, jumps=2, report_dir=tmp_path, progress=False)
    assert out.report["info"]["checkpoint"] == "adk-dims"
    assert any("used the shipped model adk-dims" in note for note in out.report["notes"])


def test_rollout_on_gromacs_files_keeps_going_when_virtual_nodes_leave_the_pdb_range(tmp_path: Path) -> None:
    """adk-dims on the OPLS XTC (frames 100 ps apart) puts a virtual node > 1000 Å away at jump 1:
    the PDB topology cannot hold it, the trajectory and arrays must, and nothing crashes."""
    import numpy as np
    from MDAnalysisTests.datafiles import GRO, XTC

    from fastegnn_md.trajectory_rollout import fits_pdb, rollout_trajectory

    out = rollout_trajectory(XTC, GRO, "adk-dims", start=1, jumps=2, report_dir=tmp_path, progress=False)
    z = np.load(out.virtual_arrays)["positions"]
    virtual = MDAnalysis.Universe(str(out.virtual_topology), str(out.virtual))
    assert len(virtual.trajectory) == len(z)
    placeholder = any("outside the PDB coordinate range" in note for note in out.report["notes"])
    assert placeholder == (not fits_pdb(z[0]))


def test_fits_pdb_bounds() -> None:
    import numpy as np

    from fastegnn_md.trajectory_rollout import fits_pdb

    assert fits_pdb(np.array([[-999.0, 0.0, 9999.0]]))
    assert not fits_pdb(np.array([[-1000.0, 0.0, 0.0]]))
    assert not fits_pdb(np.array([[0.0, 10000.0, 0.0]]))


def test_shipped_sph_trajectory_reads_back():
    """trajectories/sph: the generator's test split (real SPlisHSPlasH output), as its README says."""
    from fastegnn_md.adapters.sph import open_sph_dataset

    metadata, trajectories = open_sph_dataset(ROOT / "trajectories" / "sph", "test")
    (trajectory,) = list(trajectories)
    assert trajectory.positions.shape == (320, 1260, 3) and trajectory.positions.dtype == np.float32
    assert set(trajectory.particle_type.tolist()) == {5}
    assert metadata["default_connectivity_radius"] == pytest.approx(0.064)
    assert metadata["dt"] == pytest.approx(0.005)
    assert (trajectory.positions >= 0).all() and (trajectory.positions <= 1).all()
    y = trajectory.positions[:, :, 1].mean(axis=1)
    assert y[40] < y[0]  # the water falls (gravity along -y)
