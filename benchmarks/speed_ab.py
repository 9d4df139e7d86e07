"""Paired forward-pass timing of this checkout against an earlier git revision.

    python benchmarks/speed_ab.py --against f2b1c6a            # all speed.py cases, FastEGNN
    python benchmarks/speed_ab.py --against HEAD~3 --cases 0 2 --model egnn --repeats 30
    python benchmarks/speed_ab.py --against f2b1c6a --cases 4 0 --backward   # training steps

The machine here is shared and noisy, so two code versions are only compared as a ratio
measured in one process: the revision's ``fastegnn_md`` package is extracted with
``git archive`` into a temporary directory under another name, both models get the same
weights, and their forward passes alternate call by call on the same batch. Reported per case:
each version's median ms per graph, the median of the per-pair time ratios (new / old), and
the largest difference of their predicted positions (float32 round-off from reordered sums).
The graphs and settings are those of `benchmarks/speed.py` (2 threads, float32, hidden 64,
4 layers, C = 3). ``--backward`` times a training step instead: forward with autograd and the
backward pass of the summed squared positions.
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import speed  # noqa: E402  (benchmarks/speed.py: the cases)


def extract_revision(revision: str, into: Path, name: str = "fastegnn_at_revision") -> str:
    """Write ``fastegnn_md/`` of ``revision`` to ``into/name``; return the importable name.

    The package imports itself only relatively, so it runs under another top-level name beside
    the working copy.
    """
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", "--format=tar", revision, "fastegnn_md"],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "fastegnn_md").rename(into / name)
    return name


def compare(case: speed.Case, seed: int, model_name: str, old_build, repeats: int, backward: bool = False) -> dict:
    from fastegnn_md.models import build_model

    batch = speed.make_batch(case, seed)
    hparams = dict(node_features=2, edge_features=2, hidden=64, layers=4, virtual_nodes=3)
    torch.manual_seed(0)
    new = build_model(model_name, **hparams).eval()
    old = old_build(model_name, **hparams).eval()
    old.load_state_dict(new.state_dict())

    def step(model) -> None:
        if backward:
            model.zero_grad()
            model(batch).positions.square().sum().backward()
        else:
            with torch.inference_mode():
                model(batch)

    with torch.inference_mode():
        difference = float((old(batch).positions - new(batch).positions).abs().max())
    t_old, t_new = speed.alternate(lambda: step(old), lambda: step(new), repeats)
    return {
        "old_ms": 1e3 * float(np.median(t_old)) / case.graphs,
        "new_ms": 1e3 * float(np.median(t_new)) / case.graphs,
        "ratio": float(np.median(t_new / t_old)),
        "max_position_difference": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. a commit hash)")
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(len(speed.CASES))),
                        help="indices into benchmarks/speed.py CASES (default: all)")
    parser.add_argument("--model", default="fastegnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20, help="timed pairs per case")
    parser.add_argument("--backward", action="store_true", help="time training steps (forward + backward)")
    args = parser.parse_args()

    from fastegnn_md.runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            name = extract_revision(args.against, Path(tmp))
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"speed_ab.py: cannot read revision {args.against!r}: {error.stderr.decode().strip()}")
        sys.path.insert(0, tmp)
        old_build = importlib.import_module(f"{name}.models").build_model
        print(f"machine: {speed.machine()}; torch {torch.__version__}; {args.threads} threads; float32; "
              f"{args.model}; {args.repeats} alternating pairs per case; old = {args.against}; "
              f"{'training steps (forward + backward)' if args.backward else 'inference forward passes'}")
        print()
        print("| case | old ms/graph | new ms/graph | median ratio new/old | max position difference |")
        print("|---|---:|---:|---:|---:|")
        for index in args.cases:
            case = speed.CASES[index]
            r = compare(case, index, args.model, old_build, args.repeats, args.backward)
            print(f"| {case.name} | {r['old_ms']:.1f} | {r['new_ms']:.1f} | {r['ratio']:.3f} | "
                  f"{r['max_position_difference']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
