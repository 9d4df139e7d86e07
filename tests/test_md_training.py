"""`fastegnn-md train/evaluate --data TRAJ`: MD trajectories through the MDAnalysis adapter.

Uses the AdK files of MDAnalysisTests (PSF + DCD: 3,341 atoms, 98 frames ~1 ps apart; the
backbone selection has 855 atoms). One tiny training run is shared by the tests (module
fixture); error tests stop before any training.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

pytest.importorskip("MDAnalysis")
pytest.importorskip("MDAnalysisTests")

import MDAnalysis as mda  # noqa: E402
from MDAnalysis.lib.util import NamedStream  # noqa: E402
from MDAnalysisTests.datafiles import DCD, PSF  # noqa: E402

from fastegnn_md.checkpoint import load_checkpoint  # noqa: E402
from fastegnn_md.cli import main  # noqa: E402
from fastegnn_md.data.sources import MD_FORMAT, find_topology  # noqa: E402

ERROR_PREFIX = "fastegnn-md: error: "
ADK_ATOMS = 3341
BACKBONE_ATOMS = 855
TINY = ["--max-train", "4", "--max-valid", "2", "--hidden", "8", "--layers", "1", "--batch-size", "2",
        "--mmd-samples", "8", "--epochs", "1", "--threads", "1", "--quiet"]


def link(source: str, target: Path) -> Path:
    """Symlink (copy where symlinks are not allowed) ``source`` to ``target``."""
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copy(source, target)
    return target


def run_ok(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def run_error(capsys, argv) -> str:
    """main(argv) must exit 2 with exactly one error line; returns it."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}, stderr {err!r}"
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got {err!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def adk(tmp_path_factory) -> Path:
    """adk.dcd with adk.psf beside it (same stem), so the topology is found without --topology."""
    root = tmp_path_factory.mktemp("adk")
    link(PSF, root / "adk.psf")
    return link(DCD, root / "adk.dcd")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(adk, cache_dir, tmp_path_factory) -> Path:
    """Train 1 epoch on adk.dcd (topology found by stem, jump 2); returns the run directory."""
    run = tmp_path_factory.mktemp("run")
    code = main(["train", "--data", str(adk), "--out", str(run), "--jump", "2", "--cache-dir", str(cache_dir), *TINY])
    assert code == 0
    return run


# ----------------------------------------------------------------------------- happy path
def test_train_writes_md_checkpoint(trained, adk, cache_dir):
    assert (trained / "best.pt").is_file() and (trained / "last.pt").is_file()
    assert len(list(cache_dir.glob("md-*.npz"))) == 1
    spec = load_checkpoint(trained / "best.pt").data_spec
    dt = mda.Universe(PSF, DCD).trajectory.dt
    assert spec.units == {"length": "Å", "time": "ps"}
    assert spec.num_nodes == BACKBONE_ATOMS and spec.num_node_attrs == 1
    assert spec.dt == pytest.approx(2 * dt) and spec.frame_stride == 2
    assert (spec.selection, spec.velocity_convention, spec.cutoff) == ("backbone", "backward", 10.0)
    extra = spec.extra
    assert extra["dataset_format"] == MD_FORMAT
    assert (extra["jump"], extra["stride"]) == (2, 1)
    assert extra["topology"] == "adk.psf"  # relative to the data, not this machine's path (issue 13)
    assert (extra["topology_scope"], extra["topology_num_atoms"]) == ("all", ADK_ATOMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        universe = mda.Universe(NamedStream(io.StringIO(extra["topology_pdb"]), "topology.pdb"))
    assert len(universe.atoms) == ADK_ATOMS
    assert len(universe.select_atoms("backbone")) == BACKBONE_ATOMS
    # A bare trajectory with the same atom count reads with the stored topology.
    universe.load_new(DCD)
    assert universe.trajectory.n_frames == 98
    summary = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["epoch"] == 1


def test_md_training_defaults_train_for_rollouts(trained, adk, tmp_path):
    """MD data get the rollout training chosen on villin (local-distance term, pushforward of 3);
    with forward velocities the unroll cannot run and stays off; explicit flags win."""
    config = load_checkpoint(trained / "best.pt").training["config"]
    assert (config["local_distance_weight"], config["local_distance_cutoff"], config["unroll"]) == (10.0, 2.6, 3)
    assert config["radial_distance_weight"] == 1.0 and config["gyration_weight"] == 0.0
    forward = tmp_path / "forward"
    assert main(["train", "--data", str(adk), "--out", str(forward), "--jump", "2", "--velocity", "forward",
                 "--local-distance-weight", "0", "--radial-distance-weight", "2.5", "--virtual-init", "weighted",
                 "--gyration-weight", "4", *TINY]) == 0
    checkpoint = load_checkpoint(forward / "best.pt")
    config = checkpoint.training["config"]
    assert (config["local_distance_weight"], config["unroll"], config["radial_distance_weight"]) == (0.0, 1, 2.5)
    assert config["gyration_weight"] == 4.0
    # The virtual nodes' start is part of the model: stored in its hyperparameters and rebuilt from them.
    assert checkpoint.hparams["virtual_init"] == "weighted" and checkpoint.build_model().virtual_init == "weighted"


def test_evaluate_md_checkpoint(trained, capsys):
    """Evaluate with the original files (explicit --topology), JSON output in Å²."""
    out = run_ok(capsys, ["evaluate", trained / "best.pt", "--data", DCD, "--topology", PSF,
                          "--max-examples", "2", "--repeats", "1", "--batch-size", "2", "--threads", "1",
                          "--quiet", "--json"])
    result = json.loads(out)
    assert result["examples"] == 2 and result["mse"] >= 0 and result["relative_time"] > 0


def test_cached_frames_are_reused_and_too_short_is_one_line(adk, cache_dir, tmp_path, capsys):
    """jump 40 with backward velocities needs 81 frames per block: one line naming the trajectory."""
    line = run_error(capsys, ["train", "--data", adk, "--out", tmp_path / "run", "--jump", "40",
                              "--cache-dir", cache_dir, *TINY])
    assert str(adk) in line and "too few" in line and "jump 40" in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- topology discovery
def test_find_topology_order(tmp_path):
    traj = tmp_path / "sim.xtc"
    traj.touch()
    assert find_topology(traj) is None
    (tmp_path / "sim.pdb").touch()
    (tmp_path / "sim.gro").touch()
    assert find_topology(traj) == tmp_path / "sim.gro"
    (tmp_path / "sim.tpr").touch()
    assert find_topology(traj) == tmp_path / "sim.tpr"
    (tmp_path / "other.psf").touch()
    assert find_topology(traj) == tmp_path / "sim.tpr"
    # A PDB trajectory is not its own sibling topology.
    pdb_only = tmp_path / "solo.pdb"
    pdb_only.touch()
    assert find_topology(pdb_only) is None


def test_no_topology_found_is_one_line(tmp_path, capsys):
    bare = link(DCD, tmp_path / "bare.dcd")
    line = run_error(capsys, ["train", "--data", bare, "--out", tmp_path / "run", *TINY])
    assert str(bare) in line and "--topology" in line and "bare.psf" in line


# ----------------------------------------------------------------------------- errors
def test_selection_matching_nothing_is_one_line(tmp_path, capsys):
    line = run_error(capsys, ["train", "--data", DCD, "--topology", PSF, "--selection", "name ZZZ",
                              "--out", tmp_path / "run", *TINY])
    assert "name ZZZ" in line and "matches no atoms" in line


def test_missing_files_are_one_line(tmp_path, capsys):
    line = run_error(capsys, ["train", "--data", tmp_path / "nope.xtc", "--out", tmp_path / "run", *TINY])
    assert "nope.xtc" in line and "no such" in line
    line = run_error(capsys, ["train", "--data", DCD, "--topology", tmp_path / "nope.psf",
                              "--out", tmp_path / "run", *TINY])
    assert "nope.psf" in line and "no such file" in line


def test_flags_of_the_other_kind_are_one_line(tmp_path, capsys):
    line = run_error(capsys, ["train", "--data", DCD, "--topology", PSF, "--frames", "1", "2",
                              "--out", tmp_path / "run", *TINY])
    assert "--frames" in line
    line = run_error(capsys, ["train", "--data", tmp_path, "--jump", "2", "--out", tmp_path / "run", *TINY])
    assert "--jump" in line and "directory" in line


def test_evaluate_md_checkpoint_on_a_directory_is_one_line(trained, tmp_path, capsys):
    line = run_error(capsys, ["evaluate", trained / "best.pt", "--data", tmp_path, "--threads", "1"])
    assert "MD trajectory" in line
