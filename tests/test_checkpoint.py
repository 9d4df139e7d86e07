"""Checkpoints: exact round trips, clear one-line errors, atomic writes, safe loading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastegnn_md import FramePair, collate
from fastegnn_md.checkpoint import (
    FORMAT_VERSION,
    DataSpec,
    load_checkpoint,
    save_checkpoint,
)
from fastegnn_md.errors import CheckpointError
from fastegnn_md.graph import feature_dims
from fastegnn_md.models import available_models, build_model, model_hparams
from fastegnn_md.predictor import Predictor

NUM_ATTRS = 2


def tiny_model(name: str, seed: int = 0, hidden: int = 8):
    """A small model with weights moved away from their initial values (so heads matter)."""
    node_f, edge_f = feature_dims(NUM_ATTRS)
    hparams = model_hparams(
        name, node_features=node_f, edge_features=edge_f, hidden=hidden, layers=2, virtual_nodes=3, dt=0.5
    )
    torch.manual_seed(seed)
    model = build_model(name, **hparams)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval(), hparams


def rich_spec(**overrides) -> DataSpec:
    """A DataSpec whose every field differs from the default."""
    values = dict(
        units={"length": "Å", "time": "ps"},
        dt=0.25,
        frame_stride=5,
        velocity_convention="backward",
        cutoff=2.5,
        drop_rate=0.5,
        num_node_attrs=NUM_ATTRS,
        num_nodes=None,
        selection="name CA",
        normalisation={"position_scale": 2.0},
        gravity_axis=[0.0, 0.0, -1.0],
        extra={"frame_in": 3, "topology": ["A", "B"], "nested": {"k": 1.5}},
    )
    values.update(overrides)
    return DataSpec(**values)


def frames(rng: np.random.Generator, batch: int = 3, n: int = 6):
    x = rng.normal(size=(batch, n, 3)) * 1.5
    v = rng.normal(size=(batch, n, 3))
    a = rng.choice([-1.0, 1.0], size=(n, NUM_ATTRS))
    return x, v, a


def assert_one_line_naming(exc: pytest.ExceptionInfo, path) -> str:
    message = str(exc.value)
    assert "\n" not in message, f"multi-line message: {message!r}"
    assert str(path) in message, f"message does not name {path}: {message!r}"
    return message


def saved(tmp_path: Path, name: str = "fastegnn", spec: DataSpec | None = None, file: str = "model.pt"):
    model, hparams = tiny_model(name)
    path = save_checkpoint(tmp_path / file, name, hparams, model, spec or rich_spec(), training={"epochs": 3})
    return path, model, hparams


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", available_models())
def test_round_trip_predictions_are_bitwise_equal(tmp_path, name):
    """Predictor.from_checkpoint(path).predict equals the original model run directly, bit for bit."""
    spec = rich_spec()
    path, model, _ = saved(tmp_path, name, spec)
    rng = np.random.default_rng(0)
    x, v, a = frames(rng)
    pairs = [FramePair(xi, vi, xi, a) for xi, vi in zip(x, v)]
    with torch.no_grad():
        direct = model(collate(pairs, cutoff=spec.cutoff, drop_rate=spec.drop_rate, dtype=torch.float32))
        # Batching changes float32 rounding (matmul blocking), so a single frame is compared
        # with the model run on that frame alone.
        direct_one = model(collate(pairs[1:2], cutoff=spec.cutoff, drop_rate=spec.drop_rate, dtype=torch.float32))
    expected = direct.positions.double().numpy().reshape(x.shape)
    assert np.abs(expected - x).max() > 1e-4, "model barely moves: the comparison would be weak"

    predictor = Predictor.from_checkpoint(path)
    assert predictor.model_name == name
    jump = predictor.predict(x, v, a)
    assert np.array_equal(jump.positions, expected)
    single = predictor.predict(x[1], v[1], a)
    assert np.array_equal(single.positions, direct_one.positions.double().numpy())
    if direct.virtual_positions is not None:
        assert np.array_equal(jump.virtual_positions, direct.virtual_positions.double().numpy())
        assert np.array_equal(single.virtual_positions, direct_one.virtual_positions.double().numpy()[0])
    assert jump.dt == spec.dt
    for key, value in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[key], value), key


def test_dataspec_and_training_summary_round_trip(tmp_path):
    """Every DataSpec field, the model name/hparams and the training summary come back unchanged."""
    spec = rich_spec(num_nodes=6)
    model, hparams = tiny_model("egnn")
    training = {"dataset": "x", "best_valid_mse": 0.125, "config": {"lr": 1e-3, "cutoff": None}}
    path = save_checkpoint(tmp_path / "sub" / "dir" / "c.pt", "egnn", hparams, model, spec, training=training)
    ckpt = load_checkpoint(path)
    assert ckpt.data_spec == spec
    assert ckpt.data_spec.as_dict() == spec.as_dict()
    assert DataSpec.from_dict(spec.as_dict()) == spec
    assert ckpt.model_name == "egnn" and ckpt.hparams == hparams
    assert ckpt.training == training
    assert ckpt.format_version == FORMAT_VERSION
    assert ckpt.resume is None
    assert ckpt.path == path


def test_default_node_attrs_come_from_the_spec(tmp_path):
    """Attributes stored in spec.extra['node_attrs'] are used when predict gets none."""
    rng = np.random.default_rng(1)
    x, v, a = frames(rng, batch=1)
    path, _, _ = saved(tmp_path, spec=rich_spec(extra={"node_attrs": a.tolist()}))
    predictor = Predictor.from_checkpoint(path)
    assert np.array_equal(predictor.predict(x, v).positions, predictor.predict(x, v, a).positions)


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert_one_line_naming(exc, path)


def test_directory(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path)
    assert "directory" in assert_one_line_naming(exc, tmp_path)


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"", b"PK\x03\x04 not really a zip\n\nline2\n", "ÅÅ\n\n".encode() * 100],
    ids=["random", "empty", "fake_zip", "text"],
)
def test_garbage_file(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "not a fastegnn-md checkpoint" in assert_one_line_naming(exc, path)


@pytest.mark.parametrize(
    "payload", [{"a": torch.ones(2)}, torch.ones(3), [1, 2], {"kind": "something else"}], ids=["dict", "tensor", "list", "kind"]
)
def test_foreign_torch_file(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "not a fastegnn-md checkpoint" in assert_one_line_naming(exc, path)


def test_newer_format_version(tmp_path):
    path, _, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    message = assert_one_line_naming(exc, path)
    assert "newer" in message and str(FORMAT_VERSION + 1) in message


@pytest.mark.parametrize("drop", ["state_dict", "model", "data_spec"])
def test_incomplete_checkpoint(tmp_path, drop):
    path, _, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    del payload[drop]
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert_one_line_naming(exc, path)


# ----------------------------------------------------------------------------- data that does not fit
def test_predict_with_wrong_attribute_count(tmp_path):
    """predict with 1 attribute per node on a 2-attribute checkpoint names both numbers."""
    path, _, _ = saved(tmp_path)
    rng = np.random.default_rng(2)
    x, v, _ = frames(rng)
    predictor = Predictor.from_checkpoint(path)
    with pytest.raises(CheckpointError) as exc:
        predictor.predict(x, v, np.ones((x.shape[1], 1)))
    message = str(exc.value)
    assert "\n" not in message
    assert "1 node attributes" in message and "trained with 2" in message


def test_predict_with_wrong_node_count(tmp_path):
    path, _, _ = saved(tmp_path, spec=rich_spec(num_nodes=5))
    rng = np.random.default_rng(3)
    x, v, a = frames(rng, n=6)
    with pytest.raises(CheckpointError, match="6 nodes.*5-node"):
        Predictor.from_checkpoint(path).predict(x, v, a)


def test_weights_that_do_not_fit_the_hparams(tmp_path):
    """Weights of a hidden=8 model labelled hidden=16 (or labelled as another model) are refused."""
    path, _, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["model"]["hparams"]["hidden"] = 16
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        Predictor.from_checkpoint(path)
    assert "do not fit" in assert_one_line_naming(exc, path)

    payload["model"] = {"name": "egnn", "hparams": {"node_features": 3, "edge_features": 3, "hidden": 8, "layers": 2}}
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path).build_model()
    assert_one_line_naming(exc, path)


@pytest.mark.parametrize("edit", ["unknown_model", "missing_hparam"])
def test_model_description_that_cannot_be_built(tmp_path, edit):
    """A checkpoint naming a model this version lacks, or missing a constructor argument, is a
    CheckpointError (the CLI only turns FastEGNNError into a one-line error), not a ValueError/TypeError."""
    path, _, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    if edit == "unknown_model":
        payload["model"]["name"] = "fastegnn_v2"
    else:
        del payload["model"]["hparams"]["node_features"]
    torch.save(payload, path)
    try:
        Predictor.from_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"checkpoint with {edit} raised {type(exc).__name__}: {exc} (expected CheckpointError)")
    else:
        pytest.fail(f"checkpoint with {edit} loaded without error")


# ----------------------------------------------------------------------------- atomic writes
def test_save_leaves_no_temporary_file(tmp_path):
    path, _, _ = saved(tmp_path)
    saved(tmp_path)  # overwrite
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, error):
    """torch.save failing midway: the old file at the path is intact and no temp file remains."""
    path, model, hparams = saved(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # a complete write to the temp file ...
        f.write(b"trailing")
        raise error  # ... then a failure before the rename

    monkeypatch.setattr(torch, "save", failing_save)
    other, _ = tiny_model("fastegnn", seed=1)
    with pytest.raises(type(error)):
        save_checkpoint(path, "fastegnn", hparams, other, rich_spec())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    restored = load_checkpoint(path).build_model()
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError("no space left")

    monkeypatch.setattr(torch, "save", failing_save)
    model, hparams = tiny_model("egnn")
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.pt", "egnn", hparams, model, rich_spec())
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- safe loading
class NotAllowed:
    """Arbitrary Python object: unpickling it would run code chosen by the file's author."""

    def __init__(self) -> None:
        self.x = 1


def test_load_refuses_pickled_python_objects(tmp_path):
    model, hparams = tiny_model("egnn")
    path = save_checkpoint(tmp_path / "evil.pt", "egnn", hparams, model, rich_spec(), training={"obj": NotAllowed()})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "not a fastegnn-md checkpoint" in assert_one_line_naming(exc, path)


def test_load_passes_weights_only(tmp_path, monkeypatch):
    path, _, _ = saved(tmp_path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_predictor_in_bf16_mixed_precision(tmp_path):
    """`Predictor(precision="bf16-mixed")` jumps under bfloat16 autocast: not the full-precision
    numbers, but the same displacement to bfloat16 rounding; float64 is refused."""
    spec = rich_spec()
    path, _, _ = saved(tmp_path, "fastegnn", spec)
    x, v, a = frames(np.random.default_rng(0))
    full = Predictor.from_checkpoint(path).predict(x, v, a).positions
    mixed = Predictor.from_checkpoint(path, precision="bf16-mixed").predict(x, v, a).positions
    assert not np.array_equal(full, mixed)
    assert np.linalg.norm(mixed - full) < 0.05 * np.linalg.norm(full - x)
    with pytest.raises(ValueError, match="needs float32 data"):
        Predictor.from_checkpoint(path, dtype=torch.float64, precision="bf16-mixed")
