"""Shared by the Table-1 benchmarks: test MSE and relative forward time of trained models.

All models are evaluated in one process and their test traversals are timed interleaved, next
to an EGNN of the same size on the full graph, so the ratio is measured under the same load.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fastegnn_md.checkpoint import load_checkpoint
from fastegnn_md.evaluation import reference_egnn
from fastegnn_md.graph import FramePair
from fastegnn_md.training import batches, evaluate_mse


@dataclass(frozen=True)
class Entry:
    label: str
    model: str
    drop_rate: float = 0.0
    virtual_nodes: int = 3
    paper_mse: Optional[float] = None
    paper_time: Optional[float] = None


def add_run_arguments(parser: argparse.ArgumentParser, runs: str, epochs: int, batch_size: int, repeats: int) -> None:
    """The options every Table-1 benchmark takes (training budget, timing, parallel training)."""
    parser.add_argument("--runs", type=Path, default=Path(runs))
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=repeats, help="timing repeats of the test traversal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="train only these labels")
    parser.add_argument("--skip-eval", action="store_true", help="train only (e.g. to train in parallel)")
    parser.add_argument("--quiet", action="store_true")


def run_dir(root: Path, entry: Entry) -> Path:
    """One folder per label, named without characters a path treats specially ("w/o MMD" is one folder)."""
    name = entry.label.replace("<", "_").replace(">", "").replace(",", "_").replace("*", "_star")
    return root / name.replace("/", "_").replace(" ", "_")


def measure(
    entries: Sequence[Entry],
    runs: Path,
    test: list[FramePair],
    cutoff: Optional[float],
    batch_size: int,
    repeats: int,
) -> tuple[dict[str, dict], float]:
    """Per label: {"mse", "relative_time", "best_epoch", "epochs"}; and EGNN's median seconds."""
    models, mses = {}, {}
    for entry in entries:
        ckpt = load_checkpoint(run_dir(runs, entry) / "best.pt")
        models[entry.label] = ckpt.build_model()
        mses[entry.label] = evaluate_mse(models[entry.label], test, cutoff, entry.drop_rate, batch_size)
    egnn_ref = reference_egnn(load_checkpoint(run_dir(runs, entries[0]) / "best.pt"))
    timed = {e.label: (models[e.label], e.drop_rate) for e in entries}
    timed["__egnn_ref__"] = (egnn_ref, 0.0)
    rates = {p for _, p in timed.values()}
    test_batches = {p: list(batches(test, batch_size, cutoff, p, torch.float32)) for p in rates}
    times: dict[str, list[float]] = {k: [] for k in timed}
    import time

    with torch.inference_mode():
        for _ in range(repeats):
            for label, (model, p) in timed.items():
                model.eval()
                start = time.perf_counter()
                for batch in test_batches[p]:
                    model(batch)
                times[label].append(time.perf_counter() - start)
    egnn_time = float(np.median(times["__egnn_ref__"]))
    results = {}
    for entry in entries:
        summary = load_checkpoint(run_dir(runs, entry) / "best.pt").training
        results[entry.label] = {
            "mse": mses[entry.label],
            "relative_time": float(np.median(times[entry.label])) / egnn_time,
            "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"],
        }
    return results, egnn_time
