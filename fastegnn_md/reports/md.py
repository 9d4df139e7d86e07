"""MD rollout report: the learned jump against the reference frames and the trivial predictors.

Inputs are plain arrays (positions Å, times ps); output is ``report.json``, ``report.md`` and
PNG plots in one directory, each written atomically. Where the reference trajectory has no
frame at a rollout time, that jump is listed with ``reference_frame = null`` and no metric:
nothing is interpolated.

Per-jump metrics (`per_jump.JumpMetric`, by name): ``rmsd`` (mass-weighted Kabsch RMSD, Å),
``mse`` (position MSE without superposition, Å²), ``radius_of_gyration`` (Å, with the
reference's as ``reference_radius_of_gyration``), ``contact_f1`` (residue contact maps, 8 Å,
|i − j| ≥ 3). Beside them, per-residue RMSF over the jumps with reference frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import metrics
from .files import write_report_files
from .markdown import MarkdownDocument, fixed, info_bullets
from .per_jump import MODEL, JumpMetric, SummaryStat, final, mean, per_jump_rows, summarise, with_start
from .plots import PlotSet, new_figure, plot_predictors

#: Residue-residue contact cutoff (Å) and minimum sequence separation of the contact maps.
CONTACT_CUTOFF = 8.0
CONTACT_MIN_SEPARATION = 3


@dataclass
class ReportInputs:
    """Everything the report compares.

    predictions : {predictor name: (K, N, 3) Å} for jumps 1..K (the model's may be shorter if
        the rollout stopped); must include ``"model"``.
    start_time : time of the start frame (ps); jump k is at start_time + k·dt.
    reference_positions : (T, N, 3) Å, reference_times : (T,) ps: every frame of the trajectory.
    masses : (N,) amu or None; residue_ids : (N,) residue of each atom; atom_names : (N,) atom
        names or None (with N, CA and C among them the report adds the backbone geometry).
    """

    predictions: dict[str, np.ndarray]
    dt: float
    start_time: float
    start_frame: int
    reference_positions: np.ndarray
    reference_times: np.ndarray
    residue_ids: np.ndarray
    masses: Optional[np.ndarray] = None
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    atom_names: Optional[np.ndarray] = None
    training_frames: Optional[tuple[int, int]] = None
    virtual_positions: Optional[np.ndarray] = None


def virtual_node_distances(virtual: np.ndarray, frames: np.ndarray, dt: float) -> dict[str, Any]:
    """Each virtual node's distance (Å) to the nearest atom of the model's frame, per jump, and
    summaries (first, median, largest, last) beside the frames' median radius of gyration."""
    count = min(len(virtual), len(frames))
    if count == 0:
        return {}
    distances = metrics.nearest_atom_distance(virtual[:count], frames[:count])  # (K, C)
    return {
        "time_ps": [dt * (k + 1) for k in range(count)],
        "distance": distances.T.tolist(),
        "first": distances[0].tolist(),
        "median": np.median(distances, axis=0).tolist(),
        "max": distances.max(axis=0).tolist(),
        "last": distances[-1].tolist(),
        "model_radius_of_gyration": float(np.median(metrics.radius_of_gyration(frames[:count]))),
    }


def reference_frame_at(times: np.ndarray, time: float, dt: float) -> Optional[int]:
    """Index of the frame at ``time`` (ps) within 0.1 % of the jump length, else None."""
    if times.size == 0:
        return None
    index = int(np.argmin(np.abs(times - time)))
    return index if abs(float(times[index]) - time) <= 1e-3 * dt else None


# --------------------------------------------------------------------------------------------
# Metrics by name
# --------------------------------------------------------------------------------------------


class KabschRMSD(JumpMetric):
    name = "rmsd"

    def __init__(self, masses: Optional[np.ndarray]) -> None:
        self.masses = masses

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return metrics.kabsch_rmsd(trajectory[k], reference, self.masses)


class PositionMSE(JumpMetric):
    name = "mse"

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return metrics.position_mse(trajectory[k], reference)


class AlignedMSE(JumpMetric):
    """Position MSE after the rigid motion between the frames is removed (`metrics.aligned_mse`)."""

    name = "aligned_mse"

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return metrics.aligned_mse(trajectory[k], reference)


class BackboneDistance(JumpMetric):
    """Mean (or minimum) of one kind of backbone distance (`metrics.BACKBONE_BONDS`), Å, with the
    reference frame's beside it."""

    def __init__(self, kind: str, names: np.ndarray, residue_ids: np.ndarray, reduce: str = "mean") -> None:
        self.kind, self.reduce = kind, reduce
        self.pairs = {kind: metrics.backbone_pairs(names, residue_ids)[kind]}  # the topology, read once
        self.name = f"{reduce}_{kind}"
        self.reference_key = f"reference_{self.name}"

    def _of(self, positions: np.ndarray) -> float:
        values = metrics.backbone_distances(positions, self.pairs)[self.kind]
        if not values.size:
            return float("nan")
        if self.reduce == "cis":  # how many peptide bonds are cis (ω in degrees)
            return float(np.sum(np.abs(values) < metrics.CIS_TRANS_BOUNDARY))
        return float(getattr(np, self.reduce)(values))

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return self._of(reference)

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return self._of(trajectory[k])


#: The backbone geometry the report follows: (kind, reduction); ("omega", "cis") counts cis peptides.
GEOMETRY = (("N-CA", "mean"), ("CA-C", "mean"), ("C-N", "mean"), ("CA-CA", "mean"), ("CA-CA", "min"),
            ("omega", "cis"))


def has_backbone(names: Optional[np.ndarray]) -> bool:
    return names is not None and {"N", "CA", "C"} <= set(np.asarray(names).astype(str).tolist())


class RadiusOfGyration(JumpMetric):
    name = "radius_of_gyration"
    reference_key = "reference_radius_of_gyration"

    def __init__(self, masses: Optional[np.ndarray]) -> None:
        self.masses = masses

    def reference_value(self, k: int, reference: np.ndarray) -> float:
        return float(metrics.radius_of_gyration(reference, self.masses))

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return float(metrics.radius_of_gyration(trajectory[k], self.masses))


class ContactF1(JumpMetric):
    """F1 of the predicted residue contact map against the reference frame's (computed once a jump)."""

    name = "contact_f1"

    def __init__(self, residue_ids: np.ndarray) -> None:
        self.residue_ids = residue_ids
        self._reference: dict[int, np.ndarray] = {}

    def contacts(self, positions: np.ndarray) -> np.ndarray:
        return metrics.contact_map(positions, CONTACT_CUTOFF, self.residue_ids, CONTACT_MIN_SEPARATION)

    def reference_value(self, k: int, reference: np.ndarray) -> None:
        self._reference[k] = self.contacts(reference)
        return None

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        return metrics.contact_agreement(self.contacts(trajectory[k]), self._reference[k])["f1"]


SUMMARY = (
    SummaryStat("mean_rmsd", "rmsd", mean),
    SummaryStat("final_rmsd", "rmsd", final),
    SummaryStat("mean_mse", "mse", mean),
    SummaryStat("mean_aligned_mse", "aligned_mse", mean),
)


def compare(inputs: ReportInputs) -> dict[str, Any]:
    """The report as a JSON-ready dict: per-jump metrics, RMSF, contacts and a summary."""
    names = list(inputs.predictions)
    num_jumps = max(len(p) for p in inputs.predictions.values())
    start = inputs.reference_positions[inputs.start_frame]
    bases, references, non_finite = [], [], []
    for k in range(1, num_jumps + 1):
        time = inputs.start_time + k * inputs.dt
        frame = reference_frame_at(inputs.reference_times, time, inputs.dt)
        if frame is not None and not np.isfinite(inputs.reference_positions[frame]).all():
            non_finite.append(frame)
            frame = None  # a frame without finite coordinates is no reference: listed as such
        bases.append({"jump": k, "time_ps": time, "reference_frame": frame})
        references.append(None if frame is None else inputs.reference_positions[frame])
    trajectories = {name: with_start(start, frames) for name, frames in inputs.predictions.items()}
    table: list[JumpMetric] = [KabschRMSD(inputs.masses), PositionMSE(), AlignedMSE(), RadiusOfGyration(inputs.masses),
                               ContactF1(inputs.residue_ids)]
    if has_backbone(inputs.atom_names):
        table += [BackboneDistance(kind, inputs.atom_names, inputs.residue_ids, reduce) for kind, reduce in GEOMETRY]
    if inputs.training_frames is not None:  # jumps that land on frames the checkpoint was trained on
        low, high = inputs.training_frames
        for base in bases:
            frame = base["reference_frame"]
            base["training_frame"] = frame is not None and low <= frame <= high
    per_jump = per_jump_rows(bases, references, trajectories, table)
    matched = [row for row in per_jump if row["reference_frame"] is not None]
    report = {
        "info": inputs.info,
        "dt_ps": inputs.dt,
        "start_frame": inputs.start_frame,
        "start_time_ps": inputs.start_time,
        "jumps": num_jumps,
        "jumps_with_reference": len(matched),
        "predictors": names,
        "notes": list(inputs.notes),
        "per_jump": per_jump,
        "rmsf": _rmsf(inputs, matched),
        "summary": summarise(matched, names, "rmsd", SUMMARY, wins=("rmsd", "aligned_mse")),
    }
    if inputs.training_frames is not None:
        trained = [row["jump"] for row in per_jump if row.get("training_frame")]
        report["training_jumps"] = trained
        if trained:
            report["notes"].append(
                f"{len(trained)} of {num_jumps} jumps land on frames of this trajectory that the checkpoint was "
                f"trained on (frames {inputs.training_frames[0]}-{inputs.training_frames[1]}); they are marked T"
            )
    if has_backbone(inputs.atom_names):
        report["geometry"] = _geometry_summary(per_jump, names)
    if inputs.virtual_positions is not None and len(inputs.virtual_positions):
        report["virtual_nodes"] = virtual_node_distances(inputs.virtual_positions, inputs.predictions[MODEL],
                                                         inputs.dt)
    if non_finite:
        shown = ", ".join(str(frame) for frame in non_finite[:10]) + (", ..." if len(non_finite) > 10 else "")
        report["notes"].append(
            f"reference frame(s) {shown} hold non-finite coordinates; their jumps are listed without a reference"
        )
    missing = num_jumps - len(matched) - len(non_finite)
    if missing:
        report["notes"].append(
            f"{missing} of {num_jumps} jump times have no frame in the reference trajectory; "
            "they are listed without metrics (nothing is interpolated)"
        )
    return report


def _geometry_summary(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Means over the jumps with a reference of each backbone distance, per predictor and reference."""
    summary: dict[str, Any] = {}
    for kind, reduce in GEOMETRY:
        key = f"{reduce}_{kind}"
        scored = [row for row in rows if key in row]
        entry = {"reference": float(np.nanmean([row[f"reference_{key}"] for row in scored])) if scored else None}
        for name in names:
            values = [row[key][name] for row in scored if name in row[key]]
            entry[name] = float(np.nanmean(values)) if values else None
        summary[key] = entry
    return summary


def _rmsf(inputs: ReportInputs, matched: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-residue RMSF (Å) over the jump times that have reference frames, per predictor."""
    model_len = len(inputs.predictions[MODEL])
    usable = [row for row in matched if row["jump"] <= model_len]
    if len(usable) < 2:
        return {"note": "RMSF needs at least two rollout frames with reference frames"}
    jumps = [row["jump"] - 1 for row in usable]
    frames = [row["reference_frame"] for row in usable]
    residues, reference = metrics.per_residue(
        metrics.rmsf(inputs.reference_positions[frames], inputs.masses), inputs.residue_ids
    )
    result: dict[str, Any] = {"residues": residues.tolist(), "reference": reference.tolist(), "frames": len(frames)}
    for name, predicted in inputs.predictions.items():
        if len(predicted) < model_len:
            continue
        _, values = metrics.per_residue(metrics.rmsf(predicted[jumps], inputs.masses), inputs.residue_ids)
        result[name] = values.tolist()
    return result


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``directory``; returns the paths."""
    return write_report_files(report, directory, lambda d: write_plots(report, d), render_markdown)


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The report as Markdown: verdict, per-jump table, notes and the plots."""
    names = report["predictors"]
    info = report.get("info", {})
    doc = MarkdownDocument("Rollout report")
    info_bullets(doc, info, ("trajectory", "topology", "checkpoint", "jumps", "selection", "predicted_trajectory",
                             "virtual_trajectory"))
    doc.bullet(
        f"start frame {report['start_frame']} at {report['start_time_ps']:g} ps; {report['jumps']} jumps "
        f"of {report['dt_ps']:g} ps; {report['jumps_with_reference']} have a reference frame"
    )
    if info.get("stopped"):
        doc.bullet(f"**rollout stopped early:** {info['stopped']}")
    doc.heading("Verdict")
    summary = report["summary"]
    for name, result in summary["model_vs_trivial"].items():
        doc.bullet(
            f"the learned jump has lower RMSD than **{name}** at {result['model_lower_rmsd']} "
            f"of {result['jumps']} jumps with a reference frame"
            + (f", lower aligned MSE at {result['model_lower_aligned_mse']}" if "model_lower_aligned_mse" in result
               else "")
        )
    doc.line().line(f"Means over the {summary['jumps']} jumps where the model and the reference both have a frame. "
                    "Aligned MSE: after removing the rigid motion between the frames, which no model can predict.")
    doc.line().table(
        ["predictor", "mean RMSD (Å)", "final RMSD (Å)", "mean MSE (Å²)", "mean aligned MSE (Å²)"],
        ([name, fixed(summary["mean_rmsd"][name]), fixed(summary["final_rmsd"][name]), fixed(summary["mean_mse"][name]),
          fixed(summary.get("mean_aligned_mse", {}).get(name))] for name in names),
    )
    geometry = report.get("geometry")
    if geometry:
        doc.heading("Backbone geometry").line(
            "Mean over the jumps with a reference frame, Å: bonds within a residue (N–CA, CA–C), the peptide "
            "bond (C–N) and consecutive CA–CA distances (mean and minimum); cis_omega: the number of cis "
            "peptide bonds (|ω| < 90°)."
        ).line()
        keys = list(geometry)
        doc.table(["", *keys], [[who, *(fixed(geometry[key].get(who)) for key in keys)] for who in ["reference", *names]])
    virtual = report.get("virtual_nodes")
    if virtual:
        doc.heading("Virtual nodes").line(
            "Distance from each virtual node to the nearest atom of the model's frame, Å (the paper draws them on "
            f"the protein; the model's median radius of gyration is {virtual['model_radius_of_gyration']:.2f} Å)."
        ).line()
        doc.table(["virtual node", "first jump", "median", "largest", "last jump"],
                  [[str(c), *(fixed(virtual[key][c], 2) for key in ("first", "median", "max", "last"))]
                   for c in range(len(virtual["first"]))])
    doc.heading("Per jump").line("Kabsch RMSD (Å) to the reference frame, radius of gyration (Å), contact-map F1.").line()
    header = ["jump", "time (ps)", "ref. frame", *(f"RMSD {n}" for n in names), "Rg ref.",
              *(f"Rg {n}" for n in names), *(f"F1 {n}" for n in names)]
    rows = []
    for row in report["per_jump"]:
        if row["reference_frame"] is None:
            rows.append([str(row["jump"]), f"{row['time_ps']:g}", "no reference frame"] + [""] * (3 * len(names)))
            continue
        frame = str(row["reference_frame"]) + (" T" if row.get("training_frame") else "")
        rows.append(
            [str(row["jump"]), f"{row['time_ps']:g}", frame]
            + [fixed(row["rmsd"].get(n)) for n in names]
            + [fixed(row["reference_radius_of_gyration"], 2)]
            + [fixed(row["radius_of_gyration"].get(n), 2) for n in names]
            + [fixed(row["contact_f1"].get(n)) for n in names]
        )
    doc.table(header, rows, numeric=False)
    return doc.notes(report["notes"]).plots(plots).render()


def write_plots(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """RMSD/MSE vs time, radius of gyration, per-residue RMSF and contact F1 as PNG files."""
    rows = [row for row in report["per_jump"] if row["reference_frame"] is not None]
    names = report["predictors"]
    plots = PlotSet(directory)
    if not rows:
        return plots.paths

    fig = new_figure((15, 3.8))
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, ("rmsd", "mse", "aligned_mse")):
        plot_predictors(ax, rows, "time_ps", metric, names)
    axes[0].set_ylabel("Kabsch RMSD to reference (Å)")
    axes[1].set_ylabel("position MSE (Å²)")
    axes[2].set_ylabel("aligned MSE (Å²)")
    for ax in axes:
        ax.set_xlabel("time (ps)")
        ax.set_yscale("log")  # a drifting trivial predictor would otherwise flatten the others
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    plots.save(fig, "rmsd")

    # The comparison that matters, on its own scale: each predictor's error relative to no motion's.
    if "no motion" in names and any("no motion" in row["aligned_mse"] for row in rows):
        fig = new_figure()
        ax = fig.subplots(1, 1)
        for name in names:
            if name == "no motion":
                continue
            points = [(row["time_ps"], row["aligned_mse"][name] / row["aligned_mse"]["no motion"]) for row in rows
                      if name in row["aligned_mse"] and row["aligned_mse"].get("no motion")]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=name)
        ax.axhline(1.0, color="k", lw=1, ls="--", label="no motion")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("aligned MSE / no motion's")
        ax.set_ylim(0.0, 2.0)  # above 2 the predictor is far worse than standing still: off the scale
        ax.grid(alpha=0.3)
        ax.legend()
        plots.save(fig, "versus_no_motion")

    fig = new_figure()
    ax = fig.subplots(1, 1)
    ax.plot([r["time_ps"] for r in rows], [r["reference_radius_of_gyration"] for r in rows], "k-", lw=2, label="reference")
    plot_predictors(ax, rows, "time_ps", "radius_of_gyration", names)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("radius of gyration (Å)")
    ax.grid(alpha=0.3)
    ax.legend()
    plots.save(fig, "radius_of_gyration")

    fig = new_figure()
    ax = fig.subplots(1, 1)
    plot_predictors(ax, rows, "time_ps", "contact_f1", names)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel(f"contact-map F1 (< {CONTACT_CUTOFF:g} Å)")
    ax.grid(alpha=0.3)
    ax.legend()
    plots.save(fig, "contacts")

    virtual = report.get("virtual_nodes")
    if virtual:
        fig = new_figure()
        ax = fig.subplots(1, 1)
        for c, distances in enumerate(virtual["distance"]):
            ax.plot(virtual["time_ps"], distances, marker="o", ms=2, label=f"virtual node {c}")
        ax.axhline(virtual["model_radius_of_gyration"], color="k", lw=1, ls="--", label="Rg of the model's frames")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("distance to the nearest atom (Å)")
        ax.grid(alpha=0.3)
        ax.legend()
        plots.save(fig, "virtual_nodes")

    rmsf = report["rmsf"]
    if "residues" in rmsf:
        fig = new_figure((10, 3.5))
        ax = fig.subplots(1, 1)
        ax.plot(rmsf["residues"], rmsf["reference"], "k-", lw=2, label="reference")
        for name in names:
            if name in rmsf:
                ax.plot(rmsf["residues"], rmsf[name], lw=1, label=name)
        ax.set_xlabel("residue")
        ax.set_ylabel("RMSF (Å)")
        ax.grid(alpha=0.3)
        ax.legend()
        plots.save(fig, "rmsf")
    return plots.paths

