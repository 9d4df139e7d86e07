"""Average the weights of several checkpoints of one model (a "model soup"), for the SPH
experiments of issue 16 (benchmarks/RESULTS.md, "SPH: a weight average of three fine-tunes").

    python benchmarks/weight_average.py runs/soup3.pt runs/soup-s0/best.pt runs/soup-s1/best.pt runs/soup-s2/best.pt

The checkpoints must be the same model (name, hyperparameters, data spec): fine-tunes of one
start, so their weights lie in one basin and their mean is a model, not noise. Every floating
point tensor of the state dict is the plain mean; integer buffers are taken from the first. The
output is the first checkpoint with the averaged weights, no resume state, and the inputs listed
in its training summary, written by `save_checkpoint` (atomically).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastegnn_md.checkpoint import load_checkpoint, save_checkpoint
from fastegnn_md.errors import CheckpointError


def average_checkpoints(out: Path, sources: list[str]) -> Path:
    """Write the weight average of ``sources`` (paths or shipped names) to ``out``."""
    try:
        ckpts = [load_checkpoint(source) for source in sources]
    except CheckpointError as exc:
        raise SystemExit(f"weight_average.py: {exc}") from None
    first = ckpts[0]
    for source, ckpt in zip(sources[1:], ckpts[1:]):
        same = (ckpt.model_name == first.model_name and ckpt.hparams == first.hparams
                and ckpt.data_spec.as_dict() == first.data_spec.as_dict())
        if not same or ckpt.state_dict.keys() != first.state_dict.keys():
            raise SystemExit(f"weight_average.py: {source}: not the model and data spec of {sources[0]}; "
                             "only checkpoints of one model can be averaged")
    state = {
        name: torch.stack([c.state_dict[name] for c in ckpts]).mean(0) if value.is_floating_point() else value
        for name, value in first.state_dict.items()
    }
    model = first.build_model()
    model.load_state_dict(state)
    return save_checkpoint(out, first.model_name, first.hparams, model, first.data_spec,
                           training=dict(first.training, weight_average_of=list(sources)))


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
