"""SPH rollout report: the learned rollout and the trivial predictors against the reference frames.

Inputs are plain arrays in the dataset's units (length L, time T; `fastegnn_md.particle_metrics`);
output is ``report.json``, ``report.md`` and two PNGs in one directory, each written atomically:

* ``frames.png``: a few jumps side by side, reference above the model, projected on the x–y
  plane (side view, gravity −y pointing down), particles coloured by speed (finite difference
  over the jump that led to the frame), walls grey;
* ``errors.png``: MSE, Sinkhorn divergence, kinetic energy and (with ``density_radius``) the
  density and (with ``particle_radius``) the densest water against the horizon (jumps), for the
  model and the trivial predictors (and the reference's kinetic energy and densities).

Per-jump metrics (`per_jump.JumpMetric`, by name): ``mse``, ``sinkhorn``, ``kinetic_energy``
(with the reference's as its entry ``"reference"``), ``kinetic_energy_error``,
``nearest_neighbour_distance`` and, with ``density_radius``, ``neighbour_count`` (the local
density, the reference's beside; `particle_metrics`), with ``particle_radius``
``densest_water`` (the largest relative density of any scored particle, walls counted as
neighbours, `fastegnn_md.sph_kernel`: SPH water stays within about 1 % of 1), and, when the bounds are known,
``outside_box`` (scored particles outside the box, the reference's beside; the report's
``outside_box`` is each predictor's most at any jump). Only moving particles are scored: walls
follow the reference in every predictor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .. import particle_metrics as pm
from ..sph_kernel import relative_density
from .files import write_report_files
from .markdown import MarkdownDocument, info_bullets, significant
from .per_jump import (MODEL, JumpMetric, SummaryStat, beats_all, final, mean, mean_square, per_jump_rows, summarise,
                       with_start)
from .plots import PlotSet, new_figure, plot_predictors, series

#: Columns of frames.png (jumps shown side by side).
FRAMES_SHOWN = 4


@dataclass
class SinkhornSettings:
    """Sinkhorn divergence settings (`fastegnn_md.particle_metrics`): ε = ``reg`` (L²), clouds
    subsampled to at most ``max_particles`` with ``seed``, stopping tolerance ``tol``."""

    reg: float
    max_particles: int = pm.SINKHORN_MAX_PARTICLES
    seed: int = pm.SINKHORN_SEED
    tol: float = pm.SINKHORN_TOL


@dataclass
class SPHReportInputs:
    """Everything the SPH report compares.

    predictions : {predictor name: (K_p, N, 3) L} frames after jumps 1..K_p; must include
        ``"model"`` (shorter than the others when the rollout stopped).
    reference : (K + 1, N, 3) L, the reference frames at start + k·J frames, k = 0..K (row 0 is
        the start every predictor begins from).
    moving : (N,) bool, the particles scored (False: walls, which follow the reference).
    jump_frames : J, stored frames per jump; jump_time : J × metadata dt (T).
    start_frame : index of the start frame in the trajectory.
    bounds : [[lo, hi]] per axis (L), the plots' limits.
    density_radius : L, the radius of the ``neighbour_count`` density (None: not computed).
    particle_radius : L, the solver's particle radius for ``densest_water`` (None: not computed).
    """

    predictions: dict[str, np.ndarray]
    reference: np.ndarray
    moving: np.ndarray
    jump_frames: int
    jump_time: float
    start_frame: int
    sinkhorn: SinkhornSettings
    bounds: Optional[Sequence[Sequence[float]]] = None
    density_radius: Optional[float] = None
    particle_radius: Optional[float] = None
    horizons: Sequence[int] = pm.DEFAULT_HORIZONS
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Metrics by name (clouds of moving particles only)
# --------------------------------------------------------------------------------------------


class ParticleMSE(JumpMetric):
    """Mean over particles of |x̂ − x|² (LagrangeBench's), computed over whole trajectories at once."""

    name = "mse"

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference
        self.per_jump: dict[str, np.ndarray] = {}

    def prepare(self, trajectories: dict[str, np.ndarray], references: Sequence[Optional[np.ndarray]]) -> None:
        self.per_jump = {name: pm.particle_mse(x[1:], self.reference[1 : len(x)]) for name, x in trajectories.items()}

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return float(self.per_jump[name][k - 1])


class SinkhornDivergence(JumpMetric):
    """Debiased Sinkhorn divergence on one seeded subsample; the reference's self-term is solved
    once a jump and shared by every predictor. ``unconverged`` counts solves that hit the limit."""

    name = "sinkhorn"

    def __init__(self, subset: np.ndarray, settings: SinkhornSettings) -> None:
        self.subset, self.settings = subset, settings
        self.unconverged = 0
        self._self_term: dict[int, pm.TransportCost] = {}

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        target = reference[self.subset]
        if k not in self._self_term:
            self._self_term[k] = pm.entropic_transport_cost(target, target, self.settings.reg, self.settings.tol)
        value, converged = pm.sinkhorn_divergence(
            trajectory[k, self.subset], target, self.settings.reg, self.settings.tol, self_y=self._self_term[k]
        )
        self.unconverged += not converged
        return value


class KineticEnergy(JumpMetric):
    """½Σ|v|² with unit mass, v the displacement over the jump that led to the frame / jump time."""

    name = "kinetic_energy"
    reference_in_metric = True

    def __init__(self, reference: np.ndarray, jump_time: float) -> None:
        self.jump_time = jump_time
        self.reference = pm.kinetic_energy(pm.finite_difference_velocities(reference, jump_time))
        self.per_jump: dict[str, np.ndarray] = {}

    def prepare(self, trajectories: dict[str, np.ndarray], references: Sequence[Optional[np.ndarray]]) -> None:
        self.per_jump = {
            name: pm.kinetic_energy(pm.finite_difference_velocities(x, self.jump_time)) if len(x) > 1 else np.zeros(0)
            for name, x in trajectories.items()
        }

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return float(self.reference[k - 1])

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return float(self.per_jump[name][k - 1])


class KineticEnergyError(JumpMetric):
    """E_kin(predicted) − E_kin(reference) per jump (of a `KineticEnergy` already prepared)."""

    name = "kinetic_energy_error"

    def __init__(self, energy: KineticEnergy) -> None:
        self.energy = energy

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return float(self.energy.per_jump[name][k - 1] - self.energy.reference[k - 1])


class NearestNeighbourDistance(JumpMetric):
    """Mean nearest-neighbour distance of the scored particles in the frame (L;
    `particle_metrics.mean_nearest_neighbour_distance`), the reference's beside: lower where a
    predictor compresses the water or scatters it out of its packing."""

    name = "nearest_neighbour_distance"
    reference_in_metric = True

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return pm.mean_nearest_neighbour_distance(reference)

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return pm.mean_nearest_neighbour_distance(trajectory[k])


class NeighbourCount(JumpMetric):
    """Mean number of other scored particles within ``radius`` (L) in the frame
    (`particle_metrics.mean_neighbour_count`), the reference's beside: the density, higher where a
    predictor compresses the water."""

    name = "neighbour_count"
    reference_in_metric = True

    def __init__(self, radius: float) -> None:
        self.radius = radius

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return pm.mean_neighbour_count(reference, self.radius)

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return pm.mean_neighbour_count(trajectory[k], self.radius)


class DensestWater(JumpMetric):
    """The largest density of any scored particle over the rest density
    (`sph_kernel.relative_density`, the solver's kernel; the walls, where the reference has them,
    count as neighbours), the reference's beside: SPH water never exceeds 1 by more than about
    1 %; a predictor that packs water into clumps does."""

    name = "densest_water"
    reference_in_metric = True

    def __init__(self, particle_radius: float, walls: np.ndarray) -> None:
        self.particle_radius = particle_radius
        self.walls = walls  # (K + 1, W, 3) L: the walls at every jump (they follow the reference)

    def _densest(self, k: int, water: np.ndarray) -> float:
        everything = np.concatenate([water, self.walls[k]]) if self.walls.shape[1] else water
        return float(relative_density(everything, self.particle_radius)[: len(water)].max())

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return self._densest(k, reference)

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return self._densest(k, trajectory[k])


class OutsideBox(JumpMetric):
    """How many scored particles lie outside ``bounds`` ([[lo, hi]] per axis, L) in the frame:
    water through a wall (issue 16). The reference's own count is beside it."""

    name = "outside_box"
    reference_in_metric = True

    def __init__(self, bounds: Sequence[Sequence[float]]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)

    def outside(self, frame: np.ndarray) -> np.ndarray:
        """(N,) bool: which rows of ``frame`` (N, 3) lie outside the box."""
        return ((frame < self.bounds[:, 0]) | (frame > self.bounds[:, 1])).any(axis=1)

    def count(self, frame: np.ndarray) -> int:
        return int(self.outside(frame).sum())

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return self.count(reference)

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return self.count(trajectory[k])


SUMMARY = (
    SummaryStat("mean_mse", "mse", mean),
    SummaryStat("final_mse", "mse", final),
    SummaryStat("mean_sinkhorn", "sinkhorn", mean),
    SummaryStat("kinetic_energy_mse", "kinetic_energy_error", mean_square),
)


def compare(inputs: SPHReportInputs, progress: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict: per-jump MSE, Sinkhorn divergence and kinetic energy per
    predictor, the horizon table (MSE at n, MSE_n, Sinkhorn at n) and means over the rollout.

    ``progress`` shows a tqdm bar over the jumps (the Sinkhorn solves are the slow part).
    """
    names = list(inputs.predictions)
    moving = np.asarray(inputs.moving, dtype=bool)
    reference = np.asarray(inputs.reference, dtype=np.float64)[:, moving]
    num_jumps = reference.shape[0] - 1
    settings = inputs.sinkhorn
    subset = pm.subsample_indices(int(moving.sum()), settings.max_particles, settings.seed)
    trajectories = {  # (1 + K_p, n, 3): the shared start, then the predictor's frames
        name: with_start(reference[0], np.asarray(p, np.float64)[:, moving]) for name, p in inputs.predictions.items()
    }
    mse = ParticleMSE(reference)
    sinkhorn = SinkhornDivergence(subset, settings)
    energy = KineticEnergy(reference, inputs.jump_time)
    bases = [{"jump": k, "frame": inputs.start_frame + k * inputs.jump_frames, "time": k * inputs.jump_time}
             for k in range(1, num_jumps + 1)]

    def bar(jumps: Sequence[int]) -> Any:
        return tqdm(jumps, desc="metrics", unit="jump", disable=not progress)

    metrics: list[JumpMetric] = [mse, sinkhorn, energy, KineticEnergyError(energy)]
    if int(moving.sum()) >= 2:
        metrics.append(NearestNeighbourDistance())
    if inputs.density_radius is not None:
        metrics.append(NeighbourCount(inputs.density_radius))
    if inputs.particle_radius is not None and moving.any():
        walls = np.asarray(inputs.reference, dtype=np.float64)[:, ~moving]
        metrics.append(DensestWater(inputs.particle_radius, walls))
    if inputs.bounds is not None:
        metrics.append(OutsideBox(inputs.bounds))
    per_jump = per_jump_rows(bases, list(reference[1:]), trajectories, metrics, progress=bar)
    outside = None
    if inputs.bounds is not None:  # the most particles outside the box at any jump, per predictor
        outside = {name: max((row["outside_box"][name] for row in per_jump if name in row["outside_box"]), default=0)
                   for name in ["reference", *names]}

    notes = list(inputs.notes)
    if sinkhorn.unconverged:
        notes.append(
            f"{sinkhorn.unconverged} Sinkhorn divergences stopped at the iteration limit before reaching the "
            f"tolerance {settings.tol:g}; their values are approximate"
        )
    return {
        "info": inputs.info,
        "start_frame": inputs.start_frame,
        "jump_frames": inputs.jump_frames,
        "jump_time": inputs.jump_time,
        "jumps": num_jumps,
        "model_jumps": len(trajectories[MODEL]) - 1,
        "particles": int(moving.size),
        "scored_particles": int(moving.sum()),
        "predictors": names,
        "sinkhorn": {
            "reg": settings.reg,
            "blur": math.sqrt(settings.reg),
            "particles": int(len(subset)),
            "seed": settings.seed,
            "tol": settings.tol,
            "cost": "squared Euclidean",
        },
        "outside_box": outside,
        "density_radius": inputs.density_radius,
        "particle_radius": inputs.particle_radius,
        "densest_water": _most(per_jump, "densest_water", ["reference", *names]),
        "horizons": _horizons(per_jump, names, mse.per_jump, inputs.horizons),
        "summary": summarise(per_jump, names, "mse", SUMMARY, wins=("mse", "sinkhorn", "kinetic_energy_error")),
        "notes": notes,
        "per_jump": per_jump,
    }


def _most(rows: list[dict[str, Any]], metric: str, names: Sequence[str]) -> Optional[dict[str, float]]:
    """{name: its largest value of ``metric`` over the jumps} (None when the rows lack it)."""
    if not rows or metric not in rows[0]:
        return None
    return {name: max(row[metric][name] for row in rows if name in row[metric]) for name in names}


def beats_all_line(summary: dict[str, Any]) -> str:
    """"MSE a, Sinkhorn b, kinetic energy c of N jumps": where the model is below every trivial
    predictor at once (the kinetic-energy error by magnitude)."""
    wins = summary["model_beats_all"]
    return (f"MSE {wins['mse']}, Sinkhorn {wins['sinkhorn']}, kinetic energy {wins['kinetic_energy_error']} "
            f"of {summary['jumps']} jumps")


def density_at_last_jump(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{metric: {"reference": value, predictor: value, ...}} for the density metrics the report has
    ("neighbour_count", "nearest_neighbour_distance", "densest_water") at the last jump the model made."""
    jumps = report["model_jumps"]
    if jumps < 1:
        return {}
    row = report["per_jump"][jumps - 1]
    return {metric: {name: row[metric][name] for name in ["reference", *report["predictors"]] if name in row[metric]}
            for metric in ("neighbour_count", "nearest_neighbour_distance", "densest_water") if metric in row}


def _yes_no(won: Optional[bool]) -> str:
    return "–" if won is None else ("yes" if won else "no")


def _horizons(
    per_jump: list[dict[str, Any]], names: list[str], mse: dict[str, np.ndarray], horizons: Sequence[int]
) -> dict[str, Any]:
    """MSE at jump n, MSE_n (mean over jumps 1..n), Sinkhorn at jump n and the kinetic-energy
    error's magnitude at jump n, per predictor; None where the predictor has no frame n. And
    ``model_beats_all[n][metric]`` for metric in mse, sinkhorn, kinetic_energy_error: whether the
    model is below every trivial predictor at jump n (None where the model has no frame n), the
    horizon reading of "below both trivial predictors at every horizon". Keys are str(n) (JSON)."""
    metrics = ("mse", "sinkhorn", "kinetic_energy_error")
    result: dict[str, Any] = {"mse_at": {}, "mse_n": {}, "sinkhorn_at": {}, "kinetic_energy_error_at": {},
                              "model_beats_all": {}}
    for n in horizons:
        row = per_jump[n - 1] if 1 <= n <= len(per_jump) else None
        result["mse_at"][str(n)] = {name: pm.mse_at(mse[name], [n])[n] for name in names}
        result["mse_n"][str(n)] = {name: pm.mse_n(mse[name], [n])[n] for name in names}
        result["sinkhorn_at"][str(n)] = {name: (row["sinkhorn"].get(name) if row else None) for name in names}
        errors = row["kinetic_energy_error"] if row else {}
        result["kinetic_energy_error_at"][str(n)] = {
            name: (abs(errors[name]) if errors.get(name) is not None else None) for name in names}
        scored = row is not None and row["mse"].get(MODEL) is not None
        result["model_beats_all"][str(n)] = {metric: (beats_all(row[metric]) if scored else None) for metric in metrics}
    return result


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], directory: Path, inputs: SPHReportInputs) -> dict[str, Path]:
    """Write report.json, report.md, frames.png and errors.png into ``directory``; returns the paths."""
    return write_report_files(report, directory, lambda d: write_plots(report, d, inputs), render_markdown)


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The report as Markdown: setup, horizon table, rollout means, per-jump table, notes, plots."""
    names = report["predictors"]
    info = report.get("info", {})
    doc = MarkdownDocument("SPH rollout report")
    info_bullets(doc, info, ("dataset", "split", "trajectory", "checkpoint", "model", "predicted_trajectory"))
    doc.bullet(
        f"start frame {report['start_frame']}; {report['jumps']} jumps of {report['jump_frames']} frames "
        f"({report['jump_time']:g} in the dataset's time unit); the model made {report['model_jumps']}"
    )
    doc.bullet(f"{report['scored_particles']} of {report['particles']} particles scored (walls follow the reference)")
    sink = report["sinkhorn"]
    doc.bullet(
        f"Sinkhorn divergence: squared Euclidean cost, ε = {sink['reg']:.3g} (blur {sink['blur']:.3g}), "
        f"on {sink['particles']} particles (seed {sink['seed']})"
    )
    if info.get("stopped"):
        doc.bullet(f"**rollout stopped early:** {info['stopped']}")
    if report.get("outside_box") is not None:
        worst = report["outside_box"]
        doc.bullet("most scored particles outside the box at any jump: " + ", ".join(
            f"{name} {worst[name]}" for name in ["reference", *names]))

    doc.heading("Horizons").line(
        "MSE = mean over particles of |x̂ − x|² (LagrangeBench's; 3 × the per-coordinate MSE of "
        "`evaluate`). MSE_n = mean of the per-jump MSE over jumps 1..n. abs. KE error = "
        "|E_kin(predictor) − E_kin(reference)| at jump n."
    ).line()
    horizons = report["horizons"]
    columns = [(f"MSE at {n}", "mse_at", n) for n in horizons["mse_at"]]
    columns += [(f"MSE_{n}", "mse_n", n) for n in horizons["mse_n"]]
    columns += [(f"Sinkhorn at {n}", "sinkhorn_at", n) for n in horizons["sinkhorn_at"]]
    columns += [(f"abs. KE error at {n}", "kinetic_energy_error_at", n)
                for n in horizons.get("kinetic_energy_error_at", {})]  # absent from reports written before it
    doc.table(["predictor", *(c[0] for c in columns)],
              ([name, *(significant(horizons[key][n][name]) for _, key, n in columns)] for name in names))
    if horizons.get("model_beats_all"):
        doc.line().line("The model below every trivial predictor at jump n (MSE · Sinkhorn · kinetic-energy error): "
                        + "; ".join(f"{n}: " + " · ".join(_yes_no(won) for won in beats.values())
                                    for n, beats in horizons["model_beats_all"].items()) + ".")

    summary = report["summary"]
    doc.heading("Over the rollout").line(f"Means over the {summary['jumps']} jumps the model made.").line()
    doc.table(
        ["predictor", "mean MSE", "final MSE", "mean Sinkhorn", "kinetic-energy MSE"],
        ([name, *(significant(summary[key][name]) for key in ("mean_mse", "final_mse", "mean_sinkhorn",
                                                              "kinetic_energy_mse"))] for name in names),
    )
    doc.line()
    for name, result in summary["model_vs_trivial"].items():
        doc.bullet(
            f"the learned rollout has lower MSE than **{name}** at {result['model_lower_mse']}, lower "
            f"Sinkhorn divergence at {result['model_lower_sinkhorn']} and a smaller kinetic-energy error at "
            f"{result['model_lower_kinetic_energy_error']} of {result['jumps']} jumps"
        )
    doc.bullet(f"below every trivial predictor at once: {beats_all_line(summary)}")
    density = density_at_last_jump(report)
    if "neighbour_count" in density:
        doc.bullet(f"density of the water at jump {report['model_jumps']}, mean number of neighbours within "
                   f"{report['density_radius']:g} (higher = compressed): "
                   + ", ".join(f"{name} {value:.3g}" for name, value in density["neighbour_count"].items()))
    if "nearest_neighbour_distance" in density:
        doc.bullet(f"mean nearest-neighbour distance of the water at jump {report['model_jumps']} (lower = "
                   "compressed or disordered): "
                   + ", ".join(f"{name} {value:.4g}" for name, value in density["nearest_neighbour_distance"].items()))
    if report.get("densest_water") is not None:
        doc.bullet(f"densest water at any jump, relative to the rest density (particle radius "
                   f"{report['particle_radius']:g}, the solver's kernel; SPH water stays within about 1 % of 1): "
                   + ", ".join(f"{name} {value:.3g}" for name, value in report["densest_water"].items()))

    doc.heading("Per jump").line("Kinetic energy ½Σ|v|² (unit mass, v from the jump's displacement).").line()
    header = ["jump", "frame", *(f"MSE {n}" for n in names), *(f"Sinkhorn {n}" for n in names), "E_kin ref.",
              *(f"E_kin {n}" for n in names)]
    rows = [
        [str(row["jump"]), str(row["frame"])]
        + [significant(row["mse"].get(n)) for n in names]
        + [significant(row["sinkhorn"].get(n)) for n in names]
        + [significant(row["kinetic_energy"]["reference"])]
        + [significant(row["kinetic_energy"].get(n)) for n in names]
        for row in report["per_jump"]
    ]
    doc.table(header, rows, numeric=False)
    return doc.notes(report["notes"]).plots(plots).render()


def shown_jumps(model_jumps: int, count: int = FRAMES_SHOWN) -> list[int]:
    """Up to ``count`` jumps spread over 1..model_jumps, always with the last; [0] (the start)
    when the model made no frame."""
    if model_jumps < 1:
        return [0]
    return sorted({int(round(k)) for k in np.linspace(1, model_jumps, min(count, model_jumps))})


def write_plots(report: dict[str, Any], directory: Path, inputs: SPHReportInputs) -> dict[str, Path]:
    """frames.png (reference vs model, x–y projection, coloured by speed) and errors.png."""
    plots = PlotSet(directory)
    plots.save(_frames_figure(inputs), "frames")
    if report["per_jump"]:
        plots.save(_errors_figure(report), "errors")
    return plots.paths


def _frames_figure(inputs: SPHReportInputs) -> Any:
    reference = np.asarray(inputs.reference, dtype=np.float64)
    model = np.concatenate([reference[:1], np.asarray(inputs.predictions[MODEL], np.float64)])
    moving = np.asarray(inputs.moving, dtype=bool)
    jumps = shown_jumps(len(model) - 1)

    def speed(frames: np.ndarray, k: int) -> np.ndarray:
        if k == 0:  # the start: its velocity is the reference's over the jump before it, not shown
            return np.zeros(frames.shape[1])
        return np.linalg.norm(frames[k] - frames[k - 1], axis=-1) / inputs.jump_time

    rows = (("reference", reference), ("model", model))
    speeds = {(label, k): speed(frames, k) for label, frames in rows for k in jumps}
    # One colour scale for all panels, from the reference's 99th percentile so splashes do not
    # wash out the bulk (faster particles saturate; the colour bar says so).
    ref_speeds = np.concatenate([speeds[("reference", k)][moving] for k in jumps])
    vmax = float(np.percentile(ref_speeds, 99)) if ref_speeds.size and np.any(ref_speeds > 0) else 1.0

    fig = new_figure((3.2 * len(jumps) + 1.0, 6.4))
    axes = np.atleast_2d(fig.subplots(2, len(jumps), squeeze=False))
    bounds = inputs.bounds
    scatter = None
    for r, (label, frames) in enumerate(rows):
        for c, k in enumerate(jumps):
            ax = axes[r, c]
            x = frames[k]
            order = np.argsort(x[:, 2])  # draw back to front along z, the viewing axis
            walls = order[~moving[order]]
            fluid = order[moving[order]]
            if walls.size:
                ax.scatter(x[walls, 0], x[walls, 1], s=2, c="0.6", linewidths=0)
            scatter = ax.scatter(
                x[fluid, 0], x[fluid, 1], s=4, c=speeds[(label, k)][fluid], cmap="viridis", vmin=0.0, vmax=vmax,
                linewidths=0,
            )
            if bounds is not None:
                ax.set_xlim(*bounds[0])
                ax.set_ylim(*bounds[1])
            ax.set_aspect("equal")
            ax.set_title(f"{label}, jump {k} (frame {inputs.start_frame + k * inputs.jump_frames})", fontsize=9)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel("y (gravity ↓)")
            if r == 1:
                ax.set_xlabel("x")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes.ravel().tolist(), shrink=0.8, extend="max")
        bar.set_label("speed (length / time unit)")
    return fig


def _errors_figure(report: dict[str, Any]) -> Any:
    rows = report["per_jump"]
    names = report["predictors"]
    metrics = ["mse", "sinkhorn", "kinetic_energy"]
    if any("neighbour_count" in row for row in rows):  # the density panel, where the report has it
        metrics.append("neighbour_count")
    if any("densest_water" in row for row in rows):
        metrics.append("densest_water")
    fig = new_figure((5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics))
    for ax, metric in zip(axes, metrics):
        plot_predictors(ax, rows, "jump", metric, names)
    for ax, metric in zip(axes[2:], metrics[2:]):  # the reference's own energy and density
        ax.plot(*series(rows, "jump", metric, "reference"), "k-", lw=2, label="reference")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("MSE, mean |x̂ − x|²")
    axes[1].set_ylabel(f"Sinkhorn divergence (ε = {report['sinkhorn']['reg']:.2g})")
    axes[2].set_ylabel("kinetic energy ½Σ|v|²")
    for ax, metric in zip(axes[3:], metrics[3:]):
        ax.set_ylabel(f"density: neighbours within {report['density_radius']:g}" if metric == "neighbour_count"
                      else "densest water / rest density")
    for ax in axes:
        ax.set_xlabel(f"jumps (1 jump = {report['jump_frames']} frames)")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:2]:
        ax.set_yscale("log")  # zeros (a perfect start) are masked, growth over decades stays visible
    return fig
