"""Faults that used to lose or corrupt output (issue 13), each reproduced the way a user meets it.

Concurrent and killed rollouts use real processes and signals; the rest run the CLI in-process
or the API directly. Every case checks that the user gets one line and loses nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest
import torch
from MDAnalysisTests.datafiles import DCD, PSF

from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint
from fastegnn_md.cli import main
from fastegnn_md.errors import CheckpointError, NonFiniteJump
from fastegnn_md.io import write_atomically

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "trajectories" / "adk-obc" / "adk_obc.xtc"
ERROR = "fastegnn-md: error: "

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cli_process(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fastegnn_md.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def one_line_error(args, capsys) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(ERROR) and err.count("\n") == 1, err
    return err


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def locked(path: Path) -> bool:
    """True if another process holds the flock on ``path``."""
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def frames_of(topology: Path, trajectory: Path) -> np.ndarray:
    universe = MDAnalysis.Universe(str(topology), str(trajectory))
    return np.array([universe.atoms.positions.copy() for _ in universe.trajectory])


# ------------------------------------------------------------------ 1, 2: concurrent and killed rollouts


def test_a_second_rollout_into_the_same_report_is_refused_while_the_first_runs(tmp_path):
    report = tmp_path / "report"
    # --unphysical warn: a long run whatever the shipped model's geometry does (what is tested is the lock).
    first = cli_process("rollout", str(SHIPPED), "--jumps", "60", "--report", str(report), "--quiet", "--threads", "1",
                        "--unphysical", "warn")
    try:
        wait_for(lambda: locked(report / ".fastegnn-md.lock") or first.poll() is not None, 120, "the first run's lock")
        assert first.poll() is None, first.communicate()
        second = subprocess.run(
            [sys.executable, "-m", "fastegnn_md.cli", "rollout", str(SHIPPED), "--start", "30", "--jumps", "2",
             "--report", str(report), "--quiet"], capture_output=True, text=True, timeout=300,
        )
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "another rollout is writing it" in second.stderr
        assert f"process {first.pid}" in second.stderr
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # The finished result is the first run's, whole.
    frames = frames_of(report / "predicted.pdb", report / "predicted.xtc")
    assert frames.shape == (61, 856, 3)  # the backbone, start + 60 jumps
    assert json.loads((report / "report.json").read_text())["jumps"] == 60
    assert not (report / "predicted.partial.xtc").exists()


def test_a_killed_rerun_keeps_the_previous_result_and_its_own_frames_as_partial(tmp_path):
    report = tmp_path / "report"
    assert main(["rollout", str(SHIPPED), "--jumps", "3", "--report", str(report), "--quiet"]) == 0
    before = {name: (report / name).read_bytes() for name in ("predicted.xtc", "predicted-virtual.xtc", "report.json")}
    rerun = cli_process("rollout", str(SHIPPED), "--jumps", "400", "--report", str(report), "--quiet",
                        "--threads", "1", "--unphysical", "warn")
    partial = report / "predicted.partial.xtc"
    try:
        wait_for(lambda: (partial.exists() and partial.stat().st_size > 50_000) or rerun.poll() is not None, 300,
                 "frames of the rerun")
        assert rerun.poll() is None, rerun.communicate()
        os.kill(rerun.pid, signal.SIGKILL)
    finally:
        rerun.communicate(timeout=60)
    assert rerun.returncode == -signal.SIGKILL
    for name, content in before.items():
        assert (report / name).read_bytes() == content, name
    kept = frames_of(report / "predicted.pdb", partial)
    assert len(kept) >= 2  # the killed run's frames, under a name that says so


# ------------------------------------------------------------------ 3: a model that returns NaN


def nan_checkpoint(source: Path, target: Path) -> Path:
    ckpt = load_checkpoint(source)
    model = ckpt.build_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    save_checkpoint(target, ckpt.model_name, ckpt.hparams, model, ckpt.data_spec, ckpt.training)
    return target


def test_ase_dynamics_with_a_nan_model_names_the_model_and_keeps_the_atoms(tmp_path):
    from fastegnn_md import FastEGNNCalculator
    from fastegnn_md.adapters.ase import FastEGNNDynamics, atoms_from_mdanalysis
    from fastegnn_md.adapters.mdanalysis import open_universe, select_atoms

    broken = nan_checkpoint(Path(load_checkpoint("adk-dims").path), tmp_path / "nan.pt")
    atoms = atoms_from_mdanalysis(select_atoms(open_universe(PSF, DCD), "backbone"), frame=20)
    start = atoms.get_positions()
    atoms.calc = FastEGNNCalculator(broken, velocity_input="atoms")
    with pytest.raises(NonFiniteJump, match=f"{broken}: the model predicted non-finite positions"):
        FastEGNNDynamics(atoms, velocity_policy="finite-difference").run(2)
    np.testing.assert_array_equal(atoms.get_positions(), start)


# ------------------------------------------------------------------ 4: NaN in the input trajectory


@pytest.fixture(scope="module")
def dcd_with_nan(tmp_path_factory) -> Path:
    """MDAnalysisTests' AdK DCD with NaN coordinates in frames 10 and 15."""
    universe = MDAnalysis.Universe(PSF, DCD)
    path = tmp_path_factory.mktemp("nan") / "adk_nan.dcd"
    with MDAnalysis.Writer(str(path), n_atoms=len(universe.atoms)) as writer:
        for ts in universe.trajectory:
            if ts.frame in (10, 15):
                universe.atoms.positions = np.full((len(universe.atoms), 3), np.nan, dtype=np.float32)
            writer.write(universe.atoms)
    return path


def test_a_start_frame_with_nan_is_refused_before_anything_is_written(dcd_with_nan, tmp_path, capsys):
    report = tmp_path / "r"
    err = one_line_error(["rollout", dcd_with_nan, "--topology", PSF, "--checkpoint", "adk-dims", "--start", "10",
                          "--report", report, "--quiet"], capsys)
    assert str(dcd_with_nan) in err and "frame 10" in err and "non-finite" in err
    assert not report.exists()


def test_a_reference_frame_with_nan_is_listed_without_metrics(dcd_with_nan, tmp_path, capsys):
    # Start 5 with 5 ps jumps on 1 ps frames: the jumps land on frames 10 and 15 (NaN) and 20.
    report = tmp_path / "r"
    code = main(["rollout", str(dcd_with_nan), "--topology", str(PSF), "--checkpoint", "adk-dims", "--start", "5",
                 "--jumps", "3", "--report", str(report), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((report / "report.json").read_text())
    assert [row["reference_frame"] for row in result["per_jump"]] == [None, None, 20]
    assert "rmsd" not in result["per_jump"][0] and "rmsd" in result["per_jump"][2]
    assert any("reference frame(s) 10, 15 hold non-finite coordinates" in note for note in result["notes"])
    assert "no reference frame" in (report / "report.md").read_text()


# ------------------------------------------------------------------ 5, 6: the training log


@pytest.fixture(scope="module")
def nbody(tmp_path_factory) -> Path:
    from fastegnn_md.data.nbody import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("nbody") / "data", num_train=6, num_valid=3, num_test=3,
                            num_particles=5, progress=False)


TINY = ["--model", "egnn", "--hidden", "4", "--layers", "1", "--batch-size", "3", "--quiet"]


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_log_line_without_its_checkpoint_is_dropped_on_resume(nbody, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "1", *TINY]) == 0
    line = (run / "metrics.jsonl").read_text()
    for name in ("last.pt", "best.pt"):  # killed after the log line, before the checkpoints
        (run / name).unlink()
    (run / "metrics.jsonl").write_text(line)
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "3", *TINY]) == 0
    assert epochs_logged(run) == [1, 2, 3]


@pytest.mark.parametrize("damage", [b'{"epoch": 3, "train_lo', b"\x8f\xff\x00garbage\xfe\n\xc3(\n"])
def test_a_damaged_log_is_repaired_with_one_warning_line(nbody, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "2", *TINY]) == 0
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(damage)
    capsys.readouterr()
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "3", *TINY]) == 0
    err = capsys.readouterr().err
    assert epochs_logged(run) == [1, 2, 3]
    assert "Traceback" not in err and "unreadable line(s) dropped" in err


def test_a_log_of_random_bytes_is_repaired(nbody, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "2", *TINY]) == 0
    (run / "metrics.jsonl").write_bytes(os.urandom(300))
    assert main(["train", "--data", str(nbody), "--out", str(run), "--epochs", "3", *TINY]) == 0
    assert epochs_logged(run) == [3]  # nothing readable was kept; training went on from last.pt
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------ 7, 8: files that are not what they say


def test_a_text_file_named_xtc_is_reported_as_unreadable_without_tracebacks(tmp_path):
    fake = tmp_path / "adk.xtc"
    fake.write_text("this is not an XTC file\n" * 20)
    for extra in ([], ["--topology", str(PSF)]):
        result = subprocess.run([sys.executable, "-m", "fastegnn_md.cli", "rollout", str(fake), *extra, "--quiet"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        assert result.stderr == f"{ERROR}{fake}: cannot read as XTC (XDR read error = magic)\n", result.stderr


def test_a_checkpoint_whose_data_spec_is_not_a_dict_is_not_a_checkpoint(tmp_path, capsys):
    payload = torch.load(load_checkpoint("adk-dims").path, weights_only=True)
    payload["data_spec"] = ["not", "a", "dict"]
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="not a fastegnn-md checkpoint: its 'data_spec' is a list, not a dict"):
        load_checkpoint(path)
    err = one_line_error(["rollout", SHIPPED, "--checkpoint", path, "--quiet"], capsys)
    assert "not a fastegnn-md checkpoint" in err


# ------------------------------------------------------------------ the smaller ones


def test_random_bytes_are_not_called_python_objects(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(b"\x13" + os.urandom(2000))
    with pytest.raises(CheckpointError, match=r"not a fastegnn-md checkpoint \(not a file torch.save wrote\)"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_listed(tmp_path):
    ckpt = load_checkpoint("adk-dims")
    ckpt.state_dict = {**ckpt.state_dict, "surplus.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"Unexpected key\(s\) in state_dict: \"surplus.weight\""):
        ckpt.build_model()


def test_errors_name_the_output_not_a_temporary_file(tmp_path, capsys):
    with pytest.raises(OSError) as info:
        write_atomically(Path("/proc/fastegnn-md-test.txt"), lambda handle: handle.write(b"x"))
    assert info.value.filename == "/proc/fastegnn-md-test.txt"
    blocker = tmp_path / "afile"
    blocker.write_text("")
    err = one_line_error(["rollout", SHIPPED, "--jumps", "1", "--out", blocker / "p.xtc", "--report", tmp_path / "r",
                          "--quiet"], capsys)
    assert f"{blocker / 'p.xtc'}: cannot be written, {blocker} is a file" in err
    err = one_line_error(["rollout", SHIPPED, "--jumps", "1", "--report", blocker, "--quiet"], capsys)
    assert f"{blocker}: exists and is not a directory" in err


def test_temporary_files_of_a_killed_write_are_cleaned(tmp_path):
    target = tmp_path / "last.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".last.pt.{int(dead.stdout)}.k9x2_q.tmp"
    abandoned.write_bytes(b"half a checkpoint")
    ours = tmp_path / f".last.pt.{os.getpid()}.live01.tmp"  # a write in progress (this process): kept
    ours.write_bytes(b"")
    write_atomically(target, lambda handle: handle.write(b"whole"))
    assert not abandoned.exists() and ours.exists() and target.read_bytes() == b"whole"


def test_an_sph_start_with_nan_names_the_file(tmp_path, capsys):
    from fastegnn_md.adapters.sph import SPHTrajectory, read_lagrangebench, write_dataset

    source = ROOT / "trajectories" / "sph"
    (trajectory,) = list(read_lagrangebench(source / "test.h5"))
    positions = trajectory.positions.copy()
    positions[15] = np.nan
    metadata = json.loads((source / "metadata.json").read_text())
    write_dataset(tmp_path / "water", {"test": [SPHTrajectory(positions, trajectory.particle_type, 0,
                                                              convention="deepmind")]}, metadata, formats=("h5",))
    ckpt = tmp_path / "sph.pt"
    spec = {"units": {"length": "dimensionless", "time": "s"}, "dt": 0.075, "frame_stride": 15,
            "velocity_convention": "backward", "num_node_attrs": 9,
            "extra": {"dataset_format": "fastegnn-md sph", "particle_type_convention": "deepmind",
                      "kinematic_attr_columns": [3]}}
    from fastegnn_md.checkpoint import DataSpec
    from fastegnn_md.models import build_model

    model = build_model("linear", node_features=10, edge_features=10, dt=0.075)
    save_checkpoint(ckpt, "linear", {"node_features": 10, "edge_features": 10, "dt": 0.075}, model, DataSpec(**spec))
    err = one_line_error(["rollout", tmp_path / "water", "--checkpoint", ckpt, "--jumps", "2", "--quiet"], capsys)
    assert f"{tmp_path / 'water'} test trajectory 0: frame 15 holds non-finite coordinates" in err


def test_md_commands_keep_library_warnings_off_the_screen(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastegnn_md.cli", "rollout", str(SHIPPED), "--jumps", "1", "--report",
         str(tmp_path / "r"), "--quiet"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no CRYST1 placeholder warning from MDAnalysis
    single = tmp_path / "one.pdb"
    MDAnalysis.Universe(str(ROOT / "trajectories" / "adk-obc" / "adk_obc.pdb")).atoms.write(str(single))
    result = subprocess.run([sys.executable, "-m", "fastegnn_md.cli", "rollout", str(single), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr  # no "no dt information"
    assert "shorter than one jump" in result.stderr


def test_small_cli_messages_say_what_is_expected(capsys):
    err = one_line_error(["rollout", SHIPPED, "--jumps", "abc"], capsys)
    assert "invalid positive integer value: 'abc'" in err
    err = one_line_error(["simulate", ROOT / "README.md", "--out", "x.xtc", "--quiet"], capsys)
    assert "README.md: not a PDB structure (no ATOM or HETATM records)" in err


def test_shipped_checkpoints_store_no_paths_of_the_machine_that_trained_them():
    for path in sorted((ROOT / "fastegnn_md" / "pretrained").glob("*.pt")):
        ckpt = load_checkpoint(path)
        spec = ckpt.data_spec
        if spec.is_molecular:  # MD models name their topology and trajectory files
            assert not os.path.isabs(spec.extra["topology"]), path
            assert all(not os.path.isabs(name) for name in spec.extra["trajectory"]), path
        assert not os.path.isabs(str(ckpt.training.get("dataset", ""))), path
        assert not os.path.isabs(str(ckpt.training.get("config", {}).get("init") or "")), path
        with zipfile.ZipFile(path) as archive:
            assert not any(b"site-packages" in archive.read(name) for name in archive.namelist()), path


def test_examples_run_on_the_main_install_without_mdanalysistests(tmp_path):
    blocker = tmp_path / "blocker" / "MDAnalysisTests"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('MDAnalysisTests is not installed (test extra)')\n")
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocker.parent)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "ase_dynamics.py"), "--jumps", "1", "--out",
                             str(tmp_path / "a.traj")], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(shipped)" in result.stdout and "wrote 2 frames" in result.stdout
