"""The `fastegnn-md` command line: the generate -> train -> evaluate path, and one-line errors.

Runs `fastegnn_md.cli.main` in-process, plus one subprocess of the installed entry point to
see the real exit status and stderr.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastegnn_md.cli import main
from fastegnn_md.data.nbody import generate_dataset

ERROR_PREFIX = "fastegnn-md: error: "
TINY_MODEL = ["--model", "fastegnn", "--hidden", "8", "--layers", "2", "--batch-size", "3", "--mmd-samples", "4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny N-body dataset of 6 frames (so the default frames 30 -> 40 do not fit)."""
    root = tmp_path_factory.mktemp("nbody")
    kwargs = dict(num_train=4, num_valid=2, num_test=2, num_particles=5, num_frames=6, seed=1, progress=False)
    if "use_compile" in inspect.signature(generate_dataset).parameters:
        kwargs["use_compile"] = False
    generate_dataset(root, **kwargs)
    return root


def run_error(capsys, argv) -> str:
    """Run main(argv), expect exit status 2 with exactly one error line on stderr; return it."""
    argv = [str(a) for a in argv]
    try:
        code = main(argv)
    except Exception as exc:  # noqa: BLE001 - escaping main means a traceback for the user
        pytest.fail(f"fastegnn-md {' '.join(argv)}: {type(exc).__name__}: {exc} escaped main (traceback, exit status 1)")
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}, stderr {err!r}"
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line, got {err!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- happy path
def test_generate_train_evaluate(tmp_path, capsys, monkeypatch):
    """nbody generate, train (2 epochs, tiny model) and evaluate --json work end to end."""
    # The CLI compiles the force kernel when it can (~10 s); eager torch gives the same physics.
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["nbody", "generate", "--out", str(data), "--train", "6", "--valid", "3", "--test", "3",
                 "--particles", "5", "--frames", "6", "--seed", "2", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert str(data) in out
    assert {p.name for p in data.iterdir()} >= {"train.npz", "valid.npz", "test.npz", "metadata.json"}
    assert json.loads((data / "metadata.json").read_text())["format"] == "fastegnn-md nbody"

    assert main(["train", "--data", str(data), "--out", str(run), *TINY_MODEL, "--epochs", "2",
                 "--frames", "1", "5", "--threads", "1", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "trained fastegnn for 2 epochs" in out
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    # Fine-tuning start: --init takes the run's weights; a missing checkpoint is one line.
    tuned = tmp_path / "tuned"
    assert main(["train", "--data", str(data), "--out", str(tuned), *TINY_MODEL, "--epochs", "1",
                 "--frames", "1", "5", "--threads", "1", "--quiet", "--init", str(run / "best.pt")]) == 0
    capsys.readouterr()
    assert torch.load(tuned / "best.pt", weights_only=True)["training"]["config"]["init"] == str(run / "best.pt")
    line = run_error(capsys, ["train", "--data", data, "--out", tmp_path / "t2", *TINY_MODEL, "--frames", "1", "5",
                              "--quiet", "--init", tmp_path / "missing.pt"])
    assert line.startswith("fastegnn-md: error: --init: ") and "missing.pt: no such checkpoint" in line

    # evaluate must use the checkpoint's frames (1 -> 5): the default 30 -> 40 do not exist here.
    assert main(["evaluate", str(run / "best.pt"), "--data", str(data), "--json", "--repeats", "1",
                 "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert {"mse", "seconds", "egnn_seconds", "relative_time"} <= result.keys()
    assert result["examples"] == 3 and result["model"] == "fastegnn"
    assert math.isfinite(result["mse"]) and result["mse"] > 0
    assert result["seconds"] > 0 and result["egnn_seconds"] > 0
    assert result["relative_time"] == pytest.approx(result["seconds"] / result["egnn_seconds"])
    assert set(result["baselines"]) == {"no_motion", "constant_velocity"}
    no_motion = result["baselines"]["no_motion"]["mse"]
    assert result["gain_over_no_motion"]["mse"] == pytest.approx(1 - result["mse"] / no_motion)

    # The same in bf16-mixed precision: its MSE is the model's to bfloat16 rounding, and it says so.
    assert main(["evaluate", str(run / "best.pt"), "--data", str(data), "--json", "--repeats", "1",
                 "--threads", "1", "--precision", "bf16-mixed"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert result["precision"] == "full" and mixed["precision"] == "bf16-mixed"
    assert mixed["mse"] != result["mse"] and mixed["mse"] == pytest.approx(result["mse"], rel=0.05)

    assert main(["evaluate", str(run / "best.pt"), "--data", str(data), "--repeats", "1", "--split", "valid"]) == 0
    out, _ = capsys.readouterr()
    assert "3 examples of the valid split" in out and "aligned MSE" in out
    assert "no motion" in out and "constant velocity" in out and "model against no motion" in out
    assert main(["evaluate", str(run / "best.pt"), "--data", str(data), "--repeats", "1", "--split", "all"]) == 0
    assert "12 examples of every split" in capsys.readouterr().out  # 6 train + 3 valid + 3 test


# ----------------------------------------------------------------------------- errors
def test_missing_dataset_dir(tmp_path, capsys):
    line = run_error(capsys, ["train", "--data", tmp_path / "nope", "--out", tmp_path / "run", "--quiet"])
    assert str(tmp_path / "nope") in line
    assert not (tmp_path / "run").exists()


def test_dataset_dir_without_metadata(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = run_error(capsys, ["train", "--data", tmp_path / "empty", "--out", tmp_path / "run", "--quiet"])
    assert str(tmp_path / "empty") in line and "metadata.json" in line


def test_unknown_model(tmp_path, capsys, dataset):
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", "--model", "egnn2"])
    assert "egnn2" in line and "--model" in line


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc"])
def test_drop_rate_out_of_range(tmp_path, capsys, dataset, value):
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", "--drop-rate", value])
    assert "--drop-rate" in line and value in line


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--data", "somewhere"], "--out"),
        (["evaluate", "x.pt"], "--data"),
        (["nbody", "generate"], "--out"),
        ([], "required"),
        (["nbody"], "required"),
        (["train", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs"),
    ],
    ids=["train_no_out", "evaluate_no_data", "generate_no_out", "no_command", "nbody_no_command", "epochs_0"],
)
def test_missing_or_invalid_arguments(capsys, argv, needle):
    assert needle in run_error(capsys, argv)


def test_evaluate_on_a_file_that_is_not_a_checkpoint(tmp_path, capsys, dataset):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(os.urandom(2048))
    line = run_error(capsys, ["evaluate", bogus, "--data", dataset])
    assert str(bogus) in line and "not a fastegnn-md checkpoint" in line


def test_evaluate_with_unknown_checkpoint_name(capsys, dataset):
    line = run_error(capsys, ["evaluate", "no_such_shipped_model_xyz", "--data", dataset])
    assert "no_such_shipped_model_xyz" in line


@pytest.mark.parametrize("frames", [("5", "50"), ("4", "2"), ("-1", "3"), ("0", "6")])
def test_frames_out_of_range(tmp_path, capsys, dataset, frames):
    """The dataset has 6 frames (0..5): frame pairs outside it or in the wrong order are refused."""
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", "--frames", *frames, "--quiet"])
    assert str(dataset) in line and "frames" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_default_frames_do_not_fit_a_short_dataset(tmp_path, capsys, dataset):
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", "--quiet"])
    assert "30" in line and "40" in line


QUICK_TRAIN = ["--frames", "1", "5", "--epochs", "1", "--hidden", "4", "--layers", "1", "--threads", "1", "--quiet"]


@pytest.mark.parametrize(
    "option,value",
    [("--cutoff", "0"), ("--cutoff", "-1"), ("--lr", "-1"), ("--lr", "nan"), ("--sigma", "0")],
)
def test_invalid_training_numbers_are_usage_errors(tmp_path, capsys, dataset, option, value):
    """Non-positive cutoff/sigma and invalid learning rates are refused up front as one-line errors
    (not a ValueError traceback mid-training, nor a run whose loss is NaN)."""
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", *QUICK_TRAIN, option, value])
    assert option.lstrip("-") in line


@pytest.mark.parametrize("command", ["train", "generate"])
def test_output_path_that_is_a_file(tmp_path, capsys, dataset, command):
    """--out naming an existing regular file is a one-line error, not a FileExistsError traceback."""
    target = tmp_path / "a_file"
    target.write_text("not a directory\n")
    if command == "train":
        argv = ["train", "--data", dataset, "--out", target, *QUICK_TRAIN]
    else:
        argv = ["nbody", "generate", "--out", target, "--train", "1", "--valid", "1", "--test", "1",
                "--particles", "2", "--frames", "2", "--quiet"]
    assert str(target) in run_error(capsys, argv)
    assert target.read_text() == "not a directory\n"


# ----------------------------------------------------------------------------- real process
def test_entry_point_exit_status_and_single_stderr_line(tmp_path):
    """The installed `fastegnn-md` script exits 2 with one stderr line and no traceback."""
    script = Path(sys.executable).parent / "fastegnn-md"
    assert script.is_file(), f"entry point not installed next to {sys.executable}"
    missing = tmp_path / "no_such_dataset"
    proc = subprocess.run(
        [str(script), "train", "--data", str(missing), "--out", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX) and str(missing) in lines[0]


@pytest.mark.parametrize("device", ["blah", "cuda:0" if not __import__("torch").cuda.is_available() else "nodevice"])
def test_bad_device_is_a_usage_error(tmp_path, capsys, dataset, device):
    line = run_error(capsys, ["train", "--data", dataset, "--out", tmp_path / "run", "--device", device])
    assert "--device" in line and device in line
    assert not (tmp_path / "run").exists()
