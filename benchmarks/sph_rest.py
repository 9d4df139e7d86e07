"""Water at rest: what one learned jump does from reference frames where the water has settled
(issue 16, item 4: the kinetic energy a rollout loses once the water rests).

Usage (from the repository root)::

    python benchmarks/sph_rest.py water-box runs/X/best.pt --scenes data/water-scenes-long \
        --scene valid:0 --starts 900 1300

For every checkpoint and start frame s (stored frames; the input velocity is the backward one
from frame s − J, J the checkpoint's jump in frames), one jump is predicted and compared with
the reference frame s + J, over the water particles (walls are inputs): the reference's RMS
displacement, the model's, the model's mean displacement (the centre of mass's drift; along
gravity it says whether the water rises or sinks), the RMS of the rest (per-particle scatter),
and the jump's MSE; and the model's RMS with the input velocity set to zero (how much of the
motion answers the velocity). ``--rollout JUMPS`` also rolls each checkpoint out from frame J
(`fastegnn-md rollout`'s code and default start) and prints, every 10 jumps from jump 40, the
same figures for the model's own frames beside the reference's over the same interval, and how
much higher the model's water sits on average. Kinetic energy over a jump goes with the square of the RMS displacement, so
a model whose RMS is k times the reference's has k² times its energy there; a rollout beats "no
motion" on kinetic energy only where that energy is within the reference's own (k < √2).
Lengths in the dataset's unit (box lengths for `fastegnn-md sph generate` data).
"""

from __future__ import annotations

import argparse

import numpy as np

from fastegnn_md.adapters.sph.trajectory import particle_types_to_attrs
from fastegnn_md.conventions import backward_velocity
from fastegnn_md.predictor import Predictor
from fastegnn_md.rollouts.sph import read_trajectory


def motion(model: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Figures of one jump's displacements (M, 3), the model's and the reference's: RMS of each,
    the model's mean (the centre of mass's drift, (3,)) and the RMS of its scatter around it."""
    drift = model.mean(axis=0)
    return {
        "reference_rms": float(np.sqrt((reference**2).sum(1).mean())),
        "model_rms": float(np.sqrt((model**2).sum(1).mean())),
        "drift": drift,
        "scatter_rms": float(np.sqrt(((model - drift) ** 2).sum(1).mean())),
    }


def rest_jump(predictor: Predictor, positions: np.ndarray, attrs: np.ndarray, moving: np.ndarray,
              start: int) -> dict[str, float]:
    """One jump from frame ``start`` of ``positions`` (T, N, 3); figures over the ``moving`` rows."""
    jump = int(predictor.spec.frame_stride)
    if start < jump or start + jump >= len(positions):
        raise SystemExit(f"--starts {start}: needs {jump} frames before and after it (trajectory of {len(positions)})")
    now, before, after = positions[start], positions[start - jump], positions[start + jump]
    velocity = backward_velocity(now, before, predictor.spec.dt)
    predicted = predictor.predict(now, velocity, attrs, moving=moving, kinematic_positions=after).positions
    still = predictor.predict(now, np.zeros_like(velocity), attrs, moving=moving, kinematic_positions=after).positions
    return {
        **motion((predicted - now)[moving], (after - now)[moving]),
        "model_rms_v0": float(np.sqrt((((still - now)[moving]) ** 2).sum(1).mean())),
        "mse": float(((predicted - after)[moving] ** 2).mean()),
    }


def own_rest(checkpoint: str, scenes: str, split: str, index: int, jumps: int, positions: np.ndarray,
             moving: np.ndarray) -> list[dict[str, float]]:
    """The model's own rollout from frame J at rest: per-jump figures every 10 jumps from jump 40."""
    import tempfile
    from pathlib import Path

    from fastegnn_md.adapters.sph.lagrangebench import read_lagrangebench
    from fastegnn_md.rollouts.sph import rollout_sph

    spec = Predictor.from_checkpoint(checkpoint).spec
    stride = int(spec.frame_stride)
    axis = int(np.argmax(np.abs(np.asarray(spec.gravity_axis or [0, -1, 0]))))
    with tempfile.TemporaryDirectory() as tmp:
        out = rollout_sph(scenes, checkpoint, split=split, trajectory=index, start=stride, jumps=jumps,
                          report_dir=Path(tmp) / "r", sinkhorn_particles=200, progress=False)
        frames = np.asarray(next(iter(read_lagrangebench(out.predicted))).positions, dtype=np.float64)
    rows = []
    for k in range(40, jumps + 1, 10):
        model = (frames[k] - frames[k - 1])[moving]
        reference = (positions[stride + k * stride] - positions[stride + (k - 1) * stride])[moving]
        rows.append({
            "jump": k,
            **motion(model, reference),
            "energy_ratio": float((model**2).sum() / max((reference**2).sum(), 1e-300)),
            "higher": float(frames[k][moving][:, axis].mean() - positions[stride + k * stride][moving][:, axis].mean()),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint paths or shipped names")
    parser.add_argument("--scenes", required=True, help="SPH dataset directory")
    parser.add_argument("--scene", default="valid:0", help="SPLIT:INDEX (default valid:0)")
    parser.add_argument("--starts", type=int, nargs="+", default=[900, 1300], help="start frames (default 900 1300)")
    parser.add_argument("--rollout", type=int, default=None, metavar="JUMPS",
                        help="also roll each checkpoint out JUMPS jumps and report its own frames at rest")
    args = parser.parse_args()
    split, index = args.scene.split(":")
    _, trajectory = read_trajectory(args.scenes, split, int(index))
    attrs, moving = particle_types_to_attrs(trajectory.particle_type, trajectory.convention)
    positions = np.asarray(trajectory.positions, dtype=np.float64)
    print(f"{args.scenes} {args.scene}: {int(moving.sum())} water particles; lengths in the data's unit")
    print("| checkpoint | start | reference RMS | model RMS | model / reference | drift (x, y, z) | scatter RMS | MSE "
          "| model RMS, velocity 0 |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for name in args.checkpoints:
        predictor = Predictor.from_checkpoint(name)
        for start in args.starts:
            row = rest_jump(predictor, positions, attrs, moving, start)
            drift = ", ".join(f"{v:+.4f}" for v in row["drift"])
            print(f"| `{name}` | {start} | {row['reference_rms']:.4f} | {row['model_rms']:.4f} | "
                  f"{row['model_rms'] / row['reference_rms']:.1f} | {drift} | {row['scatter_rms']:.4f} | {row['mse']:.2e} "
                  f"| {row['model_rms_v0']:.4f} |")
    if args.rollout:
        print(f"\nOwn rollouts ({args.rollout} jumps from frame J): per-jump figures of the model's frames")
        print("| checkpoint | jump | reference RMS | model RMS | energy model / reference | drift (x, y, z) "
              "| scatter RMS | model water higher by |")
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        for name in args.checkpoints:
            for row in own_rest(name, args.scenes, split, int(index), args.rollout, positions, moving):
                drift = ", ".join(f"{v:+.5f}" for v in row["drift"])
                print(f"| `{name}` | {row['jump']} | {row['reference_rms']:.4f} | {row['model_rms']:.4f} | "
                      f"{row['energy_ratio']:.1f} | {drift} | {row['scatter_rms']:.4f} | {row['higher']:+.4f} |")


if __name__ == "__main__":
    main()
