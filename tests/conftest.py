"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny test models run fastest on one thread (and do not stall when the other core is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny_md_model(directory, topology, trajectory, jump: int, fit: str = "none", **config):
    """Train a tiny FastEGNN (hidden 8, 1 layer, 1 epoch on 4 pairs) on real MD files; returns best.pt.

    ``fit`` is `load_md_pairs`' (rigid motion removed or not); ``config`` overrides `TrainConfig`
    fields (e.g. drop_rate, length_scale). Tests that need a real
    checkpoint with an MD data spec use this instead of each training their own.
    """
    import warnings
    from pathlib import Path

    from fastegnn_md.adapters.mdanalysis import load_md_pairs
    from fastegnn_md.training import TrainConfig, Trainer

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_md_pairs(topology, trajectory, jump=jump, progress=False, fit=fit)
    settings = dict(hidden=8, layers=1, cutoff=10.0, epochs=1, batch_size=2, sigma=1.0, mmd_weight=0.5, mmd_samples=20)
    settings.update(config)
    Trainer(TrainConfig(**settings), data.splits["train"][:4], data.splits["valid"][:2], directory,
            data.spec_fields, str(trajectory), progress=False).fit(resume=False)
    return Path(directory) / "best.pt"


@pytest.fixture(scope="session")
def tiny_md_model():
    """`train_tiny_md_model`, for test modules that need a checkpoint on other MD files."""
    return train_tiny_md_model


@pytest.fixture(scope="session")
def adk_dcd_checkpoint(tmp_path_factory):
    """Tiny FastEGNN<3,0.75> on MDAnalysisTests' AdK PSF/DCD, jump 5 frames = 5 ps (855 atoms)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    return train_tiny_md_model(tmp_path_factory.mktemp("adk-dcd"), PSF, DCD, jump=5, drop_rate=0.75)


def train_on_random_walk(directory, seed: int, **config) -> dict:
    """One float64 epoch of a tiny EGNN on a 6-atom random walk (30 frames, 1 ps, backward
    velocities); ``config`` adds or overrides `TrainConfig` fields. Returns the last record of metrics.jsonl."""
    import json
    from pathlib import Path

    import numpy as np

    from fastegnn_md.adapters.mdanalysis.pairs import frame_pairs
    from fastegnn_md.training import TrainConfig, Trainer

    rng = np.random.default_rng(seed)
    atoms, frames = 6, 30
    positions = np.cumsum(rng.normal(scale=0.3, size=(frames, atoms, 3)), axis=0) + rng.normal(size=(atoms, 3)) * 2
    pairs = frame_pairs(positions, None, np.ones((atoms, 1)), None, 1.0, 1, "backward", source="walk")
    spec = {"dt": 1.0, "velocity_convention": "backward", "units": {"length": "Å", "time": "ps"}}
    settings = TrainConfig(**{"model": "egnn", "hidden": 8, "layers": 1, "epochs": 1, "batch_size": 4,
                              "dtype": "float64", **config})
    Trainer(settings, pairs[:20], pairs[20:], directory, spec, progress=False).fit(resume=False)
    return json.loads((Path(directory) / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="session")
def random_walk_training():
    """`train_on_random_walk`, for tests of a training option's bookkeeping."""
    return train_on_random_walk
