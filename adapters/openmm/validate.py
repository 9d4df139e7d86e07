"""`fastegnn-md validate`: the learned OpenMM stepper against ordinary MD of the same system.

From one common start, two Simulations of the same System advance the same simulated time:

* **reference**: ordinary Langevin MD, ``steps_per_jump`` integrator steps per Δt;
* **stepper**: `FastEGNNStepper` (guarded), one learned jump per Δt.

Common start: prepare the structure, minimise, equilibrate (``settings.equilibration_ps``), then
one more Δt of ordinary MD whose first and last positions give the stepper its jump history (the
model takes the mean velocity over the previous Δt). Neither run's timing includes the start.

The two runs are advanced **interleaved**, one Δt each in turn, and each Δt is timed on its own:
this machine is shared, and interleaving makes both runs see the same background load, so their
ratio (the speed-up) is meaningful even when absolute times drift.

Measured per Δt (units: Å, ps, kJ/mol, seconds of wall time): Kabsch RMSD between the two runs'
selected atoms, each run's RMSD to the common start (the scale of the motion in that time),
radius of gyration of the selected atoms, the full system's potential energy, whether the jump
was accepted, wall time. Both Langevin runs are stochastic, so the RMSD between them grows even
for two exact MD runs; the report gives it beside the RMSD-to-start of each.

Output directory: ``validation.json`` (everything), ``validation.md`` (tables), ``validation.png``
(RMSD, Rg and PE over time, PE and Rg histograms), ``reference.xtc`` and ``stepper.xtc`` (selected
atoms, one frame per Δt, frame 0 the common start) with ``selected.pdb``. After every Δt the state
of both runs is saved to ``validation.checkpoint.npz``; running the same command again resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from tqdm.auto import tqdm

from ... import metrics
from ...errors import DataError
from ...io import write_atomically
from ...predictor import Predictor
from ...reports.files import write_report_files
from ...reports.markdown import MarkdownDocument
from ...reports.plots import PlotSet, new_figure
from ..mdanalysis.writers import standalone_universe, write_pdb
from .reference import write_trajectory
from .stepper import FastEGNNStepper
from .system import (
    SimulationSettings,
    build_system,
    make_simulation,
    minimise_and_equilibrate,
    prepare_structure,
    quiet_mdanalysis,
    select_atoms,
    step_with_bar,
)
from .units import app, nm_to_angstrom, openmm, unit

CHECKPOINT_VERSION = 1
SPEED_UP_GOAL = 20.0


@dataclass
class ValidationResult:
    directory: Path
    report: dict[str, Any]

    def summary(self) -> str:
        s = self.report["summary"]
        return (
            f"{s['jumps']} jumps of {s['dt_ps']} ps: speed-up {s['speed_up']:.1f}x "
            f"({s['stepper_ns_per_day']:.3g} vs {s['reference_ns_per_day']:.3g} ns/day), "
            f"{s['rejected']} rejected, RMSD stepper-reference {s['rmsd_between_final']:.2f} Å at the end "
            f"(reference moved {s['rmsd_reference_to_start_final']:.2f} Å from the start); "
            f"report {self.directory / 'validation.md'}"
        )


def validate(
    structure: Any,
    out_dir: Any,
    checkpoint: Any = "adk-backbone",
    settings: SimulationSettings = SimulationSettings(),
    jumps: int = 10,
    threads: Optional[int] = None,
    stepper_options: Optional[dict[str, Any]] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ValidationResult:
    """Run the stepper and ordinary MD side by side for ``jumps`` × Δt; write the report.

    structure : PDB/PDBx file, prepared as `simulate` does (the system the checkpoint was
        trained on, e.g. the shipped ``trajectories/adk-obc/adk_obc.pdb`` for ``adk-backbone``).
    settings : force field, solvent, integrator, temperature, minimisation and equilibration of
        the common start (its ``length_ps``/``frame_interval_ps`` are not used; ``seed`` seeds the
        start velocities, both integrators and the stepper's thermal velocities).
    stepper_options : keyword arguments for `FastEGNNStepper` (relax_steps, minimise_iterations, ...).
    """
    out_dir, structure = Path(out_dir), Path(structure)
    if int(jumps) < 1:
        raise DataError(f"jumps: must be at least 1, got {jumps}")
    jumps = int(jumps)
    predictor = checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
    options = dict(stepper_options or {})
    options.setdefault("seed", settings.seed)

    topology, positions = prepare_structure(structure, settings.ph)
    system = build_system(topology, settings)
    system_xml = openmm.XmlSerializer.serialize(system)
    reference = make_simulation(topology, system, settings, threads)
    learned = make_simulation(topology, openmm.XmlSerializer.deserialize(system_xml), settings, threads)
    learned.context.setPositions(positions)
    stepper = FastEGNNStepper(learned, predictor, **options)
    selected = stepper.selected
    masses = np.array([system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in selected])
    n_steps = stepper.steps_per_jump

    key = _run_key(structure, settings, predictor, options)
    ckpt_file = out_dir / "validation.checkpoint.npz"
    out_dir.mkdir(parents=True, exist_ok=True)
    if ckpt_file.exists():
        record = _resume(ckpt_file, key, reference, learned, stepper)
        log(f"resuming {out_dir} at jump {len(record['pe_reference']) - 1} of {jumps}")
    else:
        start_previous = _common_start(reference, positions, settings, selected, n_steps, progress, log)
        _branch(reference, learned)
        stepper.set_history(start_previous)
        start = _selected(reference, selected)
        energy = _energy(reference)
        record = {
            "reference_frames": [start], "stepper_frames": [start], "pe_reference": [energy], "pe_stepper": [energy],
            "wall_reference": [], "wall_stepper": [], "accepted": [], "rejection": [],
        }
    _write_topology(topology, positions, stepper.selection, out_dir / "selected.pdb")

    done = len(record["pe_reference"]) - 1
    bar = tqdm(total=jumps, initial=min(done, jumps), desc="validating", unit="jump", disable=not progress)
    try:
        while len(record["pe_reference"]) - 1 < jumps:
            t0 = time.perf_counter()
            reference.step(n_steps)
            t1 = time.perf_counter()
            before = stepper.accepted
            stepper.step(1)
            t2 = time.perf_counter()
            record["wall_reference"].append(t1 - t0)
            record["wall_stepper"].append(t2 - t1)
            record["accepted"].append(stepper.accepted > before)
            record["rejection"].append("" if stepper.accepted > before else str(stepper.last_rejection))
            record["reference_frames"].append(_selected(reference, selected))
            record["stepper_frames"].append(_selected(learned, selected))
            record["pe_reference"].append(_energy(reference))
            record["pe_stepper"].append(_energy(learned))
            _save(ckpt_file, key, reference, learned, stepper, record)
            bar.update(1)
            bar.set_postfix_str(f"speed-up {sum(record['wall_reference']) / sum(record['wall_stepper']):.1f}x")
    finally:
        bar.close()

    report = build_report(record, masses, stepper, settings, structure, str(checkpoint), options)
    _write_outputs(out_dir, report, record)
    return ValidationResult(out_dir, report)


# -- the common start ----------------------------------------------------------------------------


def _common_start(
    simulation: "app.Simulation", positions: Any, settings: SimulationSettings, selected: np.ndarray,
    steps_per_jump: int, progress: bool, log: Callable[[str], None],
) -> np.ndarray:
    """Minimise, equilibrate, one Δt of MD; returns the selected atoms (Å) one Δt before its end."""
    minimise_and_equilibrate(simulation, positions, settings, progress, log)
    previous = _selected(simulation, selected)
    step_with_bar(simulation, steps_per_jump, "history Δt", progress)
    return previous


def _branch(reference: "app.Simulation", learned: "app.Simulation") -> None:
    """Copy the reference's positions and velocities into ``learned``; both clocks restart at 0."""
    state = reference.context.getState(getPositions=True, getVelocities=True)
    learned.context.setPositions(state.getPositions(asNumpy=True))
    learned.context.setVelocities(state.getVelocities(asNumpy=True))
    for simulation in (reference, learned):
        simulation.context.setTime(0.0)
        simulation.currentStep = 0


def _selected(simulation: "app.Simulation", selected: np.ndarray) -> np.ndarray:
    state = simulation.context.getState(getPositions=True)
    return nm_to_angstrom(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[selected]


def _energy(simulation: "app.Simulation") -> float:
    return simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


# -- report ----------------------------------------------------------------------------------------


def build_report(
    record: dict[str, Any], masses: np.ndarray, stepper: "FastEGNNStepper", settings: SimulationSettings,
    structure: Path, checkpoint: str, options: dict[str, Any],
) -> dict[str, Any]:
    """Per-jump rows and the summary (Å, ps, kJ/mol, s) from the recorded runs."""
    ref = np.asarray(record["reference_frames"], dtype=np.float64)
    learn = np.asarray(record["stepper_frames"], dtype=np.float64)
    dt = stepper.dt_ps
    rows = []
    for k in range(len(ref)):
        rows.append({
            "jump": k, "time_ps": k * dt,
            "rmsd_between": metrics.kabsch_rmsd(learn[k], ref[k]),
            "rmsd_reference_to_start": metrics.kabsch_rmsd(ref[k], ref[0]),
            "rmsd_stepper_to_start": metrics.kabsch_rmsd(learn[k], ref[0]),
            "rg_reference": float(metrics.radius_of_gyration(ref[k], masses)),
            "rg_stepper": float(metrics.radius_of_gyration(learn[k], masses)),
            "pe_reference": record["pe_reference"][k], "pe_stepper": record["pe_stepper"][k],
            "accepted": None if k == 0 else bool(record["accepted"][k - 1]),
            "rejection": None if k == 0 else record["rejection"][k - 1] or None,
            "wall_reference_s": None if k == 0 else record["wall_reference"][k - 1],
            "wall_stepper_s": None if k == 0 else record["wall_stepper"][k - 1],
        })
    jumps = len(ref) - 1
    wall_ref, wall_learn = float(np.sum(record["wall_reference"])), float(np.sum(record["wall_stepper"]))
    simulated_ns = jumps * dt / 1000.0
    ratios = np.asarray(record["wall_reference"]) / np.asarray(record["wall_stepper"])
    later = rows[1:]

    def stats(name: str) -> dict[str, float]:
        values = np.array([row[name] for row in later])
        return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                "max": float(values.max())}

    rejected = int(sum(not a for a in record["accepted"]))
    summary = {
        "jumps": jumps, "dt_ps": dt, "simulated_ps": jumps * dt, "steps_per_jump": stepper.steps_per_jump,
        "rejected": rejected, "rejected_fraction": rejected / jumps,
        "rmsd_between_mean": float(np.mean([r["rmsd_between"] for r in later])),
        "rmsd_between_final": rows[-1]["rmsd_between"],
        "rmsd_reference_to_start_final": rows[-1]["rmsd_reference_to_start"],
        "rmsd_stepper_to_start_final": rows[-1]["rmsd_stepper_to_start"],
        "rg_reference": stats("rg_reference"), "rg_stepper": stats("rg_stepper"),
        "pe_reference": stats("pe_reference"), "pe_stepper": stats("pe_stepper"),
        "reference_wall_s": wall_ref, "stepper_wall_s": wall_learn,
        "reference_s_per_ns": wall_ref / simulated_ns, "stepper_s_per_ns": wall_learn / simulated_ns,
        "reference_ns_per_day": simulated_ns * 86400.0 / wall_ref,
        "stepper_ns_per_day": simulated_ns * 86400.0 / wall_learn,
        "speed_up": wall_ref / wall_learn, "speed_up_median_per_jump": float(np.median(ratios)),
        "speed_up_goal": SPEED_UP_GOAL, "speed_up_goal_met": bool(wall_ref / wall_learn >= SPEED_UP_GOAL),
    }
    return {
        "format": "fastegnn-md validation", "structure": str(structure), "settings": asdict(settings),
        "checkpoint": checkpoint, "stepper": stepper.summary(),
        "stepper_options": options, "selected_atoms": int(len(masses)), "summary": summary, "per_jump": rows,
    }


def render_markdown(report: dict[str, Any], plots: Optional[dict[str, str]] = None) -> str:
    """The validation report as Markdown (the reports' renderer): set-up, summary table, speed-up,
    per-jump table, the plot (``plots``: {name: file}, default validation.png)."""
    s = report["summary"]
    st = report["stepper"]
    settings = report["settings"]
    doc = MarkdownDocument("FastEGNN stepper vs ordinary OpenMM MD")
    doc.line(
        f"Structure `{report['structure']}`, {settings['forcefield']} + {settings['solvent']}, "
        f"{settings['timestep_fs']} fs steps, {settings['temperature_k']} K; "
        f"{s['jumps']} jumps of Δt = {s['dt_ps']} ps ({s['steps_per_jump']} steps) from a common start; "
        f"{report['selected_atoms']} atoms (`{st['selection']}`) compared. Stepper: {st['relax_steps']} relax steps, "
        f"{st['minimise_iterations']} descent iterations, velocity policy {st['velocity_policy']}, "
        f"guarded = {st['guarded']}."
    ).line()

    def mean_sd(stats: dict[str, float], digits: int) -> str:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    doc.table(["", "reference MD", "learned stepper"], [
        ["wall time per simulated ns", f"{s['reference_s_per_ns']:.4g} s", f"{s['stepper_s_per_ns']:.4g} s"],
        ["ns/day", f"{s['reference_ns_per_day']:.3g}", f"{s['stepper_ns_per_day']:.3g}"],
        ["Rg (Å), mean ± sd", mean_sd(s["rg_reference"], 2), mean_sd(s["rg_stepper"], 2)],
        ["potential energy (kJ/mol), mean ± sd", mean_sd(s["pe_reference"], 0), mean_sd(s["pe_stepper"], 0)],
        ["RMSD to the common start at the end (Å)", f"{s['rmsd_reference_to_start_final']:.2f}",
         f"{s['rmsd_stepper_to_start_final']:.2f}"],
    ], numeric=False)
    doc.line().line(
        f"**Speed-up {s['speed_up']:.1f}×** (total wall time ratio; median per-jump ratio "
        f"{s['speed_up_median_per_jump']:.1f}×; goal {s['speed_up_goal']:.0f}×: "
        f"{'met' if s['speed_up_goal_met'] else 'not met'}). Rejected jumps: {s['rejected']} of {s['jumps']} "
        f"({100 * s['rejected_fraction']:.0f} %). RMSD between the runs: mean {s['rmsd_between_mean']:.2f} Å, "
        f"{s['rmsd_between_final']:.2f} Å at the end."
    ).line()
    rows = []
    for r in report["per_jump"]:
        wall = ("–", "–") if r["wall_reference_s"] is None else (f"{r['wall_reference_s']:.2f}", f"{r['wall_stepper_s']:.2f}")
        accepted = "start" if r["accepted"] is None else ("yes" if r["accepted"] else f"no ({r['rejection']})")
        rows.append([
            str(r["jump"]), f"{r['time_ps']:g}", f"{r['rmsd_between']:.2f}", f"{r['rmsd_reference_to_start']:.2f}",
            f"{r['rmsd_stepper_to_start']:.2f}", f"{r['rg_reference']:.2f}", f"{r['rg_stepper']:.2f}",
            f"{r['pe_reference']:.0f}", f"{r['pe_stepper']:.0f}", accepted, wall[0], wall[1],
        ])
    doc.table(["jump", "t (ps)", "RMSD between (Å)", "ref→start (Å)", "stepper→start (Å)", "Rg ref", "Rg stepper",
               "PE ref", "PE stepper", "accepted", "wall ref (s)", "wall stepper (s)"], rows, numeric=False)
    doc.line().line("Both runs are Langevin dynamics: even two exact MD runs drift apart, so read the RMSD between "
                    "them beside each run's RMSD to the start.").line()
    for name, file in (plots or {"validation": "validation.png"}).items():
        doc.line(f"![{name}]({file})")
    return doc.render()


def write_plot(report: dict[str, Any], path: Path) -> None:
    """RMSD, Rg and potential energy over time, their distributions and the cost per Δt, as one PNG."""
    rows = report["per_jump"]
    t = [r["time_ps"] for r in rows]
    fig = new_figure((13, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    ax = axes[0, 0]
    ax.plot(t, [r["rmsd_between"] for r in rows], "o-", label="stepper vs reference")
    ax.plot(t, [r["rmsd_reference_to_start"] for r in rows], "s--", label="reference vs start")
    ax.plot(t, [r["rmsd_stepper_to_start"] for r in rows], "^--", label="stepper vs start")
    ax.set(xlabel="simulated time (ps)", ylabel="Kabsch RMSD (Å)", title="RMSD")
    ax.legend(fontsize=8)
    for ax, key, label in ((axes[0, 1], "rg", "Rg (Å)"), (axes[0, 2], "pe", "potential energy (kJ/mol)")):
        ax.plot(t, [r[f"{key}_reference"] for r in rows], "s-", label="reference MD")
        ax.plot(t, [r[f"{key}_stepper"] for r in rows], "o-", label="stepper")
        rejected = [r for r in rows if r["accepted"] is False]
        if rejected:
            ax.plot([r["time_ps"] for r in rejected], [r[f"{key}_stepper"] for r in rejected], "rx", ms=10,
                    label="rejected jump (MD)")
        ax.set(xlabel="simulated time (ps)", ylabel=label, title=label)
        ax.legend(fontsize=8)
    for ax, key, label in ((axes[1, 0], "pe", "potential energy (kJ/mol)"), (axes[1, 1], "rg", "Rg (Å)")):
        ref = [r[f"{key}_reference"] for r in rows[1:]]
        learn = [r[f"{key}_stepper"] for r in rows[1:]]
        bins = np.histogram_bin_edges(ref + learn, bins=15)
        ax.hist(ref, bins=bins, alpha=0.6, label="reference MD")
        ax.hist(learn, bins=bins, alpha=0.6, label="stepper")
        ax.set(xlabel=label, ylabel="jumps", title=f"{label} distribution")
        ax.tick_params(axis="x", labelrotation=30)  # five-digit energies overlap otherwise
        ax.legend(fontsize=8)
    ax = axes[1, 2]
    ax.plot(t[1:], [r["wall_reference_s"] for r in rows[1:]], "s-", label="reference MD")
    ax.plot(t[1:], [r["wall_stepper_s"] for r in rows[1:]], "o-", label="stepper")
    ax.set(xlabel="simulated time (ps)", ylabel="wall seconds per Δt", yscale="log", title="cost per Δt")
    ax.legend(fontsize=8)
    PlotSet(path.parent).save(fig, path.stem, tight=False)  # constrained layout already fits the panels


def _write_outputs(out_dir: Path, report: dict[str, Any], record: dict[str, Any]) -> None:
    def plots(directory: Path) -> dict[str, Path]:
        write_plot(report, directory / "validation.png")
        return {"validation": directory / "validation.png"}

    write_report_files(report, out_dir, plots, render_markdown, stem="validation")
    frames = {"reference.xtc": record["reference_frames"], "stepper.xtc": record["stepper_frames"]}
    for name, positions in frames.items():
        positions = np.asarray(positions, dtype=np.float32)
        write_trajectory(out_dir / name, out_dir / "selected.pdb", positions, np.zeros_like(positions),
                         report["summary"]["dt_ps"])


def _write_topology(topology: "app.Topology", positions: Any, selection: str, path: Path) -> None:
    pdb = io.StringIO()
    app.PDBFile.writeFile(topology, positions, pdb, keepIds=True)
    atoms = select_atoms(pdb.getvalue(), selection)
    with quiet_mdanalysis():
        write_pdb(standalone_universe(atoms), atoms.positions, path)


# -- resume ----------------------------------------------------------------------------------------


def _run_key(structure: Path, settings: SimulationSettings, predictor: Any, options: dict[str, Any]) -> str:
    payload = {
        "structure": hashlib.sha256(structure.read_bytes()).hexdigest(), "settings": asdict(settings),
        "model": _model_fingerprint(predictor),
        "options": options, "version": CHECKPOINT_VERSION,
    }
    payload["settings"].pop("length_ps", None)
    payload["settings"].pop("frame_interval_ps", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _model_fingerprint(predictor: Any) -> str:
    digest = hashlib.sha256(json.dumps(predictor.spec.as_dict(), sort_keys=True, default=str).encode())
    for name, tensor in predictor.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


RECORD_ARRAYS = ("reference_frames", "stepper_frames", "pe_reference", "pe_stepper", "wall_reference",
                 "wall_stepper", "accepted")
STEPPER_COUNTERS = ("accepted", "rejected", "jumps", "warm_up_jumps")


def _save(
    path: Path, key: str, reference: "app.Simulation", learned: "app.Simulation",
    stepper: "FastEGNNStepper", record: dict[str, Any],
) -> None:
    previous, last = stepper.history
    arrays = {name: np.asarray(record[name]) for name in RECORD_ARRAYS}
    arrays.update({
        "key": np.array(key), "rejection": np.array(record["rejection"], dtype=str),
        "reference_state": np.frombuffer(reference.context.createCheckpoint(), dtype=np.uint8),
        "stepper_state": np.frombuffer(learned.context.createCheckpoint(), dtype=np.uint8),
        "steps": np.array([reference.currentStep, learned.currentStep]),
        "counters": np.array([getattr(stepper, name) for name in STEPPER_COUNTERS]),
        "history_previous": previous, "history_last": last,
    })

    def write(handle: Any) -> None:
        np.savez(handle, **arrays)

    write_atomically(path, write)


def _resume(
    path: Path, key: str, reference: "app.Simulation", learned: "app.Simulation", stepper: "FastEGNNStepper"
) -> dict[str, Any]:
    try:
        with np.load(path) as data:
            if str(data["key"]) != key:
                raise DataError(f"{path}: was written for another structure, model or settings; delete it to start over")
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: unreadable validation checkpoint ({exc}); delete it to start over") from None
    try:
        reference.context.loadCheckpoint(arrays["reference_state"].tobytes())
        learned.context.loadCheckpoint(arrays["stepper_state"].tobytes())
    except Exception as exc:  # OpenMMException: another platform or OpenMM version
        raise DataError(f"{path}: OpenMM cannot load it here ({exc}); delete it to start over") from None
    reference.currentStep, learned.currentStep = (int(v) for v in arrays["steps"])
    for name, value in zip(STEPPER_COUNTERS, arrays["counters"]):
        setattr(stepper, name, int(value))
    stepper.set_history(arrays["history_previous"])  # the Context is back at history_last
    record = {name: list(arrays[name]) for name in RECORD_ARRAYS}
    record["accepted"] = [bool(a) for a in record["accepted"]]
    record["rejection"] = [str(r) for r in arrays["rejection"]]
    return record
