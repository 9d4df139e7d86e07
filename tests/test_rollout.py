"""`fastegnn-md rollout`: autoregression, streamed outputs, the report, stops and one-line errors.

A tiny FastEGNN is trained once (module fixture) on the MDAnalysisTests AdK PSF/DCD (98 frames,
1 ps apart, backbone = 855 atoms) with a jump of 5 frames = 5 ps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest
import torch
from MDAnalysisTests.datafiles import DCD, GRO, PSF, TRR, TPR, XTC

from fastegnn_md import metrics
from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint
from fastegnn_md.cli import main
from fastegnn_md.predictor import Predictor
from fastegnn_md.trajectory_rollout import rollout_trajectory

ERROR_PREFIX = "fastegnn-md: error: "
JUMP_FRAMES = 5  # the DCD's frames are 1 ps apart -> dt = 5 ps

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(adk_dcd_checkpoint) -> Path:
    return adk_dcd_checkpoint


@pytest.fixture(scope="module")
def dcd_rollout(checkpoint, tmp_path_factory):
    """One rollout (start frame 10, 4 jumps) shared by the tests that only read its outputs."""
    report_dir = tmp_path_factory.mktemp("dcd-rollout")
    return rollout_trajectory(DCD, PSF, checkpoint, start=10, jumps=4, report_dir=report_dir, progress=False)


def _edited_checkpoint(source: Path, target: Path, **spec_changes) -> Path:
    ckpt = load_checkpoint(source)
    for key, value in spec_changes.items():
        setattr(ckpt.data_spec, key, value)
    save_checkpoint(target, ckpt.model_name, ckpt.hparams, ckpt.build_model(), ckpt.data_spec, ckpt.training)
    return target


def _reference(trajectory=DCD, topology=PSF) -> tuple[np.ndarray, np.ndarray]:
    universe = MDAnalysis.Universe(topology, trajectory)
    atoms = universe.select_atoms("backbone")
    positions = np.array([atoms.positions.astype(np.float64) for _ in universe.trajectory])
    times = np.array([ts.time for ts in universe.trajectory])
    return positions, times


def test_rollout_feeds_the_model_its_own_outputs(checkpoint, dcd_rollout):
    out = dcd_rollout
    reference, times = _reference()
    predicted = MDAnalysis.Universe(str(out.predicted_topology), str(out.predicted))
    frames = np.array([predicted.atoms.positions.astype(np.float64) for _ in predicted.trajectory])
    assert frames.shape == (5, 855, 3)
    np.testing.assert_allclose(frames[0], reference[10], atol=1e-3)  # frame 0 is the start frame
    # Recompute the chain with the Predictor: jump 1 from the reference backward velocity, then
    # each input velocity from the previous two *predicted* frames.
    predictor = Predictor.from_checkpoint(checkpoint)
    x_prev, x = reference[5], reference[10]
    for k in range(1, 5):
        jump = predictor.predict(x, (x - x_prev) / 5.0)
        np.testing.assert_allclose(frames[k], jump.positions, atol=2e-3)  # DCD stores float32
        x_prev, x = x, jump.positions
    # DCD stores a frame interval, not times: one jump apart
    np.testing.assert_allclose(np.diff([ts.time for ts in predicted.trajectory]), 5.0, atol=1e-3)


def test_formats_with_times_keep_the_reference_clock(checkpoint, tmp_path):
    out = rollout_trajectory(DCD, PSF, checkpoint, start=10, jumps=2, out=tmp_path / "p.xtc", report_dir=tmp_path,
                             progress=False)
    _, times = _reference()
    predicted = MDAnalysis.Universe(str(out.predicted_topology), str(out.predicted))
    np.testing.assert_allclose([ts.time for ts in predicted.trajectory], times[10] + 5.0 * np.arange(3), atol=1e-3)


def test_virtual_nodes_written_as_pseudo_atoms_and_arrays(dcd_rollout):
    out = dcd_rollout
    virtual = MDAnalysis.Universe(str(out.virtual_topology), str(out.virtual))
    assert list(virtual.atoms.names) == ["V1", "V2", "V3"]
    assert len(virtual.trajectory) == 4
    arrays = np.load(out.virtual_arrays)
    assert arrays["positions"].shape == (4, 3, 3)
    for k, ts in enumerate(virtual.trajectory):
        np.testing.assert_allclose(virtual.atoms.positions, arrays["positions"][k], atol=1e-3)
    _, times = _reference()
    np.testing.assert_allclose(arrays["times"], times[10] + 5.0 * np.arange(1, 5))


def test_report_gives_each_virtual_nodes_distance_to_the_protein(dcd_rollout):
    """Per virtual node and jump: the distance to the nearest atom of the predicted frame, by hand."""
    out = dcd_rollout
    virtual = np.load(out.virtual_arrays)["positions"]
    predicted = MDAnalysis.Universe(str(out.predicted_topology), str(out.predicted))
    frames = np.array([predicted.atoms.positions.astype(np.float64) for _ in predicted.trajectory])[1:]
    expected = np.array([[np.linalg.norm(frame - node, axis=1).min() for node in nodes]
                         for nodes, frame in zip(virtual, frames)])
    section = out.report["virtual_nodes"]
    np.testing.assert_allclose(np.array(section["distance"]).T, expected, atol=0.02)  # the trajectory keeps 0.01 Å
    np.testing.assert_allclose(section["max"], expected.max(axis=0), atol=0.02)
    assert len(section["first"]) == 3
    np.testing.assert_allclose(section["time_ps"], [5.0, 10.0, 15.0, 20.0], rtol=1e-6)
    markdown = out.report_files["markdown"].read_text()
    assert "## Virtual nodes" in markdown
    assert (out.report_files["json"].parent / "virtual_nodes.png").is_file()


def test_report_against_reference_and_trivial_predictors(dcd_rollout):
    report_dir = dcd_rollout.report_files["json"].parent
    report = json.loads((report_dir / "report.json").read_text())
    reference, _ = _reference()
    masses = MDAnalysis.Universe(PSF).select_atoms("backbone").masses  # the report's RMSD is mass-weighted
    assert report["predictors"] == ["model", "no motion", "constant velocity"]
    for k, row in enumerate(report["per_jump"], start=1):
        frame = 10 + JUMP_FRAMES * k
        assert row["reference_frame"] == frame
        no_motion = metrics.kabsch_rmsd(reference[10], reference[frame], masses)
        assert row["rmsd"]["no motion"] == pytest.approx(no_motion, rel=1e-6)
        velocity = (reference[10] - reference[5]) / 5.0
        const = reference[10] + velocity * 5.0 * k
        assert row["mse"]["constant velocity"] == pytest.approx(metrics.position_mse(const, reference[frame]), rel=1e-6)
        assert set(row["contact_f1"]) == {"model", "no motion", "constant velocity"}
    assert len(report["rmsf"]["residues"]) == 214
    for name in ("report.md", "rmsd.png", "radius_of_gyration.png", "rmsf.png", "contacts.png"):
        assert (report_dir / name).stat().st_size > 0
    assert "lower RMSD than **no motion**" in (report_dir / "report.md").read_text()


def test_times_without_reference_frames_are_reported_not_invented(checkpoint, tmp_path):
    # 98 frames, start 80: jumps 1-3 land on frames 85, 90, 95; jumps 4-5 are past the end.
    rollout_trajectory(DCD, PSF, checkpoint, start=80, jumps=5, report_dir=tmp_path / "r", progress=False)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [row["reference_frame"] for row in report["per_jump"]] == [85, 90, 95, None, None]
    assert "rmsd" not in report["per_jump"][3]
    assert report["jumps_with_reference"] == 3
    assert any("no frame in the reference" in note for note in report["notes"])
    assert "no reference frame" in (tmp_path / "r" / "report.md").read_text()


def test_frames_between_reference_frames_have_no_reference(checkpoint, tmp_path):
    # GRO + XTC: 10 frames 100 ps apart; the 5 ps model only meets a frame every 20 jumps. The
    # start velocity comes from the frame 100 ps earlier (noted), and make_whole handles the box.
    out = rollout_trajectory(XTC, GRO, checkpoint, start=1, jumps=41, report_dir=tmp_path / "r", progress=False)
    report = out.report
    with_reference = [row["jump"] for row in report["per_jump"] if row["reference_frame"] is not None]
    assert with_reference == [20, 40]
    assert any("100 ps earlier" in note for note in report["notes"])


def test_tpr_trr(checkpoint, tmp_path):
    out = rollout_trajectory(TRR, TPR, checkpoint, start=1, jumps=20, report_dir=tmp_path, progress=False)
    assert out.report["per_jump"][-1]["reference_frame"] == 2
    assert out.predicted.suffix == ".trr"


def test_topology_found_beside_trajectory_by_stem(checkpoint, tmp_path):
    shutil.copy(DCD, tmp_path / "adk.dcd")
    shutil.copy(PSF, tmp_path / "adk.psf")
    out = rollout_trajectory(tmp_path / "adk.dcd", None, checkpoint, jumps=1, report_dir=tmp_path / "r", progress=False)
    assert out.report["info"]["topology"] == str(tmp_path / "adk.psf")


def test_topology_stored_in_the_checkpoint_is_used_when_atom_counts_match(checkpoint, tmp_path):
    shutil.copy(DCD, tmp_path / "lonely.dcd")  # no adk.psf beside it
    out = rollout_trajectory(tmp_path / "lonely.dcd", None, checkpoint, start=10, jumps=1, report_dir=tmp_path / "r",
                             progress=False)
    assert out.report["info"]["topology"] == "topology stored in the checkpoint"
    reference, _ = _reference()
    assert out.report["per_jump"][0]["mse"]["no motion"] == pytest.approx(
        metrics.position_mse(reference[10], reference[15]), rel=1e-5)


def test_exploding_rollout_stops_and_keeps_frames(checkpoint, tmp_path, capsys):
    code = main(["rollout", str(DCD), "--topology", str(PSF), "--checkpoint", str(checkpoint), "--start", "10",
                 "--jumps", "5", "--max-displacement", "1e-6", "--report", str(tmp_path / "r"), "--quiet"])
    assert code == 1
    assert "rollout stopped early: jump 1" in capsys.readouterr().err
    predicted = MDAnalysis.Universe(str(tmp_path / "r" / "predicted.pdb"), str(tmp_path / "r" / "predicted.dcd"))
    assert len(predicted.trajectory) == 1  # the start frame, nothing invented after the stop
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["info"]["stopped"].startswith("jump 1:")


def test_non_finite_predictions_stop_the_rollout(checkpoint, tmp_path):
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(path, ckpt.model_name, ckpt.hparams, model, ckpt.data_spec, ckpt.training)
    out = rollout_trajectory(DCD, PSF, path, start=10, jumps=3, report_dir=tmp_path / "r", progress=False)
    assert out.stopped.startswith("jump 1: the model predicted non-finite positions")


def _run_error(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(ERROR_PREFIX) and err.count("\n") == 1, err
    return err


def test_missing_trajectory_is_one_line(checkpoint, tmp_path, capsys):
    err = _run_error(["rollout", str(tmp_path / "none.xtc"), "--checkpoint", str(checkpoint)], capsys)
    assert "none.xtc: no such trajectory file" in err


def test_missing_topology_is_one_line(checkpoint, tmp_path, capsys):
    shutil.copy(DCD, tmp_path / "lonely.dcd")
    ckpt = _edited_checkpoint(checkpoint, tmp_path / "no-top.pt", extra={})
    err = _run_error(["rollout", str(tmp_path / "lonely.dcd"), "--checkpoint", str(ckpt), "--quiet"], capsys)
    assert "no topology found" in err and "--topology" in err


def test_unreadable_trajectory_is_one_line(checkpoint, tmp_path, capsys):
    bad = tmp_path / "adk.xtc"
    bad.write_bytes(b"this is not an xtc file" * 10)
    err = _run_error(["rollout", str(bad), "--topology", str(PSF), "--checkpoint", str(checkpoint), "--quiet"], capsys)
    assert "adk.xtc" in err


def test_selection_matching_nothing_is_one_line(checkpoint, tmp_path, capsys):
    ckpt = _edited_checkpoint(checkpoint, tmp_path / "sel.pt", selection="resname XYZ")
    err = _run_error(["rollout", str(DCD), "--topology", str(PSF), "--checkpoint", str(ckpt), "--quiet"], capsys)
    assert "XYZ" in err


def test_checkpoint_not_fitting_selection_is_one_line(checkpoint, tmp_path, capsys):
    ckpt = _edited_checkpoint(checkpoint, tmp_path / "ca.pt", selection="name CA")
    err = _run_error(["rollout", str(DCD), "--topology", str(PSF), "--checkpoint", str(ckpt), "--quiet"], capsys)
    assert "855" in err and "214" in err


def test_trajectory_shorter_than_one_jump_is_one_line(checkpoint, tmp_path, capsys):
    universe = MDAnalysis.Universe(PSF, DCD)
    short = tmp_path / "short.dcd"
    with MDAnalysis.Writer(str(short), n_atoms=len(universe.atoms)) as writer:
        for ts in universe.trajectory[:3]:
            writer.write(universe.atoms)
    err = _run_error(["rollout", str(short), "--topology", str(PSF), "--checkpoint", str(checkpoint), "--quiet"], capsys)
    assert "shorter than one jump" in err


def test_forward_convention_checkpoint_is_refused(checkpoint, tmp_path, capsys):
    ckpt = _edited_checkpoint(checkpoint, tmp_path / "fwd.pt", velocity_convention="forward")
    err = _run_error(["rollout", str(DCD), "--topology", str(PSF), "--checkpoint", str(ckpt), "--quiet"], capsys)
    assert "forward" in err


def test_non_molecular_checkpoint_is_refused(checkpoint, tmp_path, capsys):
    ckpt = _edited_checkpoint(checkpoint, tmp_path / "nbody.pt", units={"length": "dimensionless", "time": "dimensionless"})
    err = _run_error(["rollout", str(DCD), "--topology", str(PSF), "--checkpoint", str(ckpt), "--quiet"], capsys)
    assert "not a molecular model" in err
