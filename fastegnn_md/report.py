"""Rollout report: the learned jump against the reference frames and the trivial predictors.

Inputs are plain arrays (positions Å, times ps); output is ``report.json``, ``report.md`` and
PNG plots in one directory, each written atomically. Where the reference trajectory has no
frame at a rollout time, that jump is listed with ``reference_frame = null`` and no metric:
nothing is interpolated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import metrics
from .io import write_atomically

#: Residue-residue contact cutoff (Å) and minimum sequence separation of the contact maps.
CONTACT_CUTOFF = 8.0
CONTACT_MIN_SEPARATION = 3
MODEL = "model"


@dataclass
class ReportInputs:
    """Everything the report compares.

    predictions : {predictor name: (K, N, 3) Å} for jumps 1..K (the model's may be shorter if
        the rollout stopped); must include ``"model"``.
    start_time : time of the start frame (ps); jump k is at start_time + k·dt.
    reference_positions : (T, N, 3) Å, reference_times : (T,) ps: every frame of the trajectory.
    masses : (N,) amu or None; residue_ids : (N,) residue of each atom.
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


def reference_frame_at(times: np.ndarray, time: float, dt: float) -> Optional[int]:
    """Index of the frame at ``time`` (ps) within 0.1 % of the jump length, else None."""
    if times.size == 0:
        return None
    index = int(np.argmin(np.abs(times - time)))
    return index if abs(float(times[index]) - time) <= 1e-3 * dt else None


def compare(inputs: ReportInputs) -> dict[str, Any]:
    """The report as a JSON-ready dict: per-jump metrics, RMSF, contacts and a summary."""
    names = list(inputs.predictions)
    num_jumps = max(len(p) for p in inputs.predictions.values())
    ref_pos, masses = inputs.reference_positions, inputs.masses
    ref_contacts_cache: dict[int, np.ndarray] = {}
    per_jump: list[dict[str, Any]] = []
    for k in range(1, num_jumps + 1):
        time = inputs.start_time + k * inputs.dt
        frame = reference_frame_at(inputs.reference_times, time, inputs.dt)
        row: dict[str, Any] = {"jump": k, "time_ps": time, "reference_frame": frame}
        if frame is None:
            per_jump.append(row)
            continue
        reference = ref_pos[frame]
        if frame not in ref_contacts_cache:
            ref_contacts_cache[frame] = _contacts(reference, inputs.residue_ids)
        row["reference_radius_of_gyration"] = float(metrics.radius_of_gyration(reference, masses))
        for metric in ("rmsd", "mse", "radius_of_gyration", "contact_f1"):
            row[metric] = {}
        for name in names:
            if len(inputs.predictions[name]) < k:
                continue
            predicted = inputs.predictions[name][k - 1]
            row["rmsd"][name] = metrics.kabsch_rmsd(predicted, reference, masses)
            row["mse"][name] = metrics.position_mse(predicted, reference)
            row["radius_of_gyration"][name] = float(metrics.radius_of_gyration(predicted, masses))
            agreement = metrics.contact_agreement(_contacts(predicted, inputs.residue_ids), ref_contacts_cache[frame])
            row["contact_f1"][name] = agreement["f1"]
        per_jump.append(row)
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
        "summary": _summary(matched, names),
    }
    if len(matched) < num_jumps:
        missing = num_jumps - len(matched)
        report["notes"].append(
            f"{missing} of {num_jumps} jump times have no frame in the reference trajectory; "
            "they are listed without metrics (nothing is interpolated)"
        )
    return report


def _contacts(positions: np.ndarray, residue_ids: np.ndarray) -> np.ndarray:
    return metrics.contact_map(positions, CONTACT_CUTOFF, residue_ids, CONTACT_MIN_SEPARATION)


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


def _summary(matched: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Means over the jumps where the model has a frame, so every predictor is scored on the
    same jumps even when the rollout stopped early."""
    matched = [row for row in matched if MODEL in row["rmsd"]]
    summary: dict[str, Any] = {"mean_rmsd": {}, "final_rmsd": {}, "mean_mse": {}, "jumps": len(matched)}
    for name in names:
        rmsd = [row["rmsd"][name] for row in matched if name in row["rmsd"]]
        mse = [row["mse"][name] for row in matched if name in row["mse"]]
        summary["mean_rmsd"][name] = float(np.mean(rmsd)) if rmsd else None
        summary["final_rmsd"][name] = rmsd[-1] if rmsd else None
        summary["mean_mse"][name] = float(np.mean(mse)) if mse else None
    wins = {}
    for name in names:
        if name == MODEL:
            continue
        both = [row for row in matched if MODEL in row["rmsd"] and name in row["rmsd"]]
        wins[name] = {"model_lower_rmsd": sum(row["rmsd"][MODEL] < row["rmsd"][name] for row in both),
                      "jumps": len(both)}
    summary["model_vs_trivial"] = wins
    return summary


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``directory``; returns the paths."""
    return write_report_files(report, directory, lambda d: write_plots(report, d), render_markdown)


def write_report_files(
    report: dict[str, Any],
    directory: Path,
    write_plots: Callable[[Path], dict[str, Path]],
    render_markdown: Callable[[dict[str, Any], dict[str, str]], str],
) -> dict[str, Path]:
    """The file set of every report, each file written atomically: report.json, the plots that
    ``write_plots(directory)`` writes ({name: path}), and report.md from
    ``render_markdown(report, {name: plot file name})``. Returns {"json", "markdown", plots...}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
    text = json.dumps(report, indent=2, default=_json_default) + "\n"
    write_atomically(paths["json"], lambda h: h.write(text.encode()))
    plots = write_plots(directory)
    paths.update(plots)
    markdown = render_markdown(report, {k: p.name for k, p in plots.items()})
    write_atomically(paths["markdown"], lambda h: h.write(markdown.encode()))
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The report as Markdown: verdict, per-jump table, notes and the plots."""
    names = report["predictors"]
    info = report.get("info", {})
    lines = ["# Rollout report", ""]
    for key in ("trajectory", "topology", "checkpoint", "selection", "predicted_trajectory", "virtual_trajectory"):
        if key in info:
            lines.append(f"- {key.replace('_', ' ')}: `{info[key]}`")
    lines.append(
        f"- start frame {report['start_frame']} at {report['start_time_ps']:g} ps; {report['jumps']} jumps "
        f"of {report['dt_ps']:g} ps; {report['jumps_with_reference']} have a reference frame"
    )
    if info.get("stopped"):
        lines.append(f"- **rollout stopped early:** {info['stopped']}")
    lines += ["", "## Verdict", ""]
    summary = report["summary"]
    for name, result in summary["model_vs_trivial"].items():
        lines.append(
            f"- the learned jump has lower RMSD than **{name}** at {result['model_lower_rmsd']} "
            f"of {result['jumps']} jumps with a reference frame"
        )
    lines.append(f"\nMeans over the {summary['jumps']} jumps where the model and the reference both have a frame.")
    lines += ["", "| predictor | mean RMSD (Å) | final RMSD (Å) | mean MSE (Å²) |", "|---|---:|---:|---:|"]
    for name in names:
        lines.append(
            f"| {name} | {_fmt(summary['mean_rmsd'][name])} | {_fmt(summary['final_rmsd'][name])} "
            f"| {_fmt(summary['mean_mse'][name])} |"
        )
    lines += ["", "## Per jump", "", "Kabsch RMSD (Å) to the reference frame, radius of gyration (Å), contact-map F1.", ""]
    header = "| jump | time (ps) | ref. frame | " + " | ".join(f"RMSD {n}" for n in names)
    header += " | Rg ref. | " + " | ".join(f"Rg {n}" for n in names) + " | " + " | ".join(f"F1 {n}" for n in names) + " |"
    lines += [header, "|" + "---|" * (3 + 3 * len(names) + 1)]
    for row in report["per_jump"]:
        if row["reference_frame"] is None:
            cells = ["no reference frame"] + [""] * (3 * len(names))
            lines.append(f"| {row['jump']} | {row['time_ps']:g} | " + " | ".join(cells) + " |")
            continue
        rmsd = [_fmt(row["rmsd"].get(n)) for n in names]
        rg = [_fmt(row["radius_of_gyration"].get(n), 2) for n in names]
        f1 = [_fmt(row["contact_f1"].get(n)) for n in names]
        lines.append(
            f"| {row['jump']} | {row['time_ps']:g} | {row['reference_frame']} | " + " | ".join(rmsd)
            + f" | {_fmt(row['reference_radius_of_gyration'], 2)} | " + " | ".join(rg) + " | " + " | ".join(f1) + " |"
        )
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """RMSD/MSE vs time, radius of gyration, per-residue RMSF and contact F1 as PNG files."""
    # Figures are made without pyplot so that writing a report never changes the plotting
    # backend of the caller's session (a notebook keeps its inline plots).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def subplots(ncols: int = 1, figsize: tuple[float, float] = (5.5, 3.8)) -> tuple[Any, Any]:
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, ncols)
        return fig, axes

    rows = [row for row in report["per_jump"] if row["reference_frame"] is not None]
    names = report["predictors"]
    paths: dict[str, Path] = {}
    if not rows:
        return paths

    def save(fig: Any, name: str) -> None:
        path = directory / f"{name}.png"

        def write(handle: Any) -> None:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")

        write_atomically(path, write)
        paths[name] = path

    def series(metric: str, name: str) -> tuple[list[float], list[float]]:
        points = [(row["time_ps"], row[metric][name]) for row in rows if name in row[metric]]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = subplots(2, figsize=(10, 3.8))
    for name in names:
        for ax, metric in zip(axes, ("rmsd", "mse")):
            ax.plot(*series(metric, name), marker="o", ms=3, label=name)
    axes[0].set_ylabel("Kabsch RMSD to reference (Å)")
    axes[1].set_ylabel("position MSE (Å²)")
    for ax in axes:
        ax.set_xlabel("time (ps)")
        ax.set_yscale("log")  # a drifting trivial predictor would otherwise flatten the others
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    save(fig, "rmsd")

    fig, ax = subplots()
    ax.plot([r["time_ps"] for r in rows], [r["reference_radius_of_gyration"] for r in rows], "k-", lw=2, label="reference")
    for name in names:
        ax.plot(*series("radius_of_gyration", name), marker="o", ms=3, label=name)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("radius of gyration (Å)")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "radius_of_gyration")

    fig, ax = subplots()
    for name in names:
        ax.plot(*series("contact_f1", name), marker="o", ms=3, label=name)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel(f"contact-map F1 (< {CONTACT_CUTOFF:g} Å)")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "contacts")

    rmsf = report["rmsf"]
    if "residues" in rmsf:
        fig, ax = subplots(figsize=(10, 3.5))
        ax.plot(rmsf["residues"], rmsf["reference"], "k-", lw=2, label="reference")
        for name in names:
            if name in rmsf:
                ax.plot(rmsf["residues"], rmsf[name], lw=1, label=name)
        ax.set_xlabel("residue")
        ax.set_ylabel("RMSF (Å)")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "rmsf")
    return paths
