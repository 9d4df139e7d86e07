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
SHIPPED = ("adk-backbone", "adk-dims", "adk-dims-no-mmd", "protein-backbone", "protein-backbone-2ps", "villin-backbone")
# The two checkpoints for any protein backbone, with their jump (ps).
PROTEIN_MODELS = (("protein-backbone", 5.0), ("protein-backbone-2ps", 2.0))
VILLIN = ROOT / "trajectories" / "villin"

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
    assert main(argv) == 0  # also: no jump left the physical range (the default --unphysical stop)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["info"]["model"] == "fastegnn"
    assert report["jumps_with_reference"] == report["jumps"] == 100
    # On data the model never trained on, beside the trivial predictor it has to beat.
    assert not any(row.get("training_frame") for row in report["per_jump"])
    assert {"model", "no motion", "constant velocity"} <= set(report["summary"]["mean_aligned_mse"])
    assert (report_dir / "predicted.xtc").exists() and (report_dir / "predicted-virtual.pdb").exists()


def test_the_default_model_serves_any_backbone(tmp_path: Path) -> None:
    from MDAnalysisTests.datafiles import DCD, PSF

    from fastegnn_md.trajectory_rollout import rollout_trajectory

    # protein-backbone pins no atom count: the CHARMM PSF's 855 backbone atoms are served directly.
    out = rollout_trajectory(DCD, PSF, start=10, jumps=2, report_dir=tmp_path, progress=False)
    assert out.report["info"]["checkpoint"] == "protein-backbone" and out.stopped is None
    assert not any("used the shipped model" in note for note in out.report["notes"])


def test_a_default_that_pins_its_atoms_falls_back_to_a_shipped_model_that_fits(tmp_path, monkeypatch) -> None:
    from MDAnalysisTests.datafiles import DCD, PSF

    import fastegnn_md.rollouts.md as md_rollout
    from fastegnn_md.trajectory_rollout import rollout_trajectory

    # adk-backbone has 856 backbone atoms (Amber names keep the C-terminal O); the CHARMM PSF has 855.
    monkeypatch.setattr(md_rollout, "DEFAULT_CHECKPOINT", "adk-backbone")
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
    assert trajectory.positions.shape == (320, 1260 + 3752, 3) and trajectory.positions.dtype == np.float32
    assert (trajectory.particle_type[:1260] == 5).all() and (trajectory.particle_type[1260:] == 3).all()
    walls = trajectory.positions[:, 1260:]
    assert (walls == walls[0]).all() and ((walls[0] == 0) | (walls[0] == 1)).any(axis=1).all()  # static, on the box
    assert metadata["generator"]["walls"] == {"particle_type": 3, "spacing": pytest.approx(0.04), "particles": 3752}
    assert metadata["default_connectivity_radius"] == pytest.approx(0.064)
    assert metadata["dt"] == pytest.approx(0.005)
    assert (trajectory.positions >= 0).all() and (trajectory.positions <= 1).all()
    y = trajectory.positions[:, :, 1].mean(axis=1)
    assert y[40] < y[0]  # the water falls (gravity along -y)


def test_the_villin_model_never_saw_the_held_out_replica() -> None:
    spec = load_checkpoint("villin-backbone").data_spec
    trained_on = {"villin_seed1.xtc", "villin_seed2.xtc", "villin_seed3.xtc"}
    assert set(spec.extra["trajectory"]) == trained_on
    assert set(spec.extra["train_frames"]) == set(spec.extra["valid_frames"]) == trained_on
    assert spec.extra["fit"] == "first-frame" and spec.extra["node_attr_source"] == "identity"
    assert spec.num_nodes is None and spec.dt == pytest.approx(5.0)
    config = load_checkpoint("villin-backbone").training["config"]
    # Trained for rollouts: the MD defaults the README's main job relies on.
    assert (config["local_distance_weight"], config["local_distance_cutoff"], config["unroll"]) == (10.0, 2.6, 3)
    assert config["radial_distance_weight"] == 1.0


@pytest.mark.parametrize("name, dt", PROTEIN_MODELS)
def test_the_protein_models_never_saw_the_held_out_replicas(name: str, dt: float) -> None:
    """Villin seeds 1-3 and AdK seed 2 trained on; villin seed 4 and AdK seed 1 are held out."""
    ckpt = load_checkpoint(name)
    spec = ckpt.data_spec
    trained_on = {"villin_seed1.xtc", "villin_seed2.xtc", "villin_seed3.xtc", "adk_seed2_cont.xtc"}
    assert set(spec.extra["trajectory"]) == set(spec.extra["train_frames"]) == trained_on
    assert not {"villin_seed4.xtc", "adk_seed1_cont.xtc", "adk_seed1.xtc"} & set(spec.extra["trajectory"])
    # The equilibration the criterion chose (trajectories/README.md) is cut from every file.
    assert all(first >= 225 for first, _ in spec.extra["train_frames"].values())
    assert spec.extra["node_attr_source"] == "identity" and spec.num_nodes is None and spec.dt == pytest.approx(dt)


def test_the_2ps_protein_model_is_the_weight_average_of_its_recipe() -> None:
    """protein-backbone-2ps: the pretrained README's recipe (stride 2, radial-distance term 1,
    pushforward 3, `--ema 0.99`), so its command reproduces it."""
    config = load_checkpoint("protein-backbone-2ps").training["config"]
    assert config["ema_decay"] == 0.99 and config["radial_distance_weight"] == 1.0 and config["unroll"] == 3
    assert (config["local_distance_weight"], config["local_distance_cutoff"], config["seed"]) == (10.0, 2.6, 1)


def test_the_water_model_is_its_recipe_on_the_benchmark_scenes() -> None:
    """water-box: the pretrained README's last step (input noise 0.01 box units, the box term with
    its faces 0.015 inside, a weight average, seed 1) on `data/water3d-bench` (scene seed 0; the
    held-out scenes of RESULTS.md are seed 1, the added validation drops seed 2)."""
    saved = load_checkpoint("water-box")
    config = saved.training["config"]
    assert (config["input_noise"], config["box_weight"], config["lr"], config["seed"]) == (0.01, 10000.0, 1e-4, 1)
    assert (config["box_margin"], config["ema_decay"]) == (0.015, 0.99)
    assert config["unroll"] == 1 and config["init"] == "runs/s13/dec-box10000/best.pt"
    assert saved.training["dataset"] == "data/water3d-bench"
    recipe = (PRETRAINED_DIR / "README.md").read_text()
    assert ("--init runs/s13/dec-box10000/best.pt --box-weight 10000 --box-margin 0.015 --lr 1e-4 --input-noise 0.01 "
            "--ema 0.99 --seed 1 --out runs/s13/dec-m0.015-ema") in recipe


def test_the_water_model_keeps_the_shipped_trajectory_in_its_box(tmp_path, capsys) -> None:
    """water-box on `trajectories/sph` (the shipped test trajectory, a block falling into the box): no water
    outside the box at any of 8 jumps (the previous model let 45 of 1,260 out at jumps 3-6, where
    the block lands), and MSE below "no motion" and "constant velocity" at every jump."""
    report = tmp_path / "r"
    assert main(["rollout", str(ROOT / "trajectories" / "sph"), "--jumps", "8", "--sinkhorn-particles", "100",
                 "--report", str(report), "--quiet"]) == 0
    capsys.readouterr()
    saved = json.loads((report / "report.json").read_text())
    assert saved["info"]["checkpoint"] == "water-box" and len(saved["per_jump"]) == 8
    assert [row["outside_box"]["model"] for row in saved["per_jump"]] == [0] * 8
    assert saved["summary"]["model_beats_all"]["mse"] == 8


def _backbone_cases():
    from MDAnalysisTests.datafiles import DCD, PSF

    return [(DCD, PSF, 855), (TRAJECTORY, None, 856), (VILLIN / "villin_seed4.xtc", None, 140)]


@pytest.mark.parametrize("name, hold", [("protein-backbone", False), ("protein-backbone-2ps", True)])
@pytest.mark.parametrize("trajectory, topology, atoms", _backbone_cases(), ids=["adk-charmm", "adk-amber", "villin"])
def test_one_shipped_checkpoint_rolls_out_any_backbone(tmp_path, trajectory, topology, atoms, name, hold) -> None:
    from fastegnn_md.rollouts import rollout_trajectory

    # The 2 ps model as its README row uses it: mean jumps with the geometry held.
    out = rollout_trajectory(trajectory, topology, name, start=10, jumps=3, report_dir=tmp_path / "r",
                             progress=False, hold_geometry=hold)
    assert out.report["info"]["atoms"] == atoms  # its identity attributes computed from this topology
    # AdK in CHARMM and Amber naming and villin, one checkpoint unchanged: no stop, finite, no
    # atom count pinned (100-jump figures in benchmarks/RESULTS.md).
    assert out.stopped is None
    assert all(np.isfinite(row["rmsd"]["model"]) for row in out.report["per_jump"])
    geometry = out.report["geometry"]["mean_N-CA"]
    assert abs(geometry["model"] / geometry["reference"] - 1) < 0.05


@pytest.mark.parametrize("name, dt", PROTEIN_MODELS)
def test_the_shipped_protein_models_drive_ase_atoms_of_another_protein(name: str, dt: float) -> None:
    from MDAnalysisTests.datafiles import PDB_small

    from fastegnn_md import FastEGNNCalculator
    from fastegnn_md.adapters.ase import atoms_from_mdanalysis

    backbone = MDAnalysis.Universe(PDB_small).select_atoms("backbone")
    atoms = atoms_from_mdanalysis(backbone)
    atoms.calc = FastEGNNCalculator(name, velocity_input="atoms")
    assert atoms.calc.dt_ps == pytest.approx(dt)  # the checkpoint's jump, in ps
    jumped = atoms.calc.get_property("jumped_positions", atoms)
    assert jumped.shape == (len(backbone), 3) and np.isfinite(jumped).all()
    # From rest (ASE velocities zero) a 2-5 ps jump of a folded backbone moves atoms by a fraction of an Å.
    assert np.linalg.norm(jumped - atoms.positions, axis=1).max() < 1.0


def test_ase_calculator_samples_jumps_from_the_shipped_spread() -> None:
    """`FastEGNNCalculator(..., sample=True)`: seeded draws around the mean, bonds kept, the same
    point asked again gives the same draw; a checkpoint without a spread is refused."""
    from MDAnalysisTests.datafiles import PDB_small

    from fastegnn_md import FastEGNNCalculator
    from fastegnn_md.adapters.ase import atoms_from_mdanalysis
    from fastegnn_md.errors import CheckpointError

    backbone = MDAnalysis.Universe(PDB_small).select_atoms("backbone")

    def jumped(seed: int, sample: bool = True) -> np.ndarray:
        atoms = atoms_from_mdanalysis(backbone)
        atoms.calc = FastEGNNCalculator("protein-backbone", velocity_input="atoms", sample=sample, seed=seed)
        first = atoms.calc.get_property("jumped_positions", atoms)
        np.testing.assert_array_equal(atoms.calc.get_property("jumped_positions", atoms), first)
        return first

    mean, a, b = jumped(0, sample=False), jumped(1), jumped(2)
    np.testing.assert_array_equal(jumped(1), a)
    assert not np.allclose(a, b) and not np.allclose(a, mean)
    n_ca = [np.linalg.norm(x[backbone.names == "CA"] - x[backbone.names == "N"], axis=1) for x in (mean, a)]
    assert np.max(np.abs(n_ca[1] - np.linalg.norm(
        backbone.positions[backbone.names == "CA"] - backbone.positions[backbone.names == "N"], axis=1))) < 2e-3
    assert 0.2 < np.sqrt(np.mean(np.sum((a - mean) ** 2, axis=1))) < 3.0  # of the size of σ (~0.5 Å per axis)
    # The Atoms carry names and residue numbers, so each peptide ω is kept too (metrics.peptide_plane_pairs).
    from fastegnn_md import metrics

    plane = metrics.peptide_plane_pairs(backbone.names, backbone.resids)
    start = np.linalg.norm(backbone.positions[plane[:, 0]] - backbone.positions[plane[:, 1]], axis=1)
    assert len(plane) == 2 * (len(backbone.residues) - 1)
    assert np.max(np.abs(np.linalg.norm(a[plane[:, 0]] - a[plane[:, 1]], axis=1) - start)) < 2e-3

    with pytest.raises(CheckpointError, match="calibrate"):
        FastEGNNCalculator("villin-backbone", sample=True)


def test_ase_calculator_holds_the_geometry_of_mean_jumps_when_asked() -> None:
    """`FastEGNNCalculator(..., hold_geometry=True)`: the mean jump with the start's bonds, bond
    angles and peptide planes given back (fastegnn_md.local_geometry), near the free mean jump."""
    from MDAnalysisTests.datafiles import PDB_small

    from fastegnn_md import FastEGNNCalculator, metrics
    from fastegnn_md.adapters.ase import atoms_from_mdanalysis
    from fastegnn_md.local_geometry import local_pairs

    backbone = MDAnalysis.Universe(PDB_small).select_atoms("backbone")
    start = backbone.positions.astype(np.float64)

    def jumped(hold: bool) -> np.ndarray:
        atoms = atoms_from_mdanalysis(backbone)
        atoms.calc = FastEGNNCalculator("protein-backbone", velocity_input="atoms", hold_geometry=hold)
        return atoms.calc.get_property("jumped_positions", atoms)

    free, held = jumped(False), jumped(True)
    pairs = np.concatenate([local_pairs(start, 2.6), metrics.peptide_plane_pairs(backbone.names, backbone.resids)])

    def error(x: np.ndarray) -> float:
        return float(np.max(np.abs(np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
                                   - np.linalg.norm(start[pairs[:, 0]] - start[pairs[:, 1]], axis=1))))

    assert error(free) > 0.02 and error(held) < 2e-3  # the free mean jump bends them; held, they stay
    assert np.sqrt(np.mean(np.sum((held - free) ** 2, axis=1))) < 0.3  # a correction, not another jump
    with pytest.raises(ValueError, match="hold_geometry"):
        FastEGNNCalculator("protein-backbone", sample=True, hold_geometry=True)
