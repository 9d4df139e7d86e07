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
from fastegnn_md.adapters.openmm_validate import render_markdown, validate  # noqa: E402
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
    # Three frames after the start: distributions, without a run-to-run column (one replica).
    d = result.report["distributions"]
    assert d["status"] == "ok" and d["reference_vs_reference"] is None and d["replica_spread"] is None
    assert all(c["run_to_run"] is None and c["run_to_run_met"] is None for c in d["checks"].values())
    assert isinstance(d["checks"]["rg_mean"]["met"], bool)
    assert (out / "distributions.png").read_bytes()[:4] == b"\x89PNG"


def test_few_frames_give_no_distributions(two_jumps):
    out, result = two_jumps
    d = result.report["distributions"]
    assert d["status"] == "too few frames" and d["frames"] == 2 and d["reference_replicas"] == 1
    assert result.report["summary"]["reference_replicas"] == 1
    assert "Too few frames: 2 frames after the common start" in render_markdown(result.report)
    assert not (out / "reference_1.xtc").exists()


@pytest.fixture(scope="module")
def replicas(checkpoint, tmp_path_factory):
    """Two jumps with two reference replicas (too few frames for distributions), and replica 1's
    frames as the checkpoint holds them."""
    out = tmp_path_factory.mktemp("replicas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate(ADK, out, checkpoint, settings(), jumps=2, threads=1, stepper_options=OPTIONS,
                          progress=False, log=lambda _: None, reference_replicas=2)
    with np.load(out / "validation.checkpoint.npz") as data:
        replica_1 = data["reference_1_frames"].copy()
    return out, result, replica_1


@pytest.fixture(scope="module")
def replicas_resumed(replicas, checkpoint):
    """`replicas` resumed to three jumps: three frames after the start, enough for distributions."""
    out, first, replica_1 = replicas
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validate(ADK, out, checkpoint, settings(), jumps=3, threads=1, stepper_options=OPTIONS,
                          progress=False, log=messages.append, reference_replicas=2)
    return out, first, result, messages, replica_1


def test_replicas_write_their_trajectories_and_differ(replicas):
    import MDAnalysis

    from fastegnn_md import metrics

    out, _, _ = replicas
    jumps = json.loads((out / "validation.json").read_text())["summary"]["jumps"]  # 2, or 3 once resumed
    frames = {}
    for name in ("reference", "reference_1", "stepper"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = MDAnalysis.Universe(str(out / "selected.pdb"), str(out / f"{name}.xtc"))
        assert len(u.trajectory) == jumps + 1
        frames[name] = np.array([ts.positions.copy() for ts in u.trajectory])
    np.testing.assert_allclose(frames["reference_1"][0], frames["reference"][0], atol=1e-6)  # the common start
    for k in range(1, jumps + 1):  # another Langevin seed: the replicas separate from the first Δt on
        assert metrics.kabsch_rmsd(frames["reference_1"][k], frames["reference"][k]) > 0.05
    assert not (out / "reference_2.xtc").exists()


def test_replicas_resume_and_extend(replicas_resumed, checkpoint):
    from fastegnn_md import metrics

    out, first, result, messages, replica_1_before = replicas_resumed
    assert any("resuming" in m and "jump 2" in m for m in messages)
    rows = result.report["per_jump"]
    assert len(rows) == 4 and rows[:3] == first.report["per_jump"]
    assert first.report["distributions"]["status"] == "too few frames"
    with np.load(out / "validation.checkpoint.npz") as data:
        replica_1 = data["reference_1_frames"]
        assert int(data["version"]) == 2 and int(data["replicas"]) == 2 and len(data["steps"]) == 3
    np.testing.assert_array_equal(replica_1[:3], replica_1_before)  # restored, not rerun
    rmsd = result.report["distributions"]["reference_vs_reference"]["rmsd_from_start"]["b"]
    assert rmsd == pytest.approx([metrics.kabsch_rmsd(f, replica_1[0]) for f in replica_1[1:]])
    assert rmsd[2] != pytest.approx(rmsd[1])  # and it moved on
    # Another number of replicas does not fit the checkpoint.
    with pytest.raises(DataError, match=r"number of reference replicas\); delete it to start over"):
        validate(ADK, out, checkpoint, settings(), jumps=4, threads=1, stepper_options=OPTIONS, progress=False,
                 log=lambda _: None, reference_replicas=3)


def test_distributions_and_acceptance_checks(replicas_resumed):
    out, _, result, _, _ = replicas_resumed
    report = json.loads((out / "validation.json").read_text())
    d = report["distributions"]
    assert d["status"] == "ok" and d["frames"] == 3 and d["reference_replicas"] == 2
    assert report["summary"]["reference_replicas"] == 2
    stepper, run_to_run = d["stepper_vs_reference"], d["reference_vs_reference"]
    for figures in (stepper, run_to_run):
        assert figures["frames"] == [3, 3]
        assert len(figures["rmsf"]["a"]) == len(figures["rmsf"]["b"]) == 214  # residues of AdK
        assert figures["energy"] is not None and 0 <= figures["rg"]["overlap"] <= 1
        assert 0 <= figures["dihedrals"]["js_divergence"] <= 1 and figures["dihedrals"]["residues"] == 212
        assert len(figures["rmsd_from_start"]["a"]) == 3
    # Both comparisons have replica 0 as run a: the same numbers on that side.
    assert stepper["rg"]["mean_a"] == run_to_run["rg"]["mean_a"]
    assert stepper["rmsf"]["a"] == run_to_run["rmsf"]["a"]
    rows = report["per_jump"]
    assert stepper["rg"]["mean_a"] == pytest.approx(np.mean([r["rg_reference"] for r in rows[1:]]), rel=1e-3)
    assert stepper["energy"]["mean_b"] == pytest.approx(np.mean([r["pe_stepper"] for r in rows[1:]]))
    assert stepper["rmsd_from_start"]["a"] == pytest.approx([r["rmsd_reference_to_start"] for r in rows[1:]], abs=1e-6)
    assert d["replica_spread"]["pairs"] == 1
    assert d["replica_spread"]["figures"]["rg"]["overlap"]["mean"] == pytest.approx(run_to_run["rg"]["overlap"])
    checks = d["checks"]
    assert set(checks) == {"rg_mean", "pe_mean", "rmsf_pearson_r", "rmsd_from_start_ratio", "phi_psi_js"}
    rg = checks["rg_mean"]
    assert rg["stepper"] == pytest.approx(stepper["rg"]["mean_b"] - stepper["rg"]["mean_a"])
    assert rg["met"] == (abs(rg["stepper"]) <= stepper["rg"]["sd_a"])
    assert rg["run_to_run_met"] == (abs(rg["run_to_run"]) <= stepper["rg"]["sd_a"])
    pe = checks["pe_mean"]
    assert pe["met"] == (abs(pe["stepper"]) <= stepper["energy"]["sd_a"])
    r = checks["rmsf_pearson_r"]
    assert r["stepper"] == stepper["rmsf"]["pearson_r"] and r["met"] == (r["stepper"] >= 0.7)
    ratio = checks["rmsd_from_start_ratio"]
    final = stepper["rmsd_from_start"]
    assert ratio["stepper"] == pytest.approx(final["final_b"] / final["final_a"])
    assert ratio["met"] == (abs(ratio["stepper"] - 1) <= 0.3)
    assert checks["phi_psi_js"]["met"] is None
    assert checks["phi_psi_js"]["run_to_run"] == run_to_run["dihedrals"]["js_divergence"]
    for check in checks.values():
        assert isinstance(check["met"], bool) or check["met"] is None
    assert d["all_met"] == all(c["met"] for c in checks.values() if c["met"] is not None)
    md = (out / "validation.md").read_text()
    assert "## Distributions" in md
    assert "| figure | stepper vs reference | reference vs reference (run-to-run) | goal | met |" in md
    assert "![distributions](distributions.png)" in md
    assert (out / "distributions.png").read_bytes()[:4] == b"\x89PNG"
    assert "goals met" in result.summary()


def test_old_checkpoint_is_refused_in_one_line(replicas, checkpoint, tmp_path):
    out, _, _ = replicas
    with np.load(out / "validation.checkpoint.npz") as data:  # format 1: no version, no replicas
        arrays = {name: data[name] for name in data.files
                  if name not in ("version", "replicas") and "_1" not in name}
    np.savez(tmp_path / "validation.checkpoint.npz", **arrays)
    with pytest.raises(DataError, match=r"checkpoint format 1, this one reads 2\); delete it to start over"):
        validate(ADK, tmp_path, checkpoint, settings(), jumps=1, threads=1, stepper_options=OPTIONS, progress=False,
                 log=lambda _: None)


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


def test_cli_passes_reference_replicas(monkeypatch, tmp_path, capsys):
    from fastegnn_md.adapters.openmm import validate as module
    from fastegnn_md.cli import main

    seen = {}

    class Result:
        def summary(self) -> str:
            return "done"

    def fake_validate(*args, **kwargs):
        seen.update(kwargs)
        return Result()

    monkeypatch.setattr(module, "validate", fake_validate)
    assert main(["validate", str(ADK), "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["reference_replicas"] == 2  # the CLI's default
    assert main(["validate", str(ADK), "--out", str(tmp_path), "--reference-replicas", "3", "--quiet"]) == 0
    assert seen["reference_replicas"] == 3
    assert main(["validate", str(ADK), "--reference-replicas", "0"]) == 2
    assert "--reference-replicas: must be >= 1" in capsys.readouterr().err


def test_cli_parses_release_stages_and_sample(tmp_path):
    """The stepper options of issue 15 are validate options, with their defaults."""
    from fastegnn_md.cli import build_parser

    args = build_parser().parse_args(["validate", "x.pdb", "--release-stages", "4", "--sample"])
    assert args.release_stages == 4 and args.sample is True
    args = build_parser().parse_args(["validate", "x.pdb"])
    assert args.release_stages == 1 and args.sample is False


# -- reusing another run's reference MD ------------------------------------------------------------

OTHER_OPTIONS = {"relax_steps": 12, "minimise_iterations": 5}


@pytest.fixture(scope="module")
def source(replicas_resumed, tmp_path_factory):
    """A copy of `replicas_resumed`'s output (3 jumps, 2 replicas, its common start stored)."""
    import shutil

    out = tmp_path_factory.mktemp("source") / "run"
    shutil.copytree(replicas_resumed[0], out)
    return out


@pytest.fixture(scope="module")
def reused(source, checkpoint, tmp_path_factory):
    """Two jumps with other stepper options and ``source``'s reference, then resumed to three."""
    out = tmp_path_factory.mktemp("reused")
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = validate(ADK, out, checkpoint, settings(), jumps=2, threads=1, stepper_options=OTHER_OPTIONS,
                         progress=False, log=messages.append, reference_from=source)
        result = validate(ADK, out, checkpoint, settings(), jumps=3, threads=1, stepper_options=OTHER_OPTIONS,
                          progress=False, log=messages.append, reference_from=source)
    return out, first, result, messages


def test_reused_reference_is_the_source_run_bit_for_bit(source, reused):
    out, first, result, messages = reused
    assert not any("minimising" in m for m in messages)  # the common start was read, not made again
    assert any("resuming" in m and "jump 2" in m for m in messages)
    assert result.report["per_jump"][:3] == first.report["per_jump"]
    with np.load(source / "validation.checkpoint.npz") as src, np.load(out / "validation.checkpoint.npz") as new:
        for name in ("reference_frames", "pe_reference", "wall_reference", "reference_1_frames", "pe_reference_1"):
            np.testing.assert_array_equal(new[name], src[name])
        np.testing.assert_array_equal(new["stepper_frames"][0], src["reference_frames"][0])  # the same start
        assert not np.allclose(new["stepper_frames"][1:], src["stepper_frames"][1:], atol=1e-3)  # other options
        assert "reference_state" not in new.files and str(new["reference_reused_from"]) == str(source)
        assert str(new["start_state"]) == str(src["start_state"])
    assert result.report["summary"]["reference_replicas"] == 2  # the source's, not the argument's default 1
    assert result.report["distributions"]["status"] == "ok"
    assert f"Reference MD reused from `{source}`" in (out / "validation.md").read_text()
    assert (out / "reference_1.xtc").exists()


def test_reuse_refuses_what_the_source_cannot_give(source, checkpoint, tmp_path):
    def run(out: Path, **changes) -> None:
        args = dict(jumps=1, settings=settings())
        args.update(changes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate(ADK, out, checkpoint, args["settings"], jumps=args["jumps"], threads=1,
                     stepper_options=OTHER_OPTIONS, progress=False, log=lambda _: None, reference_from=source)

    with pytest.raises(DataError, match=r"holds 3 jumps of reference MD, --jumps 5 needs more"):
        run(tmp_path / "a", jumps=5)
    with pytest.raises(DataError, match=r"run for another structure or settings"):
        run(tmp_path / "b", settings=settings(seed=4))
    with pytest.raises(DataError, match=r"no validation.checkpoint.npz"):
        validate(ADK, tmp_path / "c", checkpoint, settings(), jumps=1, progress=False, reference_from=tmp_path)


def test_reuse_of_a_run_that_did_not_store_its_start(source, checkpoint, tmp_path):
    """An older run (no stored start, no reference key) is reused when the common start, made again,
    lands on its first frame, and refused when it does not (another seed)."""
    old = tmp_path / "old"
    old.mkdir()
    with np.load(source / "validation.checkpoint.npz") as data:
        arrays = {name: data[name] for name in data.files
                  if name not in ("start_state", "start_previous", "reference_key")}
    np.savez(old / "validation.checkpoint.npz", **arrays)
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        validate(ADK, tmp_path / "ok", checkpoint, settings(), jumps=1, threads=1, stepper_options=OTHER_OPTIONS,
                 progress=False, log=messages.append, reference_from=old)
        assert any("minimising" in m for m in messages)  # made again, and it matched
        with pytest.raises(DataError, match=r"its common start differs from this run's by .* Å"):
            validate(ADK, tmp_path / "bad", checkpoint, settings(seed=4), jumps=1, threads=1,
                     stepper_options=OTHER_OPTIONS, progress=False, log=lambda _: None, reference_from=old)
    with np.load(tmp_path / "ok" / "validation.checkpoint.npz") as data:
        np.testing.assert_array_equal(data["reference_frames"], arrays["reference_frames"][:2])
    # A run that reused a reference is not itself a source: the one it reused is named instead.
    with pytest.raises(DataError, match=r"reuses another run's reference itself; pass that run's directory"):
        validate(ADK, tmp_path / "again", checkpoint, settings(), jumps=1, progress=False,
                 reference_from=tmp_path / "ok")


def test_cli_passes_reference_from(tmp_path):
    from fastegnn_md.cli import build_parser

    args = build_parser().parse_args(["validate", "x.pdb", "--reference-from", str(tmp_path)])
    assert args.reference_from == tmp_path
    assert build_parser().parse_args(["validate", "x.pdb"]).reference_from is None
