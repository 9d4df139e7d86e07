"""Learned jumps in an OpenMM Simulation: `FastEGNNStepper` and its geometry helpers.

`FastEGNNStepper(simulation, checkpoint).step(n)` advances an ``app.Simulation`` by ``n`` learned
jumps of the checkpoint's Δt; `place_unselected` (with `kabsch_transform`) moves the atoms the model
does not predict, `capped_steepest_descent` removes the clashes. The section comment below says
what one jump does and why. Positions cross the boundary through `.units` (nm <-> Å).
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Optional

import numpy as np

from ...conventions import BACKWARD, PHYSICAL, JumpHistory
from ... import metrics
from ...errors import DataError, FastEGNNWarning, NonFiniteJump
from ...predictor import Predictor
from .system import select_atoms
from .units import angstrom_to_nm, app, nm_to_angstrom, openmm, unit

# --------------------------------------------------------------------------------------------
# Learned jumps in an OpenMM Simulation
# --------------------------------------------------------------------------------------------
#
# `FastEGNNStepper(simulation, checkpoint)` advances an `app.Simulation` by learned jumps of the
# checkpoint's Δt. One jump:
#
# 1. read positions/velocities from the Context (nm, nm/ps -> Å, Å/ps: `nm_to_angstrom`);
# 2. predict the selected atoms' positions after Δt (``sample=True``: draw them from the
#    checkpoint's fitted spread around the mean, `fastegnn_md.spread`). Velocity input (``"backward"`` checkpoints,
#    the mean velocity over the previous Δt): if the stepper made the previous jump (or its
#    fallback) and the selected atoms have not moved since (within ``history_tol`` Å), it is
#    ``(x − x_prev)/Δt`` with x_prev the positions one jump ago; otherwise the Context's
#    instantaneous velocities are used, an **approximation** (a thermal velocity is not a mean over
#    Δt; warned once) — the same policy as the ASE calculator (docs/ase.md);
# 3. place the unselected atoms: each residue's unselected atoms move rigidly with the Kabsch
#    transform (rotation + translation) of that residue's selected atoms, old -> predicted
#    (residues with 1-2 selected atoms are translated by their centroid shift, residues without
#    selected atoms stay put): `place_unselected`;
# 4. a short restrained minimisation (``minimise_iterations`` of `capped_steepest_descent`, no
#    simulated time) removes clashes; then velocities by ``velocity_policy``: ``"thermal"`` redraws Maxwell-Boltzmann velocities at
#    ``temperature`` (Context.setVelocitiesToTemperature, seed = seed + jump index); ``"keep"``
#    keeps the pre-jump velocities;
# 5. relax ``relax_steps`` ordinary integrator steps (thermostat running) with the selected atoms
#    harmonically restrained to the prediction (CustomExternalForce ``0.5 k |r − r0|²``, its
#    global ``k`` is ``restraint_k`` while relaxing and 0 otherwise, so ordinary MD is unaffected);
#    with ``release_stages`` S > 1, k falls linearly to 0 over S stages, the last one free;
# 6. the step count and Context time advance by exactly Δt = ``steps_per_jump`` integrator steps
#    (the relax steps are part of them) and every reporter whose next report falls within the
#    jump reports once with the post-jump state.
#
# Why steepest descent and not OpenMM's LocalEnergyMinimizer: on AdK (3,341 atoms, OBC) L-BFGS with
# 20 iterations took 12.7 s per jump, because it repeats its iterations in rounds of stronger
# constraint penalties — ten times the cost of everything else in a jump. A capped steepest descent
# costs exactly one force evaluation per iteration; 15 of them removed the clashes in every jump
# we tried (benchmarks/RESULTS.md, validation).
#
# History: the first jump of a fresh stepper has no previous jump to take a mean velocity from.
# `warm_up()` runs ordinary MD for one Δt (reporters run) and records it as history;
# `set_history(previous)` supplies the selected atoms' positions one Δt ago directly.
#
# Guarded mode (default): after the jump the potential energy must be finite and at most the
# pre-jump potential energy + ``energy_tolerance`` (default 5 kJ/mol per atom of the system).
# Otherwise the jump is rejected: the Context checkpoint taken before the jump is restored and
# ``simulation.step(steps_per_jump)`` runs ordinary MD for that Δt (reporters run as usual).
# A non-finite prediction is rejected before the Context is touched. Unguarded, a non-finite
# prediction raises DataError. `FastEGNNStepper.summary()` counts accepted and rejected jumps.

RESTRAINT_K_PARAMETER = "fastegnn_restraint_k"
VELOCITY_POLICIES = ("thermal", "keep")
ENERGY_TOLERANCE_PER_ATOM = 5.0  # kJ/mol


def kabsch_transform(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) with ``new ≈ old @ R.T + t`` (least squares, proper)."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    c_old, c_new = old.mean(axis=0), new.mean(axis=0)
    h = (old - c_old).T @ (new - c_new)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, c_new - rotation @ c_old


def capped_steepest_descent(context: "openmm.Context", iterations: int, max_step_nm: float = 0.01) -> float:
    """Minimise the Context's potential energy by ``iterations`` capped steepest-descent steps.

    Each step moves every atom along its force, scaled so the atom with the largest force moves
    ``step`` nm (start and ceiling ``max_step_nm``), then applies the constraints. A step that
    lowers the energy is kept and the step grows by 1.2 (up to the ceiling); one that does not is
    undone and the step halves. One force evaluation per iteration. The Context ends at the
    lowest-energy positions found; returns that potential energy in kJ/mol. Velocities untouched.
    """
    state = context.getState(getPositions=True, getForces=True, getEnergy=True)
    best_x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    best_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    step = float(max_step_nm)
    for _ in range(int(iterations)):
        largest = float(np.abs(forces).max()) if np.isfinite(forces).all() else 0.0
        if largest == 0.0:
            break
        context.setPositions(best_x + forces * (step / largest))
        context.applyConstraints(1e-5)
        state = context.getState(getPositions=True, getForces=True, getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if np.isfinite(energy) and energy < best_energy:
            best_x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            best_energy = energy
            forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            step = min(1.2 * step, float(max_step_nm))
        else:
            step *= 0.5
    context.setPositions(best_x)
    return float(best_energy)


def place_unselected(
    positions: np.ndarray, selected: np.ndarray, predicted: np.ndarray, residues: np.ndarray
) -> np.ndarray:
    """All atoms' positions after a jump of the ``selected`` ones (any consistent length unit).

    positions (N, 3) before the jump; selected (S,) atom indices; predicted (S, 3) their new
    positions; residues (N,) residue index of every atom. Selected atoms go exactly to
    ``predicted``; each residue's other atoms move rigidly with the Kabsch transform of the
    residue's selected atoms (translation only if it has fewer than 3; unchanged if none).
    """
    positions = np.asarray(positions, dtype=np.float64)
    selected = np.asarray(selected, dtype=np.intp)
    residues = np.asarray(residues)
    out = positions.copy()
    out[selected] = predicted
    is_selected = np.zeros(len(positions), dtype=bool)
    is_selected[selected] = True
    for residue in np.unique(residues):
        members = np.flatnonzero(residues == residue)
        anchors = members[is_selected[members]]
        movers = members[~is_selected[members]]
        if movers.size == 0 or anchors.size == 0:
            continue
        if anchors.size < 3:
            out[movers] = positions[movers] + (out[anchors].mean(axis=0) - positions[anchors].mean(axis=0))
            continue
        rotation, shift = kabsch_transform(positions[anchors], out[anchors])
        out[movers] = positions[movers] @ rotation.T + shift
    return out


class FastEGNNStepper:
    """Advance an OpenMM ``app.Simulation`` by learned jumps (see the section comment above).

    Parameters
    ----------
    simulation : the Simulation (its System gets one restraint force, added here).
    checkpoint : path or shipped name of a molecular checkpoint (Å, ps), or a Predictor.
    selection : MDAnalysis selection of the atoms the model moves; default the checkpoint's.
    relax_steps : restrained integrator steps after each jump (part of the jump's step count).
    restraint_k : restraint force constant in kJ/mol/nm² while relaxing.
    guarded : reject jumps whose potential energy is non-finite or above pre-jump + tolerance.
    energy_tolerance : kJ/mol; default `ENERGY_TOLERANCE_PER_ATOM` × number of particles.
    velocity_policy : ``"thermal"`` (Maxwell-Boltzmann at ``temperature``) or ``"keep"``.
    temperature : K for the thermal policy; default the integrator's temperature.
    seed : seed of the thermal velocities (jump k uses seed + k).
    history_tol : Å; selected atoms within this of where the last jump left them count as unmoved.
    minimise_iterations : restrained `capped_steepest_descent` iterations before the relax steps
        (0: none); they remove the clashes a rigid residue placement can create, which would
        otherwise blow up the first integrator steps. They take no simulated time.
    max_descent_step_nm : largest single-atom move of one descent iteration (nm).
    retry_minimise_iterations : guarded mode: a jump that fails the energy check (or goes
        non-finite) is placed again with this many descent iterations before MD replaces it
        (counted in ``summary()["retried"]``); no retry when not above ``minimise_iterations``.
    sample : draw each jump from the checkpoint's fitted spread (`Predictor.sample`, seeded by
        (seed, jump index)) instead of taking its mean; needs a calibrated checkpoint.
    release_stages : 1 keeps ``restraint_k`` for all relax steps; S > 1 releases it linearly to 0
        over S equal stages, the last one free MD with the thermostat (`release_schedule`).
    sample_scale : factor on the sampled noise (1: the calibrated spread; default 0.3, and the
        default of 1 descent iteration, measured over 2 ns on villin: docs/architecture.md,
        "The stepper's defaults").
    """

    def __init__(
        self,
        simulation: "app.Simulation",
        checkpoint: Any = "protein-backbone",
        selection: Optional[str] = None,
        relax_steps: int = 25,
        restraint_k: float = 5000.0,
        guarded: bool = True,
        energy_tolerance: Optional[float] = None,
        velocity_policy: str = "thermal",
        temperature: Optional[float] = None,
        seed: int = 0,
        history_tol: float = 1e-3,
        minimise_iterations: int = 1,
        max_descent_step_nm: float = 0.01,
        sample: bool = False,
        release_stages: int = 1,
        sample_scale: float = 0.3,
        retry_minimise_iterations: int = 15,
    ) -> None:
        if velocity_policy not in VELOCITY_POLICIES:
            raise DataError(f"velocity_policy: {velocity_policy!r} is not one of {', '.join(VELOCITY_POLICIES)}")
        self.simulation = simulation
        self.predictor = checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
        spec = self.predictor.spec
        if not spec.is_molecular:
            raise DataError(f"{checkpoint}: not a molecular checkpoint (Å, ps); the OpenMM stepper needs one")
        self.dt_ps = float(self.predictor.dt)
        integrator = simulation.integrator
        step_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
        steps = self.dt_ps / step_ps
        self.steps_per_jump = int(round(steps))
        if self.steps_per_jump < 1 or abs(steps - self.steps_per_jump) > 1e-6 * max(1.0, steps):
            raise DataError(
                f"{checkpoint}: its Δt = {self.dt_ps} ps is not a whole number of {step_ps} ps integrator steps"
            )
        if not 0 <= int(relax_steps) <= self.steps_per_jump:
            raise DataError(f"relax_steps: must be between 0 and the {self.steps_per_jump} steps of one jump")
        self.relax_steps = int(relax_steps)
        self.restraint_k = float(restraint_k)
        self.guarded = bool(guarded)
        self.velocity_policy = velocity_policy
        if temperature is None and velocity_policy == "thermal":
            if not hasattr(integrator, "getTemperature"):
                raise DataError("temperature: the integrator has no temperature; pass temperature=")
            temperature = integrator.getTemperature().value_in_unit(unit.kelvin)
        self.temperature = None if temperature is None else float(temperature)
        self.seed = int(seed)
        self.history_tol = float(history_tol)
        if int(minimise_iterations) < 0:
            raise DataError("minimise_iterations: must not be negative")
        self.minimise_iterations = int(minimise_iterations)
        if int(retry_minimise_iterations) < 0:
            raise DataError("retry_minimise_iterations: must not be negative")
        self.retry_minimise_iterations = int(retry_minimise_iterations)
        if not max_descent_step_nm > 0:
            raise DataError("max_descent_step_nm: must be positive")
        self.max_descent_step_nm = float(max_descent_step_nm)
        self.sample = bool(sample)
        if self.sample:
            self.predictor.require_spread()
        if int(release_stages) < 1 or (int(release_stages) > 1 and int(release_stages) > int(relax_steps)):
            raise DataError(f"release_stages: must be between 1 and relax_steps ({relax_steps}), got {release_stages}")
        self.release_stages = int(release_stages)
        if not sample_scale >= 0:
            raise DataError(f"sample_scale: must be a non-negative factor on the spread, got {sample_scale}")
        self.sample_scale = float(sample_scale)

        topology = simulation.topology
        self.num_atoms = topology.getNumAtoms()
        self.energy_tolerance = (
            ENERGY_TOLERANCE_PER_ATOM * self.num_atoms if energy_tolerance is None else float(energy_tolerance)
        )
        self.selection = selection or spec.selection
        if not self.selection:
            raise DataError(f"{checkpoint}: records no atom selection; pass selection=")
        positions = simulation.context.getState(getPositions=True).getPositions()
        pdb = io.StringIO()
        app.PDBFile.writeFile(topology, positions, pdb, keepIds=True)
        self.selected = select_atoms(pdb.getvalue(), self.selection).indices.copy()
        if spec.num_nodes is not None and len(self.selected) != spec.num_nodes:
            raise DataError(
                f"selection: {self.selection!r} picks {len(self.selected)} atoms but the checkpoint was trained "
                f"on {spec.num_nodes} (selection {spec.selection!r})"
            )
        atoms = list(topology.atoms())
        self.residues = np.array([atom.residue.index for atom in atoms])
        chosen = [atoms[int(i)] for i in self.selected]
        # A sampled jump keeps each peptide ω where it was (metrics.peptide_plane_pairs), in selection indices.
        self.held_pairs = metrics.peptide_plane_pairs([a.name for a in chosen], self.residues[self.selected])
        self.node_attrs: Optional[np.ndarray] = None  # None: the checkpoint's own
        if self.predictor.uses_identity:  # from the Simulation's topology (its names are the force field's)
            self.node_attrs = self.predictor.identity_attributes(
                [a.name for a in chosen], [a.residue.name for a in chosen],
                [a.element.symbol if a.element is not None else None for a in chosen], where="OpenMM topology",
            )

        force = openmm.CustomExternalForce(f"0.5*{RESTRAINT_K_PARAMETER}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        force.addGlobalParameter(RESTRAINT_K_PARAMETER, 0.0)
        for name in ("x0", "y0", "z0"):
            force.addPerParticleParameter(name)
        xyz = np.asarray(positions.value_in_unit(unit.nanometer))
        for index in self.selected:
            force.addParticle(int(index), [float(v) for v in xyz[index]])
        self.restraint = force
        simulation.system.addForce(force)
        simulation.context.reinitialize(preserveState=True)

        self.accepted = 0
        self.rejected = 0
        self.retried = 0
        self.jumps = 0
        self.warm_up_jumps = 0
        self.last_velocity_source: Optional[str] = None
        self.last_rejection: Optional[str] = None
        #: The last Δt of the selected atoms (a jump, its MD fallback or a warm-up), Å.
        self.jump_history = JumpHistory(self.dt_ps, self.history_tol)
        self._warned = False

    # -- public --------------------------------------------------------------------------------

    def step(self, n: int) -> None:
        """Advance the simulation by ``n`` jumps (n × Δt, n × steps_per_jump integrator steps)."""
        for _ in range(int(n)):
            self._jump()

    def warm_up(self, n: int = 1) -> None:
        """Ordinary MD for ``n`` × Δt (reporters run as usual), recorded as the jump history.

        Gives the next jump a true mean velocity over the previous Δt instead of the Context's
        instantaneous velocities. Not counted as jumps; `summary()` reports ``warm_up_jumps``.
        """
        for _ in range(int(n)):
            x_sel = self._selected_positions()
            self.simulation.step(self.steps_per_jump)
            self.jump_history.record(x_sel, self._selected_positions())
            self.warm_up_jumps += 1

    @property
    def history(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(selected atoms one jump ago, where the last jump left them), Å; None before any jump."""
        history = self.jump_history
        return None if not history.known else (history.start, history.end)

    def set_history(self, previous: np.ndarray) -> None:
        """Positions (S, 3) in Å of the selected atoms one Δt before the Context's current state."""
        previous = np.asarray(previous, dtype=np.float64)
        if previous.shape != (len(self.selected), 3) or not np.isfinite(previous).all():
            raise DataError(f"set_history: expected finite ({len(self.selected)}, 3) positions in Å, got "
                            f"shape {previous.shape}")
        self.jump_history.record(previous, self._selected_positions())

    def summary(self) -> dict[str, Any]:
        return {
            "jumps": self.jumps, "accepted": self.accepted, "rejected": self.rejected, "retried": self.retried,
            "warm_up_jumps": self.warm_up_jumps, "minimise_iterations": self.minimise_iterations,
            "dt_ps": self.dt_ps, "steps_per_jump": self.steps_per_jump, "relax_steps": self.relax_steps,
            "guarded": self.guarded, "energy_tolerance_kj_mol": self.energy_tolerance,
            "velocity_policy": self.velocity_policy, "selection": self.selection,
            "sample": self.sample, "release_stages": self.release_stages,
            "sample_scale": self.sample_scale,
            "selected_atoms": int(len(self.selected)), "last_rejection": self.last_rejection,
        }

    def release_schedule(self) -> list[tuple[float, int]]:
        """(restraint k in kJ/mol/nm², integrator steps) of each relaxation stage.

        One stage (default): ``restraint_k`` for all ``relax_steps``. S > 1 stages: k falls
        linearly from ``restraint_k`` to 0 over S equal stages (the last one free MD with the
        thermostat running), so the jump is held while clashes relax, then let go.
        """
        if not self.relax_steps:
            return []
        stages = self.release_stages
        counts = np.diff(np.linspace(0, self.relax_steps, stages + 1).round().astype(int))
        if stages == 1:
            return [(self.restraint_k, int(counts[0]))]
        return [(self.restraint_k * (stages - 1 - s) / (stages - 1), int(n)) for s, n in enumerate(counts) if n]

    # -- internals -----------------------------------------------------------------------------

    def _selected_positions(self) -> np.ndarray:
        state = self.simulation.context.getState(getPositions=True)
        return nm_to_angstrom(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[self.selected]

    def _model_velocities(self, x_sel: np.ndarray, v_sel: np.ndarray) -> np.ndarray:
        convention = self.predictor.spec.velocity_convention
        if convention == BACKWARD:
            velocity = self.jump_history.velocity(x_sel)
            if velocity is not None:
                self.last_velocity_source = "history"
                return velocity
        self.last_velocity_source = "context"
        if convention != PHYSICAL and not self._warned:
            warnings.warn(
                f"FastEGNNStepper: the checkpoint expects {convention} mean velocities over Δt; using the "
                "Context's instantaneous velocities for this jump (an approximation)", FastEGNNWarning, stacklevel=3,
            )
            self._warned = True
        return v_sel

    def _jump(self) -> None:
        simulation, context = self.simulation, self.simulation.context
        start_step = simulation.currentStep
        start_time = context.getState().getTime().value_in_unit(unit.picosecond)
        due = self._due_reporters()
        before = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        x = nm_to_angstrom(before.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = nm_to_angstrom(before.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        reference_energy = before.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        x_sel = x[self.selected]
        self.jumps += 1
        try:
            velocities = self._model_velocities(x_sel, v[self.selected])
            # Identity attributes only when the model uses them: a model without them is
            # called as before, predict(x, v), so wrappers written for that call keep working.
            extra = () if self.node_attrs is None else (self.node_attrs,)
            if self.sample:  # seeded by (seed, jump): a resumed run draws what an unbroken one would
                rng = np.random.default_rng([self.seed, self.jumps])
                predicted = self.predictor.sample(x_sel, velocities, *extra, rng=rng, scale=self.sample_scale,
                                                   held_pairs=self.held_pairs).positions
            else:
                predicted = self.predictor.predict(x_sel, velocities, *extra).positions
        except NonFiniteJump as exc:  # the Context has not been touched
            if not self.guarded:
                raise DataError(f"FastEGNNStepper: {exc} (unguarded mode)") from None
            self._fallback(x_sel, "non-finite prediction")
            return
        saved = context.createCheckpoint() if self.guarded else None
        # Guarded: a jump that fails the checks is tried once more with the longer retry descent
        # (clashes a few iterations did not remove), and only then replaced by MD for that Δt.
        levels = [self.minimise_iterations]
        if self.guarded and self.retry_minimise_iterations > self.minimise_iterations:
            levels.append(self.retry_minimise_iterations)
        why = None
        for attempt, iterations in enumerate(levels):
            if attempt:
                self.retried += 1
            try:
                energy, after = self._place_and_relax(x, predicted, iterations)
            except openmm.OpenMMException as exc:  # NaN coordinates during minimisation or relaxation
                if not self.guarded:
                    raise DataError(f"FastEGNNStepper: the jump made the simulation non-finite ({exc})") from None
                context.setParameter(RESTRAINT_K_PARAMETER, 0.0)
                context.loadCheckpoint(saved)
                why = f"non-finite state after the jump ({str(exc).splitlines()[0]})"
                continue
            if self.guarded and not (np.isfinite(energy) and energy <= reference_energy + self.energy_tolerance):
                context.loadCheckpoint(saved)
                why = f"potential energy {energy:.6g} kJ/mol > {reference_energy:.6g} + {self.energy_tolerance:.6g}"
                continue
            why = None
            break
        if why is not None:
            self._fallback(x_sel, why)
            return
        if not np.isfinite(energy) and not self.guarded:
            raise DataError(f"FastEGNNStepper: the jump left a non-finite potential energy ({energy})")
        simulation.currentStep = start_step + self.steps_per_jump
        context.setTime(start_time + self.steps_per_jump * simulation.integrator.getStepSize().value_in_unit(
            unit.picosecond))
        self.accepted += 1
        end = nm_to_angstrom(after.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[self.selected]
        self.jump_history.record(x_sel, end)
        self._report(due, start_step)

    def _place_and_relax(self, x: np.ndarray, predicted: np.ndarray, iterations: int) -> tuple[float, Any]:
        """Put the jump into the Context, minimise (``iterations`` of descent), set velocities, relax;
        (energy kJ/mol, state)."""
        simulation, context = self.simulation, self.simulation.context
        new_x = place_unselected(x, self.selected, predicted, self.residues)
        context.setPositions(angstrom_to_nm(new_x) * unit.nanometer)
        context.applyConstraints(1e-5)
        if self.relax_steps or iterations:
            r0 = angstrom_to_nm(predicted)
            for i, index in enumerate(self.selected):
                self.restraint.setParticleParameters(i, int(index), [float(c) for c in r0[i]])
            self.restraint.updateParametersInContext(context)
            context.setParameter(RESTRAINT_K_PARAMETER, self.restraint_k)
        try:
            if iterations:
                capped_steepest_descent(context, iterations, self.max_descent_step_nm)
            if self.velocity_policy == "thermal":
                context.setVelocitiesToTemperature(self.temperature * unit.kelvin, self.seed + self.jumps - 1)
            for k, steps in self.release_schedule():
                context.setParameter(RESTRAINT_K_PARAMETER, k)
                simulation.integrator.step(steps)
        finally:
            context.setParameter(RESTRAINT_K_PARAMETER, 0.0)
        after = context.getState(getPositions=True, getEnergy=True)
        return after.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), after

    def _fallback(self, x_sel: np.ndarray, why: str) -> None:
        """Ordinary MD for one Δt (the Context holds the pre-jump state); reporters run as usual."""
        self.rejected += 1
        self.last_rejection = why
        self.simulation.step(self.steps_per_jump)
        end = self.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        self.jump_history.record(x_sel, nm_to_angstrom(end.value_in_unit(unit.nanometer))[self.selected])

    def _due_reporters(self) -> list[tuple[Any, dict[str, Any]]]:
        """(reporter, description) of the reporters whose next report falls within the coming jump."""
        due = []
        for reporter in self.simulation.reporters:
            report = reporter.describeNextReport(self.simulation)
            if isinstance(report, tuple):
                includes = ["positions", "velocities", "forces", "energy"]
                report = {"steps": report[0], "include": [includes[i] for i in range(4) if report[i + 1]],
                          "periodic": report[5] if len(report) > 5 else None}
            if 0 < report["steps"] <= self.steps_per_jump:
                due.append((reporter, report))
        return due

    def _report(self, due: list[tuple[Any, dict[str, Any]]], start_step: int) -> None:
        if not due:
            return
        include = set().union(*(set(report.get("include", ())) for _, report in due))
        periodic = self.simulation._usesPBC if hasattr(self.simulation, "_usesPBC") else False
        state = self.simulation.context.getState(
            getPositions="positions" in include, getVelocities="velocities" in include,
            getForces="forces" in include, getEnergy="energy" in include, getParameters=True,
            enforcePeriodicBox=bool(periodic),
        )
        for reporter, _ in due:
            reporter.report(self.simulation, state)
