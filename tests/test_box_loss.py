"""The box term (`losses.box_loss`): how far predicted particles lie outside the data's box."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastegnn_md.adapters.sph import SPHTrajectory, write_dataset
from fastegnn_md.data.sources import SPHOptions, open_dataset
from fastegnn_md.errors import FastEGNNError
from fastegnn_md.losses import box_loss
from fastegnn_md.training import METRICS, TrainConfig, Trainer

UNIT_BOX = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)


def test_zero_inside_and_the_squared_overshoot_outside():
    inside = torch.tensor([[0.0, 0.5, 1.0], [0.3, 0.999, 0.01]], dtype=torch.float64)
    assert float(box_loss(inside, UNIT_BOX)) == 0.0
    x = torch.tensor([[-0.1, 0.5, 0.5], [0.5, 1.2, -0.3], [0.5, 0.5, 0.5]], dtype=torch.float64)
    expected = (0.1**2 + (0.2**2 + 0.3**2) + 0.0) / 3
    assert abs(float(box_loss(x, UNIT_BOX)) - expected) < 1e-15
    # Other boxes: each axis its own bounds.
    box = torch.tensor([[-2.0, 2.0], [0.0, 10.0], [5.0, 6.0]], dtype=torch.float64)
    y = torch.tensor([[-3.0, 11.0, 5.5]], dtype=torch.float64)
    assert abs(float(box_loss(y, box)) - (1.0 + 1.0)) < 1e-15


def test_gradient_points_back_into_the_box_and_walls_do_not_count():
    x = torch.tensor([[-0.2, 0.5, 0.5], [0.5, 1.1, 0.5], [0.5, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    box_loss(x, UNIT_BOX).backward()
    grad = x.grad.numpy()
    assert grad[0, 0] < 0 and grad[1, 1] > 0  # a descent step moves them inward
    assert np.all(grad[2] == 0) and grad[0, 1:].tolist() == [0.0, 0.0]
    wall = torch.tensor([False, True, True])
    assert float(box_loss(x.detach(), UNIT_BOX, ~wall)) > 0
    assert float(box_loss(x.detach(), UNIT_BOX, wall)) > 0  # the particle at y = 1.1 is outside
    assert float(box_loss(x.detach(), UNIT_BOX, torch.tensor([False, False, True]))) == 0.0
    empty = box_loss(x, UNIT_BOX, torch.zeros(3, dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_permutation_invariant():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.uniform(-0.5, 1.5, size=(20, 3)))
    perm = torch.as_tensor(rng.permutation(20))
    assert abs(float(box_loss(x, UNIT_BOX)) - float(box_loss(x[perm], UNIT_BOX))) < 1e-15


def falling_water(root):
    """Water particles (type 5) falling past the floor of ``bounds`` beside static walls (type 3)."""
    rng = np.random.default_rng(1)
    t = np.arange(20)[:, None, None] * 0.1

    def trajectory(key: int) -> SPHTrajectory:
        water = rng.uniform(0.1, 0.4, size=(10, 3)) + np.array([0.0, -1.0, 0.0]) * t
        wall = np.broadcast_to(rng.uniform(0.0, 1.0, size=(6, 3)) * [1, 0, 1], (20, 6, 3))
        return SPHTrajectory(np.concatenate([water, wall], axis=1), np.array([5] * 10 + [3] * 6), key,
                             convention="deepmind")

    splits = {"train": [trajectory(0)], "valid": [trajectory(1)], "test": [trajectory(2)]}
    metadata = {"bounds": [[0.0, 1.0]] * 3, "dt": 0.1, "default_connectivity_radius": 0.3}
    write_dataset(root, splits, metadata, formats=("tfrecord",))
    return root


def test_training_records_the_term_and_refuses_data_without_a_box(tmp_path):
    data = falling_water(tmp_path / "box")
    dataset = open_dataset(data, sph=SPHOptions(jump=2))
    spec = dataset.spec_fields
    config = TrainConfig(model="fastegnn", hidden=8, layers=1, virtual_nodes=2, cutoff=spec["cutoff"], epochs=1,
                         batch_size=8, mmd_weight=0.01, gravity_axis=spec["gravity_axis"], box_weight=10.0)
    Trainer(config, dataset.load("train"), dataset.load("valid"), tmp_path / "run", spec, progress=False).fit()
    record = json.loads((tmp_path / "run" / METRICS).read_text().splitlines()[0])
    assert record["train_box"] > 0  # the targets themselves fall through the floor here
    assert record["train_loss"] > record["train_mse"]

    # Data of a kind without a box (molecules, N-body): one line that says what is missing.
    unbounded = dict(spec, extra={k: v for k, v in spec["extra"].items() if k != "bounds"})
    with pytest.raises(FastEGNNError, match="box_weight needs data with a box"):
        Trainer(config, dataset.load("train"), dataset.load("valid"), tmp_path / "run2", unbounded, progress=False)
    with pytest.raises(ValueError, match="box_weight"):
        TrainConfig(box_weight=-1.0)


def test_box_margin_moves_the_faces_inwards(tmp_path):
    """--box-margin M: the trainer's box is the data's shrunk by M on every face, so water a
    jump puts inside the box but nearer a wall than M is penalised; a margin that leaves no room,
    or one without the box term, is refused."""
    data = falling_water(tmp_path / "box")
    dataset = open_dataset(data, sph=SPHOptions(jump=2))
    spec = dataset.spec_fields
    settings = dict(model="fastegnn", hidden=8, layers=1, virtual_nodes=2, cutoff=spec["cutoff"], epochs=1,
                    batch_size=8, mmd_weight=0.01, gravity_axis=spec["gravity_axis"], box_weight=10.0)
    train, valid = dataset.load("train"), dataset.load("valid")
    trainer = Trainer(TrainConfig(**settings, box_margin=0.1), train, valid, tmp_path / "m", spec, progress=False)
    expected = torch.tensor([[0.1, 0.9]] * 3, dtype=trainer.box_bounds.dtype)
    assert torch.allclose(trainer.box_bounds, expected, atol=1e-7, rtol=0)
    near_floor = torch.tensor([[0.5, 0.05, 0.5]], dtype=trainer.box_bounds.dtype)
    assert float(box_loss(near_floor, UNIT_BOX)) == 0.0
    assert abs(float(box_loss(near_floor, trainer.box_bounds)) - 0.05**2) < 1e-7
    with pytest.raises(FastEGNNError, match="box_margin 0.5 leaves no room"):
        Trainer(TrainConfig(**settings, box_margin=0.5), train, valid, tmp_path / "n", spec, progress=False)
    with pytest.raises(ValueError, match="needs box_weight > 0"):
        TrainConfig(box_margin=0.02)
    with pytest.raises(ValueError, match="box_margin"):
        TrainConfig(box_weight=1.0, box_margin=-0.01)
