"""Average the weights of several checkpoints of one model (a "model soup"), for the SPH
experiments of issue 16 (benchmarks/RESULTS.md, "SPH: a weight average of three fine-tunes").

    python benchmarks/weight_average.py runs/soup3.pt runs/soup-s0/best.pt runs/soup-s1/best.pt runs/soup-s2/best.pt

The checkpoints must be the same model (name, hyperparameters, data spec): fine-tunes of one
start, so their weights lie in one basin and their mean is a model, not noise. Every floating
point tensor of the state dict is the plain mean; integer buffers are taken from the first. The
output is the first checkpoint with the averaged weights, no resume state, and the inputs listed
in its training summary; it is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastegnn_md.checkpoint import KEY_MODEL, KEY_RESUME, KEY_SPEC, KEY_STATE, KEY_TRAINING, load_checkpoint, resolve_checkpoint
from fastegnn_md.errors import CheckpointError
from fastegnn_md.io import write_atomically


def average_checkpoints(out: Path, sources: list[str]) -> Path:
    """Write the weight average of ``sources`` (paths or shipped names) to ``out``."""
    for source in sources:  # a clear error for anything that is not a checkpoint
        try:
            load_checkpoint(source)
        except CheckpointError as exc:
            raise SystemExit(f"weight_average.py: {exc}") from None
    payloads = [torch.load(resolve_checkpoint(s), map_location="cpu", weights_only=True) for s in sources]
    first = payloads[0]
    for source, payload in zip(sources[1:], payloads[1:]):
        for key in (KEY_MODEL, KEY_SPEC):
            if payload[key] != first[key]:
                raise SystemExit(f"weight_average.py: {source}: its {key!r} differs from {sources[0]}'s; "
                                 "only checkpoints of one model and data spec can be averaged")
        if payload[KEY_STATE].keys() != first[KEY_STATE].keys():
            raise SystemExit(f"weight_average.py: {source}: its weights are not {sources[0]}'s model's")
    state = {
        name: torch.stack([p[KEY_STATE][name] for p in payloads]).mean(0) if value.is_floating_point() else value
        for name, value in first[KEY_STATE].items()
    }
    averaged = {key: value for key, value in first.items() if key != KEY_RESUME}
    averaged[KEY_STATE] = state
    averaged[KEY_TRAINING] = dict(first[KEY_TRAINING], weight_average_of=list(sources))
    write_atomically(out, lambda handle: torch.save(averaged, handle))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="checkpoint to write")
    parser.add_argument("sources", nargs="+", help="checkpoints (paths or shipped names) to average, at least two")
    args = parser.parse_args()
    if len(args.sources) < 2:
        parser.error("give at least two checkpoints to average")
    print(f"wrote {average_checkpoints(args.out, args.sources)}")


if __name__ == "__main__":
    main()
