"""Training for rollouts: random-walk input noise and pushforward unrolls (`rollout_training`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastegnn_md.adapters.mdanalysis.pairs import frame_pairs
from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.errors import FastEGNNError
from fastegnn_md.graph import collate, feature_dims
from fastegnn_md.models import build_model
from fastegnn_md.rollout_training import RolloutTraining, noisy_history
from fastegnn_md.training import TrainConfig, Trainer

FRAME_DT = 2.0  # ps between frames


def chain(frames: int = 12, atoms: int = 5, seed: int = 0, jump: int = 1, convention: str = "backward"):
    """Pairs of one synthetic trajectory (a random walk of every atom), made by the MD adapter."""
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.normal(scale=0.3, size=(frames, atoms, 3)), axis=0) + rng.normal(size=(atoms, 3)) * 3
    velocities = rng.normal(size=positions.shape) if convention == "physical" else None
    return positions, frame_pairs(positions, velocities, np.ones((atoms, 1)), None, FRAME_DT, jump, convention,
                                  source="walk")


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    node, edge = feature_dims(1)
    return build_model("egnn", node_features=node, edge_features=edge, hidden=8, layers=1).double()


def test_noise_is_a_random_walk_on_the_history_and_the_target_moves_with_the_input():
    rng = np.random.default_rng(1)
    atoms = 20000
    positions = rng.normal(size=(atoms, 3))
    moving = np.ones(atoms, dtype=bool)
    moving[:100] = False
    _, pairs = chain()
    pair = pairs[3]
    big = type(pair)(positions, np.zeros((atoms, 3)), positions + 1.0, np.ones((atoms, 1)), moving=moving,
                     metadata=dict(pair.metadata))
    sigma = 0.2
    noisy = noisy_history(big, sigma, np.random.default_rng(2))
    offset = noisy.positions - big.positions
    velocity_offset = noisy.velocities - big.velocities
    np.testing.assert_allclose(noisy.target_positions - big.target_positions, offset, rtol=0, atol=1e-12)  # consistent
    assert np.all(offset[~moving] == 0) and np.all(velocity_offset[~moving] == 0)  # walls untouched
    assert np.std(offset[moving]) == pytest.approx(sigma, rel=0.02)  # x_t moves by sigma in all
    # the backward velocity moves by the last step of the walk: sigma / sqrt(2) over the jump
    assert np.std(velocity_offset[moving] * pair.metadata["dt"]) == pytest.approx(sigma / np.sqrt(2), rel=0.02)
    # x_(t-dt) = x_t - v dt moved by the first step alone, independent of the second
    before = offset - velocity_offset * pair.metadata["dt"]
    assert np.std(before[moving]) == pytest.approx(sigma / np.sqrt(2), rel=0.02)
    assert abs(np.corrcoef(before[moving].ravel(), (offset - before)[moving].ravel())[0, 1]) < 0.02


@pytest.mark.parametrize("correction", [0.5, 1.0])
def test_noise_correction_leaves_that_fraction_of_the_offset_out_of_the_target(correction):
    _, pairs = chain()
    pair = pairs[3]
    gns = noisy_history(pair, 0.2, np.random.default_rng(5))
    corrected = noisy_history(pair, 0.2, np.random.default_rng(5), correction)
    offset = gns.positions - pair.positions
    # the same draw moves the inputs alike; only the target keeps (1 - gamma) of the offset
    np.testing.assert_array_equal(corrected.positions, gns.positions)
    np.testing.assert_array_equal(corrected.velocities, gns.velocities)
    np.testing.assert_allclose(corrected.target_positions - pair.target_positions, (1 - correction) * offset,
                               rtol=0, atol=1e-12)
    assert np.abs(offset).max() > 0.05  # the offset is there to be taken back


def test_noise_correction_is_checked():
    _, pairs = chain()
    with pytest.raises(ValueError, match="noise_correction must be in"):
        RolloutTraining(pairs, 0.1, 1, seed=0, velocity_convention="backward", noise_correction=1.5)
    with pytest.raises(ValueError, match="noise_correction must be in"):
        TrainConfig(input_noise=0.1, noise_correction=-0.1)
    with pytest.raises(ValueError, match="needs input_noise"):
        TrainConfig(noise_correction=0.5)


def test_pushforward_feeds_the_model_its_own_outputs_and_scores_the_later_reference():
    positions, pairs = chain()
    model = tiny_model()
    shaping = RolloutTraining(pairs, input_noise=0.0, unroll=4, seed=0, velocity_convention="backward")
    chunk = [pairs[2], pairs[8]]  # pairs[8] (frames 9 -> 10 of 0..11) has one reference pair after it
    examples = shaping._pushed_forward(chunk, list(chunk), 3, model, None, 0.0, torch.float64, "cpu")
    # by hand: the rollout of pairs[2] for 3 jumps, velocity from the model's last two frames
    x_prev, x, v = None, pairs[2].positions, pairs[2].velocities
    for _ in range(3):
        batch = collate([type(pairs[2])(x, v, x, pairs[2].node_attrs, metadata={"dt": FRAME_DT})], dtype=torch.float64)
        with torch.no_grad():
            x_prev, x = x, model(batch).positions.numpy()
        v = (x - x_prev) / FRAME_DT
    np.testing.assert_allclose(examples[0].positions, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(examples[0].velocities, v, rtol=0, atol=1e-12)
    t = pairs[2].metadata["frames"][0]
    np.testing.assert_array_equal(examples[0].target_positions, positions[t + 4])  # 3 free jumps, then one learned
    assert examples[0].metadata["frames"] == (t + 3, t + 4)
    last = pairs[8].metadata["frames"][0]
    assert examples[1].metadata["frames"] == (last + 1, last + 2) == (10, 11)  # ran as far as the reference goes
    assert model.training  # the model is handed back in the mode it came in
    # with input noise, the unrolled target keeps the noise offset of the input
    noisy = RolloutTraining(pairs, input_noise=0.1, unroll=2, seed=0, velocity_convention="backward")
    shifted = noisy_history(pairs[2], 0.1, np.random.default_rng(0))
    pushed = noisy._pushed_forward([pairs[2]], [shifted], 1, model, None, 0.0, torch.float64, "cpu")[0]
    np.testing.assert_allclose(pushed.target_positions - positions[t + 2], shifted.positions - pairs[2].positions,
                               atol=1e-12)


def test_draws_are_seeded_and_resume_where_they_were():
    _, pairs = chain(frames=30)
    model = tiny_model()

    def draws(shaping, n=5):
        return [np.concatenate([e.positions for e in shaping.examples(pairs[:4], model, None, 0.0, torch.float64, "cpu")])
                for _ in range(n)]

    a = RolloutTraining(pairs, 0.1, 3, seed=7, velocity_convention="backward")
    b = RolloutTraining(pairs, 0.1, 3, seed=7, velocity_convention="backward")
    first = draws(a, 2)
    state = a.state()
    rest = draws(a, 3)
    for x, y in zip(first + rest, draws(b)):
        np.testing.assert_array_equal(x, y)
    c = RolloutTraining(pairs, 0.1, 3, seed=8, velocity_convention="backward")
    c.set_state(state)
    for x, y in zip(rest, draws(c, 3)):
        np.testing.assert_array_equal(x, y)


def test_physical_velocities_refuse_noise_and_unrolls(tmp_path):
    _, pairs = chain(convention="physical")
    spec = {"dt": FRAME_DT, "velocity_convention": "physical", "units": {"length": "Å", "time": "ps"}}
    for options in ({"input_noise": 0.1}, {"unroll": 2}):
        with pytest.raises(FastEGNNError, match="velocities from positions"):
            Trainer(TrainConfig(hidden=8, layers=1, epochs=1, **options), pairs[:4], pairs[4:6], tmp_path, spec,
                    progress=False)
    Trainer(TrainConfig(hidden=8, layers=1, epochs=1), pairs[:4], pairs[4:6], tmp_path, spec, progress=False)


def test_training_with_noise_and_unrolls_runs_records_and_resumes(tmp_path):
    _, pairs = chain(frames=40)
    spec = {"dt": FRAME_DT, "velocity_convention": "backward", "units": {"length": "Å", "time": "ps"}}
    config = TrainConfig(hidden=8, layers=1, epochs=2, batch_size=4, input_noise=0.05, unroll=3, mmd_weight=0.1)
    summary = Trainer(config, pairs[:24], pairs[24:30], tmp_path, spec, progress=False).fit(resume=False)
    assert summary["epochs"] == 2
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved.training["config"]["input_noise"] == 0.05 and saved.training["config"]["unroll"] == 3
    assert "rollout_rng" in saved.resume
    longer = TrainConfig(**{**config.__dict__, "epochs": 3})
    assert Trainer(longer, pairs[:24], pairs[24:30], tmp_path, spec, progress=False).fit()["epochs"] == 3
    with pytest.raises(FastEGNNError, match="unroll"):
        Trainer(TrainConfig(**{**config.__dict__, "unroll": 2}), pairs[:24], pairs[24:30], tmp_path, spec,
                progress=False).fit()
