"""`fastegnn-md validate`: the learned OpenMM stepper against ordinary MD of the same system.

From one common start, Simulations of the same System advance the same simulated time:

* **reference**: ordinary Langevin MD, ``steps_per_jump`` integrator steps per Δt;
* **reference replicas** 1..R−1 (``reference_replicas`` = R, CLI ``--reference-replicas``,
  default 2 there): the same MD from the same positions and velocities, replica k's Langevin
  integrator seeded ``settings.seed + 1000 k``, so their spread is how far apart two MD runs land;
* **stepper**: `FastEGNNStepper` (guarded), one learned jump per Δt.

Common start: prepare the structure, minimise, equilibrate (``settings.equilibration_ps``), then
one more Δt of ordinary MD whose first and last positions give the stepper its jump history (the
model takes the mean velocity over the previous Δt). Neither run's timing includes the start.

The runs are advanced **interleaved**, one Δt each in turn. Reference replica 0 and the stepper
are each timed per Δt: this machine is shared, and interleaving makes both see the same
background load, so their ratio (the speed-up) is meaningful even when absolute times drift.
The further replicas are not timed.

Measured per Δt (units: Å, ps, kJ/mol, seconds of wall time): Kabsch RMSD between the stepper's
and reference replica 0's selected atoms, each run's RMSD to the common start (the scale of the
motion in that time), radius of gyration of the selected atoms, the full system's potential
energy, whether the jump was accepted, wall time. Langevin runs are stochastic, so the RMSD
between them grows even for two exact MD runs; the report gives it beside the RMSD-to-start of each.

Distributions (`fastegnn_md.ensembles`, the common start excluded, at least 3 frames after it):
per-residue RMSF and its Pearson r, Rg and potential-energy mean, SD and histogram overlap, the
φ/ψ Jensen–Shannon divergence, RMSD from the start at the end and its ratio, contact persistence;
for the stepper against replica 0 and for replica 1 against replica 0 (run-to-run), with the
acceptance checks: Rg and energy means within 1 reference SD, RMSF r ≥ 0.7, RMSD from the start
at the end within ±30 % of the reference's, φ/ψ JS beside the run-to-run value.

Output directory: ``validation.json`` (everything), ``validation.md`` (tables), ``validation.png``
(RMSD, Rg and PE over time, PE and Rg histograms), ``distributions.png`` (RMSF per residue, Rg and
PE histograms, RMSD from the start, φ/ψ, contact persistence; with enough frames),
``reference.xtc``, ``reference_<k>.xtc`` and ``stepper.xtc`` (selected atoms, one frame per Δt,
frame 0 the common start) with ``selected.pdb``. After every Δt the state of every run is saved to
``validation.checkpoint.npz``; running the same command again resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ... import ensembles, metrics
from ...errors import DataError
from ...io import write_atomically
from ...predictor import Predictor
from ...reports.files import write_report_files
from ...reports.markdown import MarkdownDocument
from ...reports.plots import PlotSet, new_figure
from ..mdanalysis.writers import standalone_universe, write_pdb
from .reference import write_trajectory
from .reused_reference import ReusedReference, load_reused_reference
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

CHECKPOINT_VERSION = 2  # 2: reference replicas (their Context states, frames and energies)
SPEED_UP_GOAL = 20.0
#: Replica k's Langevin integrator is seeded with ``settings.seed + REPLICA_SEED_STRIDE * k``.
REPLICA_SEED_STRIDE = 1000
#: Frames (the common start excluded) a run needs before its distributions are compared.
MIN_DISTRIBUTION_FRAMES = 3
#: Acceptance goals of the distributions (issue 15): the stepper's Rg and potential-energy means
#: within this many reference SDs of the reference's, the per-residue RMSF profiles correlated
#: at least this much, and its RMSD from the start at the end within this fraction of the reference's.
MEAN_WITHIN_SD = 1.0
RMSF_PEARSON_GOAL = 0.7
RMSD_RATIO_TOLERANCE = 0.3


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
            f"{self._distributions()}report {self.directory / 'validation.md'}"
        )

    def _distributions(self) -> str:
        d = self.report.get("distributions") or {}
        if d.get("status") != "ok":
            return ""
        judged = [c for c in d["checks"].values() if c["met"] is not None]
        return f"distributions: {sum(c['met'] for c in judged)} of {len(judged)} goals met; "


def validate(
    structure: Any,
    out_dir: Any,
    checkpoint: Any = "protein-backbone",
    settings: SimulationSettings = SimulationSettings(),
    jumps: int = 10,
    threads: Optional[int] = None,
    stepper_options: Optional[dict[str, Any]] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    reference_replicas: int = 1,
    reference_from: Any = None,
) -> ValidationResult:
    """Run the stepper and ordinary MD side by side for ``jumps`` × Δt; write the report.

    structure : PDB/PDBx file, prepared as `simulate` does (the system the checkpoint was
        trained on, e.g. the shipped ``trajectories/adk-obc/adk_obc.pdb`` for ``adk-backbone``).
    settings : force field, solvent, integrator, temperature, minimisation and equilibration of
        the common start (its ``length_ps``/``frame_interval_ps`` are not used; ``seed`` seeds the
        start velocities, both integrators and the stepper's thermal velocities).
    stepper_options : keyword arguments for `FastEGNNStepper` (relax_steps, minimise_iterations, ...).
    reference_replicas : independent reference MD runs from the common start (same positions and
        velocities, replica k's integrator seeded ``settings.seed + 1000 k``); with two or more the
        report sets the stepper's distributions beside the run-to-run spread of MD itself.
        Replica 0 is the reference of the timing, ``reference.xtc`` and the per-jump table.
    reference_from : output directory of an earlier run of the same structure and settings whose
        reference MD (every replica, its wall times, its common start) is reused: only the stepper
        runs (`reused_reference`); ``reference_replicas`` is then that run's.
    """
    out_dir, structure = Path(out_dir), Path(structure)
    if int(jumps) < 1:
        raise DataError(f"jumps: must be at least 1, got {jumps}")
    if int(reference_replicas) < 1:
        raise DataError(f"reference_replicas: must be at least 1, got {reference_replicas}")
    jumps, n_replicas = int(jumps), int(reference_replicas)
    reused = load_reused_reference(reference_from) if reference_from is not None else None
    if reused is not None:
        n_replicas = reused.replicas
        if jumps > reused.jumps:
            raise DataError(f"{reused.directory}: holds {reused.jumps} jumps of reference MD, --jumps {jumps} needs "
                            f"more: run that validation on to {jumps} jumps first")
    predictor = checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
    options = dict(stepper_options or {})
    options.setdefault("seed", settings.seed)

    topology, positions = prepare_structure(structure, settings.ph)
    system = build_system(topology, settings)
    system_xml = openmm.XmlSerializer.serialize(system)
    reference = make_simulation(topology, system, settings, threads)
    replicas = [  # the seed must be set before the Context exists: OpenMM reads it at creation
        make_simulation(topology, openmm.XmlSerializer.deserialize(system_xml),
                        replace(settings, seed=settings.seed + REPLICA_SEED_STRIDE * k), threads)
        for k in range(1, n_replicas if reused is None else 1)
    ]
    learned = make_simulation(topology, openmm.XmlSerializer.deserialize(system_xml), settings, threads)
    learned.context.setPositions(positions)
    stepper = FastEGNNStepper(learned, predictor, **options)
    selected = stepper.selected
    masses = np.array([system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in selected])
    n_steps = stepper.steps_per_jump
    reference_key = _reference_key(structure, settings, n_steps, n_replicas)
    if reused is not None:
        if reused.steps_per_jump != n_steps:
            raise DataError(f"{reused.directory}: its reference advanced {reused.steps_per_jump} steps per jump, this "
                            f"checkpoint's Δt needs {n_steps}; rerun without --reference-from")
        if reused.reference_key is not None and reused.reference_key != reference_key:
            raise DataError(f"{reused.directory}: its reference MD was run for another structure or settings "
                            f"(force field, integrator, seed); rerun without --reference-from")

    key = _run_key(structure, settings, predictor, options, n_replicas,
                   None if reused is None else str(reused.arrays["key"]))
    ckpt_file = out_dir / "validation.checkpoint.npz"
    out_dir.mkdir(parents=True, exist_ok=True)
    if ckpt_file.exists():
        record = _resume(ckpt_file, key, None if reused else reference, learned, stepper, replicas)
        log(f"resuming {out_dir} at jump {len(record['pe_stepper']) - 1} of {jumps}")
    else:
        record = _start(reference, learned, replicas, positions, settings, selected, n_steps, stepper, reused,
                        progress, log)
    record["reference_key"] = reference_key
    if reused is not None:
        record["reference_reused_from"] = str(reused.directory)
    atoms = list(learned.topology.atoms())
    record["atom_names"] = [atoms[int(i)].name for i in selected]  # the report's input, not checkpointed
    record["residue_ids"] = [atoms[int(i)].residue.index for i in selected]
    record["masses"] = masses
    _write_topology(topology, positions, stepper.selection, out_dir / "selected.pdb")

    def advance_reference() -> None:
        """One Δt of every reference replica: run here, or read from the reused run."""
        k = len(record["pe_reference"])
        if reused is not None:
            for name, value in reused.frame(k).items():
                record[name].append(value)
            return
        t0 = time.perf_counter()
        reference.step(n_steps)
        record["wall_reference"].append(time.perf_counter() - t0)
        record["reference_frames"].append(_selected(reference, selected))
        record["pe_reference"].append(_energy(reference))

    def advance_replicas() -> None:  # untimed: only replica 0 is the speed reference
        for k, replica in enumerate(replicas, start=1):
            replica.step(n_steps)
            record[f"reference_{k}_frames"].append(_selected(replica, selected))
            record[f"pe_reference_{k}"].append(_energy(replica))

    done = len(record["pe_stepper"]) - 1
    bar = tqdm(total=jumps, initial=min(done, jumps), desc="validating", unit="jump", disable=not progress)
    try:
        while len(record["pe_stepper"]) - 1 < jumps:
            advance_reference()
            t1 = time.perf_counter()
            before = stepper.accepted
            stepper.step(1)
            record["wall_stepper"].append(time.perf_counter() - t1)
            record["accepted"].append(stepper.accepted > before)
            record["rejection"].append("" if stepper.accepted > before else str(stepper.last_rejection))
            record["stepper_frames"].append(_selected(learned, selected))
            record["pe_stepper"].append(_energy(learned))
            advance_replicas()
            _save(ckpt_file, key, None if reused else reference, learned, stepper, record, replicas)
            bar.update(1)
            bar.set_postfix_str(f"speed-up {sum(record['wall_reference']) / sum(record['wall_stepper']):.1f}x")
    finally:
        bar.close()

    report = build_report(record, masses, stepper, settings, structure, str(checkpoint), options)
    report["reference_reused_from"] = record.get("reference_reused_from")
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


def _start(
    reference: "app.Simulation", learned: "app.Simulation", replicas: Sequence["app.Simulation"], positions: Any,
    settings: SimulationSettings, selected: np.ndarray, n_steps: int, stepper: "FastEGNNStepper",
    reused: Optional[ReusedReference], progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    """A new run's record at the common start: made here (and branched into the stepper and the
    replicas), or taken from the reused run (checked against a remade one where it stored none)."""
    if reused is not None and reused.start_state is not None:
        state = openmm.XmlSerializer.deserialize(reused.start_state)
        learned.context.setPositions(state.getPositions(asNumpy=True))
        learned.context.setVelocities(state.getVelocities(asNumpy=True))
        learned.context.setTime(0.0)
        learned.currentStep = 0
        start_previous, start_state = reused.start_previous, reused.start_state
    else:
        start_previous = _common_start(reference, positions, settings, selected, n_steps, progress, log)
        if reused is not None:
            reused.check_start(_selected(reference, selected))
        _branch(reference, learned, *replicas)
        start_state = openmm.XmlSerializer.serialize(
            reference.context.getState(getPositions=True, getVelocities=True))
    stepper.set_history(start_previous)
    start = _selected(learned, selected)
    energy = _energy(learned)
    record: dict[str, Any] = {
        "reference_frames": [start], "stepper_frames": [start], "pe_reference": [energy], "pe_stepper": [energy],
        "wall_reference": [], "wall_stepper": [], "accepted": [], "rejection": [],
        "start_state": start_state, "start_previous": np.asarray(start_previous),
    }
    if reused is not None:  # the reused run's own start values, bit for bit
        record.update({name: [reused.arrays[name][0]] for name in reused.names() if name != "wall_reference"})
    else:
        for k in range(1, len(replicas) + 1):
            record[f"reference_{k}_frames"], record[f"pe_reference_{k}"] = [start], [energy]
    return record


def _branch(reference: "app.Simulation", *others: "app.Simulation") -> None:
    """Copy the reference's positions and velocities into the ``others`` (the stepper's Simulation,
    further reference replicas); every clock restarts at 0."""
    state = reference.context.getState(getPositions=True, getVelocities=True)
    for other in others:
        other.context.setPositions(state.getPositions(asNumpy=True))
        other.context.setVelocities(state.getVelocities(asNumpy=True))
    for simulation in (reference, *others):
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
        "reference_replicas": _replica_count(record),
    }
    return {
        "format": "fastegnn-md validation", "structure": str(structure), "settings": asdict(settings),
        "checkpoint": checkpoint, "stepper": stepper.summary(),
        "stepper_options": options, "selected_atoms": int(len(masses)), "summary": summary, "per_jump": rows,
        "distributions": distributions_section(record, masses),
    }


def _replica_count(record: dict[str, Any]) -> int:
    """Reference replicas in a record: replica 0 (``reference_frames``) and ``reference_<k>_frames``."""
    k = 1
    while f"reference_{k}_frames" in record:
        k += 1
    return k


def _runs(record: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{run name: (frames (T, N, 3) Å, potential energies (T,) kJ/mol)}, frame 0 the common start:
    ``reference`` (replica 0), ``stepper``, ``reference_<k>``."""
    runs = {
        "reference": (record["reference_frames"], record["pe_reference"]),
        "stepper": (record["stepper_frames"], record["pe_stepper"]),
    }
    for k in range(1, _replica_count(record)):
        runs[f"reference_{k}"] = (record[f"reference_{k}_frames"], record[f"pe_reference_{k}"])
    return {name: (np.asarray(f, dtype=np.float64), np.asarray(e, dtype=np.float64)) for name, (f, e) in runs.items()}


def distributions_section(record: dict[str, Any], masses: np.ndarray) -> dict[str, Any]:
    """The runs compared by their distributions (`ensembles.compare_ensembles`), the common start
    excluded (RMSD from the start is measured from it): stepper vs reference replica 0, and with
    two or more replicas replica 0 vs replica 1 and the spread over every pair of replicas, plus
    the acceptance checks (`_checks`). Needs ``record["atom_names"]`` and ``record["residue_ids"]``
    of the selected atoms; with fewer than `MIN_DISTRIBUTION_FRAMES` frames after the start it
    says "too few frames" instead."""
    runs = _runs(record)
    frames = len(runs["reference"][0]) - 1
    section: dict[str, Any] = {"frames": frames, "excluded": "frame 0, the common start",
                               "reference_replicas": _replica_count(record)}
    if frames < MIN_DISTRIBUTION_FRAMES:
        return {**section, "status": "too few frames",
                "note": f"{frames} frames after the common start; the distributions need {MIN_DISTRIBUTION_FRAMES}"}
    if "atom_names" not in record or "residue_ids" not in record:
        return {**section, "status": "no topology", "note": "the record has no atom names and residue ids"}
    names, residues = record["atom_names"], record["residue_ids"]
    start = runs["reference"][0][0]

    def compare(a: str, b: str) -> dict[str, Any]:
        (fa, ea), (fb, eb) = runs[a], runs[b]
        return ensembles.compare_ensembles(fa[1:], fb[1:], masses, names, residues, ea[1:], eb[1:], start=start)

    stepper = compare("reference", "stepper")
    run_to_run = compare("reference", "reference_1") if "reference_1" in runs else None
    spread = None
    if run_to_run is not None:
        replicas = [name for name in runs if name != "stepper"]
        spread = ensembles.replica_spread([runs[n][0][1:] for n in replicas], masses, names, residues,
                                          [runs[n][1][1:] for n in replicas], start=start)
    checks = _checks(stepper, run_to_run)
    judged = [c["met"] for c in checks.values() if c["met"] is not None]
    return {**section, "status": "ok", "stepper_vs_reference": stepper, "reference_vs_reference": run_to_run,
            "replica_spread": spread, "checks": checks, "all_met": bool(all(judged))}


def _at(figures: Optional[dict[str, Any]], *path: str) -> Any:
    """``figures[path[0]][path[1]]...``, or None where a level is None (e.g. no energies, no replica)."""
    node: Any = figures
    for key in path:
        node = None if node is None else node[key]
    return node


def _checks(stepper: dict[str, Any], run_to_run: Optional[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's acceptance checks. For each: the figure of stepper vs reference replica 0, the
    same figure of replica 1 vs replica 0 (None without it), the goal, and whether each meets it
    (``met``, ``run_to_run_met``; None where the figure has no goal and is reported beside
    run-to-run; a figure that could not be computed does not meet its goal). Reference SDs are
    replica 0's."""

    def shift(figures: Optional[dict[str, Any]], key: str) -> Optional[float]:
        block = _at(figures, key)
        return None if block is None else block["mean_b"] - block["mean_a"]

    def within_sd(sd: Optional[float]) -> Callable[[float], bool]:
        return lambda value: sd is not None and abs(value) <= MEAN_WITHIN_SD * sd

    def sd_text(sd: Optional[float], unit: str) -> str:
        return "–" if sd is None else f"±{sd:.3g} {unit}"

    rg_sd, pe_sd = _at(stepper, "rg", "sd_a"), _at(stepper, "energy", "sd_a")
    rows: list[tuple[str, str, str, Optional[float], Optional[float], str, Optional[Callable[[float], bool]]]] = [
        ("rg_mean", "Rg mean, run − reference (Å)", "Å", shift(stepper, "rg"), shift(run_to_run, "rg"),
         f"within {MEAN_WITHIN_SD:g} reference SD ({sd_text(rg_sd, 'Å')})", within_sd(rg_sd)),
        ("pe_mean", "potential energy mean, run − reference (kJ/mol)", "kJ/mol", shift(stepper, "energy"),
         shift(run_to_run, "energy"), f"within {MEAN_WITHIN_SD:g} reference SD ({sd_text(pe_sd, 'kJ/mol')})",
         within_sd(pe_sd)),
        ("rmsf_pearson_r", "per-residue RMSF, Pearson r", "", _at(stepper, "rmsf", "pearson_r"),
         _at(run_to_run, "rmsf", "pearson_r"), f"≥ {RMSF_PEARSON_GOAL:g}", lambda r: r >= RMSF_PEARSON_GOAL),
        ("rmsd_from_start_ratio", "RMSD from the start at the end, run / reference", "",
         _at(stepper, "rmsd_from_start", "ratio"), _at(run_to_run, "rmsd_from_start", "ratio"),
         f"{1 - RMSD_RATIO_TOLERANCE:g}–{1 + RMSD_RATIO_TOLERANCE:g} (±{100 * RMSD_RATIO_TOLERANCE:g} %)",
         lambda ratio: abs(ratio - 1.0) <= RMSD_RATIO_TOLERANCE),
        ("phi_psi_js", "φ/ψ Jensen–Shannon divergence (bits)", "bits", _at(stepper, "dihedrals", "js_divergence"),
         _at(run_to_run, "dihedrals", "js_divergence"), "reported beside run-to-run", None),
    ]
    checks = {}
    for name, figure, unit_name, value, other, goal, meets in rows:
        checks[name] = {
            "figure": figure, "unit": unit_name, "stepper": value, "run_to_run": other, "goal": goal,
            "met": None if meets is None else bool(value is not None and meets(value)),
            "run_to_run_met": None if meets is None or other is None else bool(meets(other)),
        }
    return checks


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
        f"guarded = {st['guarded']}, restraint released over {st.get('release_stages', 1)} stage(s), "
        f"{'sampled jumps (the checkpoint' + chr(39) + 's spread)' if st.get('sample') else 'mean jumps'}."
    ).line()
    if report.get("reference_reused_from"):
        doc.line(f"Reference MD reused from `{report['reference_reused_from']}` (the same common start; only the "
                 f"stepper ran here): the speed-up sets that run's reference wall time against this run's stepper "
                 f"time, measured in two processes.").line()

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
    _render_distributions(doc, report.get("distributions"))
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


def _render_distributions(doc: MarkdownDocument, d: Optional[dict[str, Any]]) -> None:
    """The "Distributions" section: the acceptance table and the other figures, or why there are none."""
    if not d:
        return
    doc.heading("Distributions")
    if d["status"] != "ok":
        doc.line(f"{d['status'].capitalize()}: {d['note']}.").line()
        return
    replicas = d["reference_replicas"]
    doc.line(
        f"The {d['frames']} frames after the common start of each run (the start itself excluded; the RMSD "
        f"from the start is measured from it). Run-to-run: reference replica 1 against replica 0, the same MD "
        f"from the same start with another Langevin seed"
        + ("." if replicas > 1 else " (not run: `--reference-replicas 1`).")
    ).line()

    def value(x: Optional[float], unit: str) -> str:
        if x is None:
            return "–"
        digits = 0 if unit == "kJ/mol" else 3
        return f"{x:+.{digits}f}" if unit in ("Å", "kJ/mol") else f"{x:.{digits}f}"

    def met(flag: Optional[bool]) -> str:
        return "–" if flag is None else ("yes" if flag else "no")

    rows = []
    for c in d["checks"].values():
        run_to_run = value(c["run_to_run"], c["unit"])
        if c["run_to_run_met"] is not None:
            run_to_run += " (met)" if c["run_to_run_met"] else " (not met)"
        rows.append([c["figure"], value(c["stepper"], c["unit"]), run_to_run, c["goal"], met(c["met"])])
    doc.table(["figure", "stepper vs reference", "reference vs reference (run-to-run)", "goal", "met"], rows,
              numeric=False)
    s, r = d["stepper_vs_reference"], d["reference_vs_reference"]

    def pair(figures: Optional[dict[str, Any]], *path: str, digits: int = 2) -> str:
        value = _at(figures, *path)
        return "–" if value is None else f"{value:.{digits}f}"

    doc.line().table(["other figures", "stepper vs reference", "reference vs reference"], [
        ["Rg overlap of the histograms", pair(s, "rg", "overlap"), pair(r, "rg", "overlap")],
        ["potential energy overlap", pair(s, "energy", "overlap"), pair(r, "energy", "overlap")],
        ["mean RMSF, run (reference) (Å)", f"{pair(s, 'rmsf', 'mean_b')} ({pair(s, 'rmsf', 'mean_a')})",
         f"{pair(r, 'rmsf', 'mean_b')} ({pair(r, 'rmsf', 'mean_a')})"],
        ["RMSD from the start at the end, run (reference) (Å)",
         f"{pair(s, 'rmsd_from_start', 'final_b')} ({pair(s, 'rmsd_from_start', 'final_a')})",
         f"{pair(r, 'rmsd_from_start', 'final_b')} ({pair(r, 'rmsd_from_start', 'final_a')})"],
        ["contact persistence, mean abs. difference", pair(s, "contacts", "mean_abs_difference", digits=3),
         pair(r, "contacts", "mean_abs_difference", digits=3)],
        ["persistent contacts (≥ 50 % of frames), Jaccard", pair(s, "contacts", "jaccard_persistent"),
         pair(r, "contacts", "jaccard_persistent")],
    ], numeric=False)
    spread = d.get("replica_spread")
    if spread and spread["pairs"] > 1:
        f = spread["figures"]

        def span(*path: str) -> str:
            v = _at(f, *path)
            return "–" if v is None else f"{v['mean']:.3f} ({v['min']:.3f}–{v['max']:.3f})"

        doc.line().line(
            f"Over all {spread['pairs']} pairs of the {spread['replicas']} reference replicas, mean (range): "
            f"RMSF Pearson r {span('rmsf', 'pearson_r')}, φ/ψ JS {span('dihedrals', 'js_divergence')}, "
            f"Rg overlap {span('rg', 'overlap')}, RMSD-from-start ratio {span('rmsd_from_start', 'ratio')}."
        )
    doc.line().line(
        "Rg and potential energy: mean and SD over the frames; RMSF per residue: the mean over the residue's "
        "selected atoms, each run superposed on its own mean structure; RMSD from the start at the end: the mean "
        "of the last 10 % of the frames. With few frames every figure is noisy: read it beside run-to-run."
    ).line()


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


def write_distributions_plot(report: dict[str, Any], record: dict[str, Any], path: Path) -> None:
    """The distributions of every run (the common start excluded) as one PNG: per-residue RMSF, Rg
    and potential-energy histograms, RMSD from the start over time, φ/ψ of the reference and the
    stepper (and reference replica 1), contact persistence (reference above the diagonal, stepper
    below). ``record`` as `validate` keeps it (frames, energies, atom names, residue ids)."""
    runs = _runs(record)
    names, residues = record["atom_names"], record["residue_ids"]
    start = runs["reference"][0][0]
    masses = np.asarray(record["masses"], dtype=np.float64)
    d = report["distributions"]
    dt = report["summary"]["dt_ps"]
    styles = {"reference": ("C0", "-"), "stepper": ("C1", "-")}

    def style(name: str) -> tuple[str, str]:  # colour, line style
        return styles.get(name, ("C2" if name == "reference_1" else "C7", "--"))

    def label(name: str) -> str:
        return "reference MD (replica 0)" if name == "reference" else name.replace("_", " replica ")

    fig = new_figure((18, 8.5), layout="constrained")
    axes = fig.subplots(2, 4)

    ax = axes[0, 0]
    rmsf = d["stepper_vs_reference"]["rmsf"]
    ax.plot(rmsf["residues"], rmsf["a"], color="C0", label=label("reference"))
    ax.plot(rmsf["residues"], rmsf["b"], color="C1", label="stepper")
    for name, (frames, _) in runs.items():
        if name.startswith("reference_"):
            ids, values = metrics.per_residue(metrics.rmsf(frames[1:], masses, iterations=ensembles.RMSF_PASSES),
                                              residues)
            ax.plot(ids, values, color=style(name)[0], ls="--", lw=0.8, label=label(name))
    ax.set(xlabel="residue (index)", ylabel="RMSF (Å)", title="per-residue RMSF")
    ax.legend(fontsize=8)

    for ax, values, unit_label in (
        (axes[0, 1], {n: metrics.radius_of_gyration(f[1:], masses) for n, (f, _) in runs.items()}, "Rg (Å)"),
        (axes[0, 2], {n: e[1:] for n, (_, e) in runs.items()}, "potential energy (kJ/mol)"),
    ):
        bins = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=15)
        for name, v in values.items():
            ax.hist(v, bins=bins, histtype="step", lw=1.5, color=style(name)[0], ls=style(name)[1], label=label(name))
        ax.set(xlabel=unit_label, ylabel="frames", title=f"{unit_label.split(' (')[0]} distribution")
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=8)

    ax = axes[0, 3]
    for name, (frames, _) in runs.items():
        rmsd = metrics.per_frame_kabsch_rmsd(frames, np.broadcast_to(start, frames.shape))
        ax.plot(np.arange(len(frames)) * dt, rmsd, color=style(name)[0], ls=style(name)[1], marker=".",
                label=label(name))
    ax.set(xlabel="simulated time (ps)", ylabel="Kabsch RMSD (Å)", title="RMSD from the common start")
    ax.legend(fontsize=8)

    panels = [("reference", axes[1, 0]), ("stepper", axes[1, 1])]
    if "reference_1" in runs:
        panels.append(("reference_1", axes[1, 3]))
    else:
        axes[1, 3].set_axis_off()
    for name, ax in panels:
        phi, psi = ensembles.ramachandran_pairs(runs[name][0][1:], names, residues, reference=start)
        ax.hist2d(phi.ravel(), psi.ravel(), bins=36, range=[[-180, 180], [-180, 180]], cmin=1, cmap="viridis")
        ax.set(xlabel="φ (°)", ylabel="ψ (°)", title=f"φ/ψ: {label(name)}", xlim=(-180, 180), ylim=(-180, 180),
               aspect="equal")
    ax = axes[1, 2]
    upper = ensembles.contact_persistence(runs["reference"][0][1:], residues)
    lower = ensembles.contact_persistence(runs["stepper"][0][1:], residues)
    n = len(upper)
    combined = np.where(np.triu(np.ones((n, n), dtype=bool), k=1), upper, lower)
    image = ax.imshow(combined, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")  # row 0 at the top
    ax.plot([0, n - 1], [0, n - 1], color="C3", lw=0.5)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of frames in contact")
    ax.set(xlabel="residue (position)", ylabel="residue (position)",
           title="contacts: reference upper right, stepper lower left")
    PlotSet(path.parent).save(fig, path.stem, tight=False)


def _write_outputs(out_dir: Path, report: dict[str, Any], record: dict[str, Any]) -> None:
    def plots(directory: Path) -> dict[str, Path]:
        write_plot(report, directory / "validation.png")
        paths = {"validation": directory / "validation.png"}
        if report["distributions"]["status"] == "ok":
            write_distributions_plot(report, record, directory / "distributions.png")
            paths["distributions"] = directory / "distributions.png"
        return paths

    write_report_files(report, out_dir, plots, render_markdown, stem="validation")
    frames = {"reference.xtc": record["reference_frames"], "stepper.xtc": record["stepper_frames"]}
    for k in range(1, _replica_count(record)):
        frames[f"reference_{k}.xtc"] = record[f"reference_{k}_frames"]
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


def _run_key(
    structure: Path, settings: SimulationSettings, predictor: Any, options: dict[str, Any], replicas: int = 1,
    reused_key: Optional[str] = None,
) -> str:
    """What a checkpoint must have been written for to be resumed: structure, settings, model,
    stepper options, replica count and, for a run reusing another's reference, that run's key."""
    payload = {
        "structure": hashlib.sha256(structure.read_bytes()).hexdigest(), "settings": _run_settings(settings),
        "model": _model_fingerprint(predictor),
        "options": options, "version": CHECKPOINT_VERSION, "reference_replicas": int(replicas),
    }
    if reused_key is not None:
        payload["reference_from"] = reused_key
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _reference_key(structure: Path, settings: SimulationSettings, steps_per_jump: int, replicas: int) -> str:
    """What the reference MD depends on (not the model or the stepper): structure, settings, steps
    per Δt, replica count. A run reusing another's reference must agree with it."""
    payload = {"structure": hashlib.sha256(structure.read_bytes()).hexdigest(), "settings": _run_settings(settings),
               "steps_per_jump": int(steps_per_jump), "reference_replicas": int(replicas)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _run_settings(settings: SimulationSettings) -> dict[str, Any]:
    values = asdict(settings)
    values.pop("length_ps", None)  # `simulate`'s, not the run's
    values.pop("frame_interval_ps", None)
    return values


def _model_fingerprint(predictor: Any) -> str:
    digest = hashlib.sha256(json.dumps(predictor.spec.as_dict(), sort_keys=True, default=str).encode())
    for name, tensor in predictor.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


RECORD_ARRAYS = ("reference_frames", "stepper_frames", "pe_reference", "pe_stepper", "wall_reference",
                 "wall_stepper", "accepted")
STEPPER_COUNTERS = ("accepted", "rejected", "retried", "jumps", "warm_up_jumps")


def replica_arrays(replicas: int) -> tuple[str, ...]:
    """The record's arrays of reference replicas 1..replicas−1 (replica 0's are in `RECORD_ARRAYS`)."""
    return tuple(name for k in range(1, replicas) for name in (f"reference_{k}_frames", f"pe_reference_{k}"))


def _save(
    path: Path, key: str, reference: Optional["app.Simulation"], learned: "app.Simulation",
    stepper: "FastEGNNStepper", record: dict[str, Any], replicas: Sequence["app.Simulation"] = (),
) -> None:
    """Everything a rerun needs to go on (format `CHECKPOINT_VERSION`): the record's arrays, the
    Context state of every Simulation (reference replicas included; none where ``reference`` is
    None, the reference being reused), step counts, the stepper's counters and jump history, and
    the common start (``start_state``, ``start_previous``) and ``reference_key`` that let a later
    run reuse this one's reference."""
    previous, last = stepper.history
    n_replicas = _replica_count(record)
    names = RECORD_ARRAYS + replica_arrays(n_replicas)
    arrays = {name: np.asarray(record[name]) for name in names}
    reference_steps = (reference.currentStep if reference is not None  # reused: the reference's nominal count
                       else (len(record["pe_reference"]) - 1) * stepper.steps_per_jump)
    arrays.update({
        "version": np.array(CHECKPOINT_VERSION), "replicas": np.array(n_replicas),
        "key": np.array(key), "rejection": np.array(record["rejection"], dtype=str),
        "stepper_state": np.frombuffer(learned.context.createCheckpoint(), dtype=np.uint8),
        "steps": np.array([reference_steps, learned.currentStep, *(r.currentStep for r in replicas)]),
        "counters": np.array([getattr(stepper, name) for name in STEPPER_COUNTERS]),
        "history_previous": previous, "history_last": last,
        "reference_key": np.array(record["reference_key"]),
    })
    if record.get("start_state") is not None:  # None: resumed from a run made before it was stored
        arrays["start_state"] = np.array(record["start_state"])
        arrays["start_previous"] = np.asarray(record["start_previous"])
    if reference is not None:
        arrays["reference_state"] = np.frombuffer(reference.context.createCheckpoint(), dtype=np.uint8)
    else:
        arrays["reference_reused_from"] = np.array(record["reference_reused_from"])
    for k, replica in enumerate(replicas, start=1):
        arrays[f"reference_{k}_state"] = np.frombuffer(replica.context.createCheckpoint(), dtype=np.uint8)

    def write(handle: Any) -> None:
        np.savez(handle, **arrays)

    write_atomically(path, write)


def _resume(
    path: Path, key: str, reference: Optional["app.Simulation"], learned: "app.Simulation",
    stepper: "FastEGNNStepper", replicas: Sequence["app.Simulation"] = (),
) -> dict[str, Any]:
    """The record and every Simulation's state from ``path``; ``reference`` None: the reference is
    reused from another run (no reference Context here), the replicas' arrays are in the record."""
    try:
        with np.load(path) as data:
            version = int(data["version"]) if "version" in data.files else 1
            if version != CHECKPOINT_VERSION:
                raise DataError(f"{path}: written by another version of fastegnn-md validate (checkpoint format "
                                f"{version}, this one reads {CHECKPOINT_VERSION}); delete it to start over")
            if str(data["key"]) != key:
                raise DataError(f"{path}: was written for another structure, model or settings (or another number "
                                f"of reference replicas); delete it to start over")
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable validation checkpoint ({exc}); delete it to start over") from None
    names = RECORD_ARRAYS + replica_arrays(int(arrays["replicas"]) if "replicas" in arrays else 1)
    states = ("stepper_state",) + (("reference_state",) if reference is not None else ())
    missing = [name for name in names + states
               + tuple(f"reference_{k}_state" for k in range(1, len(replicas) + 1)) if name not in arrays]
    if missing:
        raise DataError(f"{path}: incomplete validation checkpoint (no {', '.join(missing)}); delete it to start over")
    try:
        if reference is not None:
            reference.context.loadCheckpoint(arrays["reference_state"].tobytes())
        learned.context.loadCheckpoint(arrays["stepper_state"].tobytes())
        for k, replica in enumerate(replicas, start=1):
            replica.context.loadCheckpoint(arrays[f"reference_{k}_state"].tobytes())
    except Exception as exc:  # OpenMMException: another platform or OpenMM version
        raise DataError(f"{path}: OpenMM cannot load it here ({exc}); delete it to start over") from None
    for simulation, step in zip((reference, learned, *replicas), arrays["steps"]):
        if simulation is not None:
            simulation.currentStep = int(step)
    for name, value in zip(STEPPER_COUNTERS, arrays["counters"]):
        setattr(stepper, name, int(value))
    stepper.set_history(arrays["history_previous"])  # the Context is back at history_last
    record = {name: list(arrays[name]) for name in names}
    started = "start_state" in arrays  # older runs did not store their common start
    record["start_state"] = str(arrays["start_state"]) if started else None
    record["start_previous"] = arrays["start_previous"] if started else None
    record["accepted"] = [bool(a) for a in record["accepted"]]
    record["rejection"] = [str(r) for r in arrays["rejection"]]
    return record
