"""Trainer: run directory contents, exact resume, early stopping, seeding, the MMD switch.

Uses a tiny charged N-body dataset generated once per session (12/6/6 systems, 8 particles,
41 frames) and FastEGNN with hidden=8, layers=2.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.data.nbody import generate_dataset, load_nbody
from fastegnn_md.data.sources import open_dataset
from fastegnn_md.errors import FastEGNNError
from fastegnn_md.training import BEST, LAST, METRICS, TrainConfig, Trainer, evaluate_mse

LOG_KEYS = {"epoch", "train_loss", "train_mse", "train_mmd", "valid_mse", "best_valid_mse"}


@pytest.fixture(scope="session")
def nbody(tmp_path_factory):
    """(train pairs, valid pairs, spec fields) of a tiny generated N-body dataset."""
    root = tmp_path_factory.mktemp("nbody")
    kwargs = dict(num_train=12, num_valid=6, num_test=6, num_particles=8, num_frames=41, seed=0, progress=False)
    if "use_compile" in inspect.signature(generate_dataset).parameters:
        kwargs["use_compile"] = False  # compiling the force kernel costs ~10 s; eager is exact too
    generate_dataset(root, **kwargs)
    dataset = open_dataset(root, frame_in=30, frame_out=40)
    train = load_nbody(root, "train", 30, 40)
    valid = load_nbody(root, "valid", 30, 40)
    assert len(train) == 12 and len(valid) == 6
    return train, valid, dataset.spec_fields


def config(**overrides) -> TrainConfig:
    values = dict(model="fastegnn", hidden=8, layers=2, virtual_nodes=3, batch_size=4, epochs=3, lr=1e-3,
                  mmd_samples=4, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def trainer(nbody, out: Path, **overrides) -> Trainer:
    train, valid, spec_fields = nbody
    return Trainer(config(**overrides), train, valid, out, spec_fields, dataset_name="tiny", progress=False)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line.strip()]


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# ----------------------------------------------------------------------------- run directory
def test_short_run_writes_checkpoints_and_log(nbody, tmp_path):
    """3 epochs: best.pt, last.pt, one log line per epoch; best.pt holds the best validation model."""
    t = trainer(nbody, tmp_path, epochs=3)
    summary = t.fit()
    assert (tmp_path / BEST).is_file() and (tmp_path / LAST).is_file()
    log = read_log(tmp_path)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for record in log:
        assert LOG_KEYS <= record.keys()
        assert record["train_mmd"] != 0.0  # MMD is on by default for FastEGNN
        assert record["train_loss"] == pytest.approx(record["train_mse"] + 0.03 * record["train_mmd"], rel=1e-6)
    best_mse = min(r["valid_mse"] for r in log)
    assert [r["best_valid_mse"] for r in log] == [min(r["valid_mse"] for r in log[: i + 1]) for i in range(3)]

    best = load_checkpoint(tmp_path / BEST)
    assert best.training["best_valid_mse"] == best_mse
    assert best.training["best_epoch"] == min(log, key=lambda r: r["valid_mse"])["epoch"]
    assert best.resume is None
    # The stored weights really are the ones that scored best_mse on the validation set.
    _, valid, _ = nbody
    spec = best.data_spec
    assert evaluate_mse(best.build_model(), valid, spec.cutoff, spec.drop_rate, 4) == pytest.approx(best_mse, rel=1e-6)

    last = load_checkpoint(tmp_path / LAST)
    assert last.training["epochs"] == 3 and last.resume is not None and last.resume["epoch"] == 3
    assert_same_weights(last.state_dict, {k: v for k, v in t.model.state_dict().items()})
    assert summary["epochs"] == 3 and summary["best_valid_mse"] == best_mse
    assert last.data_spec.extra["frame_in"] == 30 and last.data_spec.num_node_attrs == 1


# ----------------------------------------------------------------------------- resume
def interrupt_mid_epoch(monkeypatch):
    """Interrupt epoch index 2 after one optimizer step (weights in memory already changed)."""
    original = Trainer._train_epoch

    def wrapper(self, epoch):
        if epoch == 2:
            real_step = self.optimizer.step

            def step_then_interrupt(*args, **kwargs):
                real_step(*args, **kwargs)
                raise KeyboardInterrupt

            monkeypatch.setattr(self.optimizer, "step", step_then_interrupt)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", wrapper)


def interrupt_before_last_save(monkeypatch):
    """Interrupt after epoch 3 was logged (and best.pt maybe written) but before last.pt was."""
    original = Trainer._save

    def wrapper(self, name, with_resume):
        if name == LAST and self.state.epoch == 3:
            raise KeyboardInterrupt
        return original(self, name, with_resume)

    monkeypatch.setattr(Trainer, "_save", wrapper)


@pytest.mark.parametrize("ema", [0.0, 0.9], ids=["raw", "ema"])
@pytest.mark.parametrize("interrupt", [interrupt_mid_epoch, interrupt_before_last_save], ids=["mid_epoch", "before_save"])
def test_resume_matches_uninterrupted_run(nbody, tmp_path, monkeypatch, interrupt, ema):
    """An interrupted run resumed by a fresh Trainer ends bitwise equal to an uninterrupted one
    (with a weight average too: the optimizer's weights and the average both resume)."""
    run_a = trainer(nbody, tmp_path / "a", epochs=4, ema_decay=ema)
    run_a.fit()

    interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer(nbody, tmp_path / "b", epochs=4, ema_decay=ema).fit()
    monkeypatch.undo()
    assert len(read_log(tmp_path / "b")) < 4

    run_b = trainer(nbody, tmp_path / "b", epochs=4, ema_decay=ema)
    summary = run_b.fit(resume=True)
    assert summary["epochs"] == 4
    assert_same_weights(run_a.model.state_dict(), run_b.model.state_dict())
    for name in (BEST, LAST):
        assert_same_weights(load_checkpoint(tmp_path / "a" / name).state_dict, load_checkpoint(tmp_path / "b" / name).state_dict)
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["epoch"] for r in log_b] == [1, 2, 3, 4]
    assert without_seconds(log_b) == without_seconds(log_a)
    assert load_checkpoint(tmp_path / "b" / BEST).training["best_valid_mse"] == summary["best_valid_mse"]


def test_a_sampled_run_resumes_its_noise_and_keeps_the_epoch_of_the_lowest_validation_score(nbody, tmp_path,
                                                                                          monkeypatch):
    """A sampled jump trained by the energy score: its noise comes from torch's global generator,
    which last.pt carries, so an interrupted run resumes bitwise as well; validation draws the same
    seeded noise every epoch without touching training's, and best.pt is the epoch of the lowest
    validation energy score, its best_valid_mse that epoch's MSE."""
    sampled = dict(epochs=4, noise_channels=2, position_loss="energy-score", lr=1e-2)
    run_a = trainer(nbody, tmp_path / "a", **sampled)
    summary_a = run_a.fit()
    interrupt_mid_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer(nbody, tmp_path / "b", **sampled).fit()
    monkeypatch.undo()
    trainer(nbody, tmp_path / "b", **sampled).fit(resume=True)
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert without_seconds(log_b) == without_seconds(log_a)
    assert_same_weights(load_checkpoint(tmp_path / "a" / LAST).state_dict,
                        load_checkpoint(tmp_path / "b" / LAST).state_dict)
    scores = [r["valid_energy_score"] for r in log_a]
    assert len(set(scores)) == len(scores)  # the weights moved, so the scores differ
    best = min(range(len(scores)), key=scores.__getitem__)
    assert summary_a["best_epoch"] == best + 1 and summary_a["best_valid_energy_score"] == scores[best]
    assert summary_a["best_valid_mse"] == log_a[best]["valid_mse"]
    # The validation's noise is seeded: scoring best.pt again gives its logged figures.
    from fastegnn_md.training import batches, evaluate_energy_score, seeded_noise
    run_a.model.load_state_dict(load_checkpoint(tmp_path / "a" / BEST).state_dict)
    train, valid, _ = nbody
    for _ in range(2):
        with seeded_noise(run_a.model, 0, "cpu"):
            again = evaluate_energy_score(run_a.model, batches(valid, 4, None, 0.0, torch.float32))
        with seeded_noise(run_a.model, 0, "cpu"):
            mse = evaluate_mse(run_a.model, valid, None, 0.0, 4)
        assert again == pytest.approx(scores[best], rel=1e-12) and mse == pytest.approx(log_a[best]["valid_mse"], rel=1e-12)


def test_resume_refuses_different_settings(nbody, tmp_path):
    trainer(nbody, tmp_path, epochs=1).fit()
    with pytest.raises(FastEGNNError, match="different settings.*lr"):
        trainer(nbody, tmp_path, epochs=1, lr=0.5).fit(resume=True)


def test_finished_run_is_not_trained_again_and_no_resume_starts_over(nbody, tmp_path):
    """Resuming a finished run changes nothing; resume=False restarts the log from epoch 1."""
    first = trainer(nbody, tmp_path, epochs=2)
    first.fit()
    again = trainer(nbody, tmp_path, epochs=2)
    again.fit(resume=True)
    assert len(read_log(tmp_path)) == 2
    assert_same_weights(first.model.state_dict(), again.model.state_dict())
    fresh = trainer(nbody, tmp_path, epochs=1)
    fresh.fit(resume=False)
    assert [r["epoch"] for r in read_log(tmp_path)] == [1]


# ----------------------------------------------------------------------------- early stopping
@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_with_zero_learning_rate(nbody, tmp_path, patience):
    """lr=0 never improves after epoch 1, so training stops after 1 + patience epochs."""
    t = trainer(nbody, tmp_path, epochs=10, lr=0.0, patience=patience)
    summary = t.fit()
    log = read_log(tmp_path)
    assert len(log) == 1 + patience < 10
    assert summary["epochs"] == 1 + patience and summary["best_epoch"] == 1
    assert len({r["valid_mse"] for r in log}) == 1


# ----------------------------------------------------------------------------- seeding
def test_same_seed_same_weights_different_seed_different(nbody, tmp_path):
    a = trainer(nbody, tmp_path / "a", epochs=2, seed=3)
    a.fit()
    b = trainer(nbody, tmp_path / "b", epochs=2, seed=3)
    b.fit()
    c = trainer(nbody, tmp_path / "c", epochs=2, seed=4)
    c.fit()
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert without_seconds(read_log(tmp_path / "a")) == without_seconds(read_log(tmp_path / "b"))
    differs = [k for k, v in a.model.state_dict().items() if not torch.equal(v, c.model.state_dict()[k])]
    assert differs, "seed 3 and seed 4 trained identical weights"


# ----------------------------------------------------------------------------- MMD switch
@pytest.mark.parametrize("model", ["fastegnn", "egnn"])
def test_mmd_weight_zero_logs_zero_mmd(nbody, tmp_path, model):
    """mmd_weight=0 (paper's "w/o MMD"): train_mmd is 0 and the loss is the MSE alone."""
    trainer(nbody, tmp_path, epochs=2, mmd_weight=0.0, model=model).fit()
    for record in read_log(tmp_path):
        assert record["train_mmd"] == 0.0
        assert record["train_loss"] == record["train_mse"]


def test_resume_can_extend_a_finished_run(nbody, tmp_path):
    """Asking for more epochs continues the same run: 2 epochs then 3 equals 3 at once."""
    trainer(nbody, tmp_path / "ab", epochs=2).fit()
    extended = trainer(nbody, tmp_path / "ab", epochs=3)
    extended.fit(resume=True)
    straight = trainer(nbody, tmp_path / "c", epochs=3)
    straight.fit()
    assert len(read_log(tmp_path / "ab")) == 3
    assert_same_weights(extended.model.state_dict(), straight.model.state_dict())


def test_grad_clip_caps_every_step(nbody, tmp_path, monkeypatch):
    """With grad_clip the optimizer never sees a gradient norm above the cap; without, it does."""
    seen: list[float] = []

    def record_norms(run: Trainer) -> None:
        step = run.optimizer.step

        def recording_step(*args, **kwargs):
            grads = [p.grad for p in run.model.parameters() if p.grad is not None]
            seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
            return step(*args, **kwargs)

        monkeypatch.setattr(run.optimizer, "step", recording_step)

    free = trainer(nbody, tmp_path / "free", epochs=1)
    record_norms(free)
    free.fit()
    cap = 0.5 * min(seen)
    seen.clear()
    clipped = trainer(nbody, tmp_path / "clipped", epochs=1, grad_clip=cap)
    record_norms(clipped)
    clipped.fit()
    assert seen and max(seen) <= cap * (1 + 1e-5)


def test_grad_clip_must_be_positive():
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)


# ----------------------------------------------------------------------------- fine-tuning start
def test_init_starts_from_the_checkpoint_weights(nbody, tmp_path):
    """init loads the checkpoint's weights before the first step: with lr=0 the run's weights are
    the checkpoint's, not the seeded random start's; the config records where they came from."""
    trainer(nbody, tmp_path / "base", epochs=2, seed=5).fit()
    base = load_checkpoint(tmp_path / "base" / BEST)
    tuned = trainer(nbody, tmp_path / "tuned", epochs=1, lr=0.0, init=str(tmp_path / "base" / BEST))
    tuned.fit()
    assert_same_weights(tuned.model.state_dict(), base.state_dict)
    fresh = trainer(nbody, tmp_path / "fresh", epochs=1, lr=0.0)
    fresh.fit()
    assert any(not torch.equal(v, base.state_dict[k]) for k, v in fresh.model.state_dict().items())
    saved = load_checkpoint(tmp_path / "tuned" / BEST)
    assert saved.training["config"]["init"] == str(tmp_path / "base" / BEST)


def test_init_continues_training_from_a_lower_loss(nbody, tmp_path):
    """One epoch from a trained start has a lower validation MSE than one epoch from scratch."""
    trainer(nbody, tmp_path / "base", epochs=4).fit()
    tuned = trainer(nbody, tmp_path / "tuned", epochs=1, init=str(tmp_path / "base" / BEST)).fit()
    scratch = trainer(nbody, tmp_path / "scratch", epochs=1).fit()
    assert tuned["best_valid_mse"] < scratch["best_valid_mse"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden=16), r"model settings differ \(hidden 8 there, 16 here\)"),
        (dict(model="egnn"), "is a fastegnn model, this run trains egnn"),
    ],
)
def test_init_refuses_another_model(nbody, tmp_path, overrides, message):
    trainer(nbody, tmp_path / "base", epochs=1).fit()
    with pytest.raises(FastEGNNError, match=message):
        trainer(nbody, tmp_path / "tuned", init=str(tmp_path / "base" / BEST), **overrides)


def test_init_refuses_data_of_another_kind_and_a_missing_file(nbody, tmp_path):
    train, valid, spec_fields = nbody
    trainer(nbody, tmp_path / "base", epochs=1).fit()
    other = dict(spec_fields, dt=2 * spec_fields.get("dt", 1.0))
    with pytest.raises(FastEGNNError, match="was trained on data with dt"):
        Trainer(config(init=str(tmp_path / "base" / BEST)), train, valid, tmp_path / "t", other, progress=False)
    with pytest.raises(FastEGNNError, match=r"--init: .*nothing\.pt: no such checkpoint"):
        trainer(nbody, tmp_path / "t2", init=str(tmp_path / "nothing.pt"))


def test_init_keeps_the_start_s_training_frames(nbody, tmp_path):
    """The fine-tuned checkpoint records the frames its start was trained on beside its own, so a
    rollout report still marks them (per file: the union of the two ranges)."""
    from fastegnn_md import spec_keys as keys

    train, valid, spec_fields = nbody
    base_fields = dict(spec_fields, extra={keys.TRAJECTORY: ["a.xtc"], keys.TRAIN_FRAMES: [0, 40]})
    Trainer(config(epochs=1), train, valid, tmp_path / "base", base_fields, progress=False).fit()
    mine = {keys.TRAJECTORY: ["a.xtc", "b.xtc"], keys.TRAIN_FRAMES: {"a.xtc": [10, 90], "b.xtc": [0, 5]}}
    tuned = Trainer(config(epochs=1, init=str(tmp_path / "base" / BEST)), train, valid, tmp_path / "tuned",
                    dict(spec_fields, extra=mine), progress=False)
    tuned.fit()
    frames = load_checkpoint(tmp_path / "tuned" / BEST).data_spec.extra[keys.TRAIN_FRAMES]
    assert frames == {"a.xtc": [0, 90], "b.xtc": [0, 5]}


def test_weight_average_follows_its_recurrence_and_swaps_back():
    from fastegnn_md.training import WeightAverage

    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model)
        d = min(0.9, (1 + step) / (10 + step))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in model.state_dict().items()}
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with average.swapped_in(model) as given:
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, expected[k])
            assert torch.equal(given[k], raw[k])
    assert_same_weights(model.state_dict(), raw)


def test_ema_run_validates_and_saves_the_average(nbody, tmp_path):
    """With ema_decay the checkpoints hold the average (the weights the log's valid_mse scored),
    the resume state the optimizer's own, and the two differ."""
    _, valid, _ = nbody
    run = trainer(nbody, tmp_path, epochs=2, ema_decay=0.8)
    run.fit()
    last = load_checkpoint(tmp_path / LAST)
    for name, tensor in run.weight_average.average.items():
        assert torch.equal(last.state_dict[name], tensor)
    assert_same_weights(last.resume["raw_weights"], run.model.state_dict())
    assert any(not torch.equal(last.state_dict[k], run.model.state_dict()[k]) for k in last.state_dict)
    model = last.build_model()
    cfg = run.config
    scored = evaluate_mse(model, valid, cfg.cutoff, cfg.drop_rate, cfg.batch_size, torch.float32, "cpu")
    assert scored == pytest.approx(read_log(tmp_path)[-1]["valid_mse"], rel=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        config(ema_decay=1.0)


# ----------------------------------------------------------------------------- bf16-mixed precision
def test_bf16_mixed_training_differs_from_full_and_validates_in_full_precision(nbody, tmp_path):
    """The training steps run under bfloat16 autocast (the weights part from a full-precision run
    with the same seed), the weights stay float32, the checkpoint records the precision, and the
    logged validation MSE is the full-precision MSE of the saved weights."""
    full = trainer(nbody, tmp_path / "full", epochs=2)
    full.fit()
    mixed = trainer(nbody, tmp_path / "mixed", epochs=2, precision="bf16-mixed")
    mixed.fit()
    weights = mixed.model.state_dict()
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    differs = [k for k, v in weights.items() if not torch.equal(v, full.model.state_dict()[k])]
    assert differs, "bf16-mixed trained the same weights as full precision"
    ckpt = load_checkpoint(tmp_path / "mixed" / BEST)
    assert ckpt.training["config"]["precision"] == "bf16-mixed"
    _, valid, _ = nbody
    expected = evaluate_mse(ckpt.build_model(), valid, None, 0.0, batch_size=4)
    assert ckpt.training["best_valid_mse"] == pytest.approx(expected, rel=1e-6)


def test_bf16_mixed_needs_float32():
    with pytest.raises(ValueError, match="precision bf16-mixed needs dtype float32"):
        config(precision="bf16-mixed", dtype="float64")
    with pytest.raises(ValueError, match="precision must be one of full, bf16-mixed"):
        config(precision="fp8")
