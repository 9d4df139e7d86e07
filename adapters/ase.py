"""ASE adapter: a learned jump as an ASE calculator, and MD whose steps are learned jumps.

FastEGNN predicts where the atoms are one jump ``Δt`` later; it does not know energies or
forces. This module exposes that prediction in ASE's terms without pretending otherwise:

* `FastEGNNCalculator` computes, for the current state of an ``ase.Atoms`` (positions *and*
  velocities), the jumped positions ``x′`` (property ``"jumped_positions"``), the virtual-node
  positions (``"virtual_positions"``), the model's predicted velocities when it predicts any
  (``"jumped_velocities"``), and as ``"forces"`` the **transport force** that carries every
  atom to its predicted position in one velocity-Verlet step of length ``Δt``::

      F = 2 m (x′ − x − v Δt) / Δt²        (eV/Å; m in amu, x in Å, v in Å/ASE-time, Δt in ASE time)

  so that ``x + v Δt + F Δt² / (2m) = x′`` exactly (up to rounding). It is not a physical force:
  it depends on the velocities and on Δt. Energy (and stress, ...) raise ASE's
  ``PropertyNotImplementedError`` with an explanation.
* `FastEGNNDynamics` is an ``ase.md.md.MolecularDynamics`` whose ``step()`` is one jump
  (``timestep`` = the checkpoint's Δt) followed by a velocity policy.
* `atoms_from_mdanalysis` builds ``ase.Atoms`` from an MDAnalysis Universe/AtomGroup with
  elements that are right for MD files (``ase.io`` reads CA as calcium).

Units
-----
ASE's units are Å, eV and amu; its time unit is derived from them,
``Å·sqrt(amu/eV)`` ≈ 10.18 fs, so one picosecond is ``ASE_TIME_PER_PS = 1000 * ase.units.fs``
ASE time units. fastegnn-md's MD units are Å, ps and amu, so at this boundary::

    Δt_ase   = Δt_ps * ASE_TIME_PER_PS
    v_Å/ps   = v_ase * ASE_TIME_PER_PS          (ASE velocity = Å per ASE time unit)

Lengths (Å) and masses (amu) need no conversion.

Velocity input (what the model is fed)
--------------------------------------
The model's velocity input must mean what it meant in training (``spec.velocity_convention``):

* ``"physical"`` checkpoints get the Atoms' velocities, converted to Å/ps.
* ``"backward"`` checkpoints (all shipped ones) expect the *mean velocity over the previous
  jump*, ``(x_t − x_{t−Δt}) / Δt``. The calculator remembers the last jump it computed: if the
  Atoms' positions equal (within ``history_tol`` Å) the positions it predicted last, the atoms
  were moved by exactly that one jump (as `FastEGNNDynamics` and ``VelocityVerlet`` with the
  transport force do), and the input is ``(x − x_prev) / Δt`` with ``x_prev`` the positions that
  jump started from; the Atoms' own velocities are then not used as model input (they still
  enter the transport force). If the positions equal the last *input* positions (the same
  point asked again, e.g. with other momenta), the same input is reused. Otherwise — the first
  jump, or atoms moved by something else — the Atoms' instantaneous velocities are used. That is
  an **approximation** for backward-convention models (an instantaneous thermal velocity is
  not a mean over Δt); the calculator warns once. Give the true history with
  `FastEGNNCalculator.set_previous_positions` (e.g. the frame Δt earlier of the MD trajectory
  you start from) to avoid it, or pass ``velocity_input="atoms"`` to always use the Atoms'
  velocities. ``"forward"`` checkpoints are fed the Atoms' velocities (an approximation too).
  ``calc.last_velocity_source`` says which input the last model call used (``"history"`` or
  ``"atoms"``).

Caching
-------
Results are cached following ASE's ``check_state`` (positions, numbers, cell, pbc, initial
charges/magmoms) extended by **momenta and masses**, because the jump (for ``"atoms"`` input)
and the transport force depend on them. Independently, the last model call is memoised on its
exact inputs, so asking again at the same positions with other momenta (velocity Verlet does
this) only recomputes the transport force when the model input did not change.
``calc.model_calls`` counts the model evaluations. Use one calculator per Atoms object: the
jump history is the calculator's.

Atoms outside ``selection_indices`` are held fixed: their jumped position is their position,
their transport force stops them (``F = −2mv/Δt``), and `FastEGNNDynamics` gives them zero
velocity. Periodic Atoms are refused: the model's graphs use Cartesian distances without
minimum image (make molecules whole and set ``atoms.pbc = False``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, equal
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from ase.md.md import MolecularDynamics
from ase.parallel import world
from ase.utils import IOContext

from .. import metrics
from ..conventions import BACKWARD, JumpHistory
from ..errors import CheckpointError, DataError, FastEGNNWarning
from ..local_geometry import HeldGeometry
from ..predictor import Jump, Predictor
from ..rollout import MeanJump

#: ASE time units in one picosecond (ASE's time unit is Å·sqrt(amu/eV) ≈ 10.18 fs).
ASE_TIME_PER_PS = 1000.0 * units.fs

VELOCITY_POLICIES = ("predicted", "finite-difference", "maxwell-boltzmann")
VELOCITY_INPUTS = ("auto", "atoms")

#: Per-atom arrays holding atom names and residue names (the keys ase.io's PDB reader uses).
ATOM_NAMES = "atomtypes"
RESIDUE_NAMES = "residuenames"
RESIDUE_NUMBERS = "residuenumbers"

#: Properties an energy model would have and a jump model does not.
_ENERGY_LIKE = ("energy", "free_energy", "energies", "stress", "stresses")

CheckpointLike = Union[str, Path, Predictor]


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def ps_to_ase_time(t_ps: Any) -> Any:
    """Picoseconds -> ASE time units."""
    return t_ps * ASE_TIME_PER_PS


def ase_time_to_ps(t_ase: Any) -> Any:
    """ASE time units -> picoseconds."""
    return t_ase / ASE_TIME_PER_PS


def velocity_to_angstrom_per_ps(v_ase: Any) -> Any:
    """ASE velocities (Å per ASE time unit) -> Å/ps."""
    return v_ase * ASE_TIME_PER_PS


def velocity_from_angstrom_per_ps(v: Any) -> Any:
    """Å/ps -> ASE velocities (Å per ASE time unit)."""
    return v / ASE_TIME_PER_PS


def transport_forces(
    positions: np.ndarray, jumped: np.ndarray, velocities: np.ndarray, masses: np.ndarray, dt: float
) -> np.ndarray:
    """F = 2 m (x′ − x − v Δt) / Δt², all in ASE units (Å, Å/ASE-time, amu, ASE time) -> eV/Å."""
    masses = np.asarray(masses, dtype=np.float64).reshape(-1, 1)
    return 2.0 * masses * (jumped - positions - velocities * dt) / dt**2


# --------------------------------------------------------------------------------------------
# Calculator
# --------------------------------------------------------------------------------------------


class FastEGNNCalculator(Calculator):
    """ASE calculator whose results are a learned jump (see the module docstring for the contract).

    Parameters
    ----------
    checkpoint : path or shipped name of a fastegnn-md checkpoint (``"adk-dims"``), or a
        `fastegnn_md.predictor.Predictor` (shared, e.g. between calculators).
    device, dtype : where and in which precision the model runs (ignored for a Predictor).
    selection_indices : indices of the Atoms the model acts on (in the checkpoint's node order);
        None = all atoms. The others are held fixed.
    node_attrs : (N_sel, F) node attributes; default: the ones stored in the checkpoint.
    velocity_input : ``"auto"`` (the policy in the module docstring) or ``"atoms"`` (always the
        Atoms' velocities).
    history_tol : max |Δx| in Å for positions to count as "the positions predicted last".
    sample : draw each jump from the checkpoint's fitted spread (`Predictor.sample`) instead of
        its mean; needs a calibrated checkpoint (``fastegnn-md calibrate``).
    seed : seed of the calculator's generator for sampled jumps.
    hold_geometry : give each mean jump back its start's bond lengths, bond angles and (when the
        Atoms carry atom names and residue numbers) peptide planes, as `fastegnn-md rollout
        --hold-geometry` does (`fastegnn_md.local_geometry.HeldGeometry`); sampled jumps always do.

    Results (``calc.get_property(name, atoms)``)
    --------------------------------------------
    ``"jumped_positions"`` (N, 3) Å; ``"virtual_positions"`` (C, 3) Å (models with virtual nodes);
    ``"jumped_velocities"`` (N, 3) ASE velocity units (models that predict velocities);
    ``"forces"`` (N, 3) eV/Å, the transport force ``2m(x′ − x − vΔt)/Δt²``.

    Attributes
    ----------
    timestep : the jump Δt in ASE time units; ``dt_ps`` the same in ps.
    model_calls : number of model evaluations so far.
    last_velocity_source : ``"history"`` or ``"atoms"`` for the last model input.
    """

    implemented_properties = ["forces", "jumped_positions", "virtual_positions", "jumped_velocities"]

    def __init__(
        self,
        checkpoint: CheckpointLike,
        device: Union[str, torch.device] = "cpu",
        selection_indices: Optional[Sequence[int]] = None,
        dtype: torch.dtype = torch.float32,
        node_attrs: Optional[np.ndarray] = None,
        velocity_input: str = "auto",
        history_tol: float = 1e-6,
        sample: bool = False,
        seed: Optional[int] = 0,
        hold_geometry: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sample and hold_geometry:
            raise ValueError("hold_geometry: sampled jumps (sample=True) already keep the start's bonds and angles")
        if velocity_input not in VELOCITY_INPUTS:
            raise ValueError(f"velocity_input must be one of {VELOCITY_INPUTS}, got {velocity_input!r}")
        if isinstance(checkpoint, Predictor):
            self.predictor = checkpoint
            name = str(getattr(checkpoint.checkpoint, "path", None) or checkpoint.model_name or "predictor")
        else:
            self.predictor = Predictor.from_checkpoint(checkpoint, device=device, dtype=dtype)
            name = str(checkpoint)
        self.checkpoint_name = name
        spec = self.predictor.spec
        if not spec.is_molecular:
            raise CheckpointError(
                f"{name}: trained on data in {spec.units.get('length')}/{spec.units.get('time')}; "
                "the ASE calculator needs a molecular checkpoint (Å, ps)"
            )
        self.dt_ps = float(self.predictor.dt)
        self.timestep = ps_to_ase_time(self.dt_ps)
        self.selection_indices = None if selection_indices is None else np.asarray(selection_indices, dtype=np.intp)
        self.node_attrs = None if node_attrs is None else np.asarray(node_attrs, dtype=np.float64)
        self.velocity_input = velocity_input
        self.history_tol = float(history_tol)
        self.sample = bool(sample)
        self.hold_geometry = bool(hold_geometry)
        if self.sample and self.predictor.spread is None:
            raise CheckpointError(
                f"{name}: has no fitted spread, so its jumps cannot be sampled; run `fastegnn-md calibrate` on it"
            )
        #: Draws of sampled jumps (one generator for the calculator's life: seeded, reproducible).
        self.rng = np.random.default_rng(seed)
        self.parameters.update(
            checkpoint=name, device=str(self.predictor.device), dtype=str(self.predictor.dtype),
            velocity_input=velocity_input, sample=self.sample, hold_geometry=self.hold_geometry,
        )
        self.model_calls = 0
        self.last_velocity_source: Optional[str] = None
        #: The last jump computed (or declared): gives backward models their mean velocity over Δt.
        self.history = JumpHistory(self.dt_ps, self.history_tol)
        self._memo: Optional[tuple[np.ndarray, np.ndarray, Jump]] = None
        self._warned_approximation = False

    # -- ASE protocol --------------------------------------------------------------------------

    def get_property(self, name: str, atoms: Optional[Atoms] = None, allow_calculation: bool = True) -> Any:
        if name not in self.implemented_properties:
            raise PropertyNotImplementedError(_not_implemented_message(name))
        return super().get_property(name, atoms, allow_calculation)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's state check plus ``"momenta"`` and ``"masses"``: the jump and the force depend on them."""
        changes = super().check_state(atoms, tol=tol)
        if self.atoms is not None:
            if not equal(self.atoms.get_momenta(), atoms.get_momenta(), atol=tol):
                changes.append("momenta")
            if not equal(self.atoms.get_masses(), atoms.get_masses(), atol=tol):
                changes.append("masses")
        return changes

    def calculate(self, atoms: Optional[Atoms] = None, properties: Any = None, system_changes: Any = None) -> None:
        Calculator.calculate(self, atoms, properties or ["forces"], system_changes)
        atoms = self.atoms
        positions = atoms.get_positions()
        velocities = atoms.get_velocities()
        masses = atoms.get_masses()
        index = self._check_atoms(atoms)
        model_velocities, source = self._velocity_input(positions, velocities)
        jump = self._predict(positions[index], model_velocities[index], self._node_attrs(atoms, index),
                             self._held_pairs(atoms, index))
        jumped = positions.copy()
        jumped[index] = jump.positions
        self.results = {
            "jumped_positions": jumped,
            "forces": transport_forces(positions, jumped, velocities, masses, self.timestep),
        }
        if jump.virtual_positions is not None:
            self.results["virtual_positions"] = np.array(jump.virtual_positions, dtype=np.float64)
        if jump.velocities is not None:
            new_v = np.zeros_like(positions)
            new_v[index] = velocity_from_angstrom_per_ps(jump.velocities)
            self.results["jumped_velocities"] = new_v
        self.last_velocity_source = source
        # The Atoms are about to be moved by this jump; asked again at the same positions, the
        # same model input is reused only if it came from the history.
        self.history.record(positions, jumped, model_velocities if source == "history" else None)

    # -- jump history --------------------------------------------------------------------------

    def set_previous_positions(self, previous_positions: np.ndarray, positions: np.ndarray) -> None:
        """Declare that ``positions`` (N, 3) Å were reached by one jump Δt from ``previous_positions``.

        The next calculation at ``positions`` feeds a backward-convention model
        ``(positions − previous_positions) / Δt``, e.g. with the MD frame Δt before the start frame.
        """
        previous = np.array(previous_positions, dtype=np.float64)
        current = np.array(positions, dtype=np.float64)
        if previous.shape != current.shape or current.ndim != 2 or current.shape[1] != 3:
            raise DataError(
                f"set_previous_positions: shapes {previous.shape} and {current.shape} must be equal (N, 3)"
            )
        self.history.record(previous, current)
        self.reset()

    def forget_history(self) -> None:
        """The next calculation uses the Atoms' velocities as model input (until a jump is computed)."""
        self.history.forget()
        self.reset()

    def get_jumped_positions(self, atoms: Optional[Atoms] = None) -> np.ndarray:
        return self.get_property("jumped_positions", atoms)

    def get_virtual_positions(self, atoms: Optional[Atoms] = None) -> np.ndarray:
        return self.get_property("virtual_positions", atoms)

    # -- internals -----------------------------------------------------------------------------

    def _check_atoms(self, atoms: Atoms) -> np.ndarray:
        n = len(atoms)
        spec = self.predictor.spec
        if np.any(atoms.pbc):
            raise DataError(
                "ASE Atoms: periodic boundary conditions are not supported (the model's graphs use "
                "Cartesian distances); make molecules whole and set atoms.pbc = False"
            )
        if self.selection_indices is None:
            index = np.arange(n)
            described = f"{n} atoms"
        else:
            index = self.selection_indices
            if index.size and (index.min() < -n or index.max() >= n):
                raise DataError(f"selection_indices: out of range for {n} atoms")
            described = f"{index.size} selected atoms (of {n})"
        if spec.num_nodes is not None and index.size != spec.num_nodes:
            raise CheckpointError(
                f"{self.checkpoint_name}: the ASE Atoms have {described} but the checkpoint was "
                f"trained on {spec.num_nodes} atoms (selection {spec.selection!r}); pass "
                "selection_indices or build the Atoms from that selection"
            )
        return index

    def _velocity_input(self, positions: np.ndarray, velocities_ase: np.ndarray) -> tuple[np.ndarray, str]:
        """Model input velocities in Å/ps and where they came from (see the module docstring)."""
        spec = self.predictor.spec
        if self.velocity_input == "auto" and spec.velocity_convention == BACKWARD:
            velocity = self.history.velocity(positions)
            if velocity is not None:
                return velocity, "history"
        if self.predictor.spec.velocity_convention != "physical" and not self._warned_approximation:
            if self.velocity_input == "auto":
                warnings.warn(
                    f"{self.checkpoint_name}: the model expects {self.predictor.spec.velocity_convention!r} "
                    "velocities (a mean over the previous jump) and no previous jump is known; using the "
                    "Atoms' instantaneous velocities as an approximation (see "
                    "FastEGNNCalculator.set_previous_positions)",
                    FastEGNNWarning,
                    stacklevel=4,
                )
            self._warned_approximation = True
        return velocity_to_angstrom_per_ps(velocities_ase), "atoms"

    def _node_attrs(self, atoms: Atoms, index: np.ndarray) -> Optional[np.ndarray]:
        """The model's node attributes: the ones given, else (identity checkpoints) computed from the
        Atoms' names and residue names (``atoms.arrays["atomtypes"]``, ``["residuenames"]``, as ASE's
        PDB reader and `atoms_from_mdanalysis` store them), else None (the checkpoint's)."""
        if self.node_attrs is not None or not self.predictor.uses_identity:
            return self.node_attrs
        names, residues = atoms.arrays.get(ATOM_NAMES), atoms.arrays.get(RESIDUE_NAMES)
        if names is None or residues is None:
            raise DataError(
                f"ASE Atoms: {self.checkpoint_name} computes its node attributes from atom identity and the Atoms "
                f"have no atoms.arrays[{ATOM_NAMES!r}] and [{RESIDUE_NAMES!r}]; build them with "
                "atoms_from_mdanalysis, read a PDB with ase.io, or pass node_attrs"
            )
        symbols = atoms.get_chemical_symbols()
        return self.predictor.identity_attributes(
            [str(n) for n in names[index]], [str(r) for r in residues[index]], [symbols[i] for i in index],
            where="ASE Atoms",
        )

    def _held_pairs(self, atoms: Atoms, index: np.ndarray) -> Optional[np.ndarray]:
        """For sampled or held jumps, the pairs that keep each peptide ω (`metrics.peptide_plane_pairs`),
        from the Atoms' names and residue numbers (``atoms.arrays["atomtypes"]``, ``["residuenumbers"]``);
        None when neither or the Atoms carry no such arrays (bonds and angles are still kept)."""
        names, numbers = atoms.arrays.get(ATOM_NAMES), atoms.arrays.get(RESIDUE_NUMBERS)
        if not (self.sample or self.hold_geometry) or names is None or numbers is None:
            return None
        return metrics.peptide_plane_pairs([str(n) for n in names[index]], np.asarray(numbers)[index])

    def _predict(self, positions: np.ndarray, velocities: np.ndarray, node_attrs: Optional[np.ndarray],
                 held_pairs: Optional[np.ndarray] = None) -> Jump:
        memo = self._memo
        if memo is not None and np.array_equal(memo[0], positions) and np.array_equal(memo[1], velocities):
            return memo[2]
        if self.sample:  # the memo above returns the same draw when the same point is asked again
            jump = self.predictor.sample(positions, velocities, node_attrs, rng=self.rng, held_pairs=held_pairs)
        elif self.hold_geometry:
            jump = MeanJump(self.predictor, HeldGeometry(held_pairs=held_pairs))(positions, velocities, node_attrs,
                                                                                  rng=self.rng)
        else:
            jump = self.predictor.predict(positions, velocities, node_attrs)
        self.model_calls += 1
        self._memo = (positions.copy(), np.array(velocities, copy=True), jump)
        return jump


def _not_implemented_message(name: str) -> str:
    if name in _ENERGY_LIKE:
        return (
            f"FastEGNNCalculator cannot give {name!r}: the model predicts positions one jump Δt "
            "ahead, not energies; its 'forces' are transport forces (2m(x′ − x − vΔt)/Δt²), "
            "not the gradient of any energy"
        )
    return f"FastEGNNCalculator: {name!r} is not available (it gives {FastEGNNCalculator.implemented_properties})"


# --------------------------------------------------------------------------------------------
# Dynamics
# --------------------------------------------------------------------------------------------


class FastEGNNDynamics(MolecularDynamics):
    """ASE molecular dynamics whose step is one learned jump of the checkpoint's Δt.

    ``step()``: positions ← the calculator's jumped positions, then velocities by
    ``velocity_policy``:

    * ``"predicted"``: the model's predicted velocities when it predicts them, else as
      ``"finite-difference"`` (the shipped FastEGNN models predict none).
    * ``"finite-difference"``: ``(x′ − x) / Δt``, the mean velocity over the jump (what a
      backward-convention model takes as input; far below thermal speeds over ps jumps, so the
      logged temperature is not a thermodynamic temperature).
    * ``"maxwell-boltzmann"``: redrawn from Maxwell–Boltzmann at ``temperature_K`` with a
      ``numpy.random.Generator`` seeded with ``seed`` (default 0; None = fresh entropy). For
      backward-convention models the next jump's *input* still comes from the jump history
      (see the calculator's velocity-input policy) unless the calculator has
      ``velocity_input="atoms"``; the drawn velocities enter the transport force, the
      trajectory and the log.

    Atoms outside the calculator's ``selection_indices`` keep their positions and get zero
    velocity. ``timestep`` is Δt in ASE time units; ``get_time()`` is in ASE time units too
    (``ase_time_to_ps`` converts). ``attach``, ``trajectory=`` and observers work as for
    ``VelocityVerlet``; frame 0 is the start, then one frame per ``loginterval`` jumps.

    Logging: ``MDLogger`` cannot be used, because it asks for the potential energy, which
    the calculator does not have (it raises ``PropertyNotImplementedError``). ``logfile=``
    (a path, an open file, or ``"-"`` for stdout) attaches `FastEGNNLogger` instead: time (ps),
    step, RMS and max displacement of the last jump (Å), kinetic energy (eV) and temperature
    (K) of the Atoms' velocities, and the velocity input of the last model call (after a
    step that is the next jump's, which ASE computes right away to cache its forces).

    Parameters
    ----------
    atoms : the ase.Atoms to move.
    model : a `FastEGNNCalculator`, a checkpoint (path, shipped name or Predictor; a calculator
        is made with ``calculator_kwargs``), or None to use ``atoms.calc``.
        ``atoms.calc`` is set to the calculator.
    """

    def __init__(
        self,
        atoms: Atoms,
        model: Union[FastEGNNCalculator, CheckpointLike, None] = None,
        velocity_policy: str = "predicted",
        temperature_K: Optional[float] = None,
        seed: Optional[int] = 0,
        trajectory: Any = None,
        logfile: Union[IO, str, None] = None,
        loginterval: int = 1,
        append_trajectory: bool = False,
        **calculator_kwargs: Any,
    ) -> None:
        if velocity_policy not in VELOCITY_POLICIES:
            raise ValueError(f"velocity_policy must be one of {VELOCITY_POLICIES}, got {velocity_policy!r}")
        if velocity_policy == "maxwell-boltzmann":
            if temperature_K is None or not temperature_K >= 0:
                raise ValueError("velocity_policy='maxwell-boltzmann' needs temperature_K >= 0")
        elif temperature_K is not None:
            raise ValueError(
                f"temperature_K is only used by velocity_policy='maxwell-boltzmann', not {velocity_policy!r}"
            )
        if model is None:
            calc = atoms.calc
            if not isinstance(calc, FastEGNNCalculator):
                raise ValueError("FastEGNNDynamics: give a checkpoint or set atoms.calc = FastEGNNCalculator(...)")
        elif isinstance(model, FastEGNNCalculator):
            calc = model
        else:
            calc = FastEGNNCalculator(model, **calculator_kwargs)
        atoms.calc = calc
        self.calculator = calc
        self.velocity_policy = velocity_policy
        self.temperature_K = temperature_K
        self.rng = np.random.default_rng(seed)
        #: RMS and max displacement (Å) of the last jump; NaN before the first.
        self.last_rms_displacement = math.nan
        self.last_max_displacement = math.nan
        super().__init__(
            atoms, calc.timestep, trajectory=trajectory, logfile=None, loginterval=loginterval,
            append_trajectory=append_trajectory,
        )
        if logfile:
            self.logger = self.closelater(FastEGNNLogger(self, atoms, logfile, comm=self.comm))
            self.attach(self.logger, loginterval)

    def todict(self) -> dict[str, Any]:
        out = super().todict()
        out.update(velocity_policy=self.velocity_policy, temperature_K=self.temperature_K)
        return out

    def step(self) -> None:
        atoms = self.atoms
        calc = self.calculator
        start = atoms.get_positions()
        jumped = calc.get_property("jumped_positions", atoms)
        predicted_v = None
        if self.velocity_policy == "predicted" and "jumped_velocities" in calc.results:
            predicted_v = calc.results["jumped_velocities"].copy()
        atoms.set_positions(jumped)
        end = atoms.get_positions()
        if self.velocity_policy == "maxwell-boltzmann":
            _thermalize(atoms, self.temperature_K, self.rng)
            velocities = atoms.get_velocities()
        elif predicted_v is not None:
            velocities = predicted_v
        else:
            velocities = (end - start) / self.dt
        if calc.selection_indices is not None:
            frozen = np.ones(len(atoms), dtype=bool)
            frozen[calc.selection_indices] = False
            velocities[frozen] = 0.0
        atoms.set_velocities(velocities)
        moved = np.linalg.norm(end - start, axis=1)
        self.last_rms_displacement = float(np.sqrt(np.mean(moved**2))) if moved.size else 0.0
        self.last_max_displacement = float(moved.max(initial=0.0))

    def get_time_ps(self) -> float:
        return ase_time_to_ps(self.get_time())


def _thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ase >= 3.29
    except ImportError:  # pragma: no cover - older ase
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    else:
        thermalize_momenta(atoms, temperature_K, rng=rng)


class FastEGNNLogger(IOContext):
    """Log lines for `FastEGNNDynamics` with what a jump model knows (no energies).

    Columns: ``Time[ps] Step RMSD[Å] MaxDisp[Å] Ekin[eV] T[K] v-input``; RMSD and MaxDisp are
    the RMS and largest atom displacement of the last jump (``nan`` at step 0), Ekin and T come
    from the Atoms' velocities (which follow the velocity policy), v-input is the calculator's
    ``last_velocity_source``.
    """

    header = f"{'Time[ps]':>12} {'Step':>8} {'RMSD[Å]':>10} {'MaxDisp[Å]':>10} {'Ekin[eV]':>12} {'T[K]':>9}  v-input"

    def __init__(self, dyn: FastEGNNDynamics, atoms: Atoms, logfile: Union[IO, str], header: bool = True,
                 mode: str = "a", comm: Any = world) -> None:
        import weakref

        self.dyn = weakref.proxy(dyn)
        self.atoms = atoms
        self.logfile = self.openfile(file=logfile, mode=mode, comm=comm)
        if header:
            self.logfile.write(self.header + "\n")
            self.logfile.flush()

    def __call__(self) -> None:
        dyn, atoms = self.dyn, self.atoms
        source = dyn.calculator.last_velocity_source or "-"
        self.logfile.write(
            f"{dyn.get_time_ps():12.4f} {dyn.nsteps:8d} {dyn.last_rms_displacement:10.4f} "
            f"{dyn.last_max_displacement:10.4f} {atoms.get_kinetic_energy():12.4f} "
            f"{atoms.get_temperature():9.2f}  {source}\n"
        )
        self.logfile.flush()


# --------------------------------------------------------------------------------------------
# Atoms from MDAnalysis
# --------------------------------------------------------------------------------------------

#: Largest |topology mass − standard atomic mass| (amu) for an element to be read off a mass.
MASS_TOLERANCE = 0.1


def atoms_from_mdanalysis(universe_or_atomgroup: Any, frame: Optional[int] = None) -> Atoms:
    """``ase.Atoms`` for an MDAnalysis Universe or AtomGroup at ``frame`` (default: the current one).

    * Elements, per atom: the topology's ``elements`` when it has valid ones; else the element
      whose standard mass is within 0.1 amu of the topology mass; else MDAnalysis' guess from
      the atom *type* (its guesser is protein-aware: type CA -> C). Atom names are never read
      as elements (``ase.io`` makes CA calcium). United-atom masses can mislead the mass rule
      (CH2, 14.03 amu, reads as N) and force-field type names the type guess; give the
      topology elements then.
    * Masses: the topology's (force-field masses, e.g. with hydrogen mass repartitioning).
    * Positions in Å; velocities, when the frame has them, converted from Å/ps to ASE units.
    * No cell and ``pbc=False`` (the calculator does not support periodic systems); the
      MDAnalysis box, if any, is in ``atoms.info["mdanalysis_dimensions"]``.

    Raises
    ------
    DataError
        If an atom's element cannot be determined, or the frame is out of range.
    """
    group = getattr(universe_or_atomgroup, "atoms", universe_or_atomgroup)
    universe = group.universe
    if frame is not None:
        n_frames = len(universe.trajectory)
        if not -n_frames <= frame < n_frames:
            raise DataError(f"frame {frame}: out of range for a trajectory of {n_frames} frames")
        universe.trajectory[frame]
    ts = universe.trajectory.ts
    symbols = _elements(group)
    atoms = Atoms(symbols=symbols, positions=np.asarray(group.positions, dtype=np.float64), pbc=False)
    if hasattr(group, "masses"):
        masses = np.asarray(group.masses, dtype=np.float64)
        if np.all(masses > 0):
            atoms.set_masses(masses)
    if ts.has_velocities:
        atoms.set_velocities(velocity_from_angstrom_per_ps(np.asarray(group.velocities, dtype=np.float64)))
    if hasattr(group, "names") and hasattr(group, "resnames"):  # identity for FastEGNNCalculator (ASE's PDB keys)
        atoms.set_array(ATOM_NAMES, np.array([str(n) for n in group.names]))
        atoms.set_array(RESIDUE_NAMES, np.array([str(r) for r in group.resnames]))
        if hasattr(group, "resids"):
            atoms.set_array(RESIDUE_NUMBERS, np.asarray(group.resids, dtype=int))
    atoms.info["mdanalysis_frame"] = int(ts.frame)
    atoms.info["mdanalysis_time_ps"] = float(ts.time)
    if ts.dimensions is not None:
        atoms.info["mdanalysis_dimensions"] = [float(d) for d in ts.dimensions]
    return atoms


def _element_symbol(text: Any) -> Optional[str]:
    word = str(text).strip()
    if not word:
        return None
    word = word[0].upper() + word[1:].lower()
    return word if word in atomic_numbers and word != "X" else None


def _elements(group: Any) -> list[str]:
    n = len(group)
    elements = list(group.elements) if hasattr(group, "elements") else [None] * n
    masses = np.asarray(group.masses, dtype=np.float64) if hasattr(group, "masses") else np.zeros(n)
    types = list(group.types) if hasattr(group, "types") else [None] * n
    reference = np.asarray(atomic_masses[1:], dtype=np.float64)
    guess = _type_guesser()
    symbols: list[str] = []
    for i in range(n):
        symbol = _element_symbol(elements[i]) if elements[i] is not None else None
        if symbol is None and masses[i] > 0:
            k = int(np.argmin(np.abs(reference - masses[i])))
            if abs(reference[k] - masses[i]) <= MASS_TOLERANCE:
                symbol = chemical_symbols[k + 1]
        if symbol is None and types[i] is not None:
            symbol = _element_symbol(guess(str(types[i])))
        if symbol is None:
            atom = group[i]
            raise DataError(
                f"{universe_label(group)}: cannot tell the element of atom {atom.index} "
                f"(name {atom.name!r}, type {types[i]!r}, mass {masses[i]:.3f}); the topology has no elements"
            )
        symbols.append(symbol)
    return symbols


def _type_guesser() -> Any:
    """MDAnalysis' element guess from an atom type (protein-aware: type CA -> C)."""
    try:
        from MDAnalysis.guesser.default_guesser import DefaultGuesser  # MDAnalysis >= 2.8
    except ImportError:  # pragma: no cover - MDAnalysis 2.7
        from MDAnalysis.topology.guessers import guess_atom_element

        return guess_atom_element
    return DefaultGuesser(None).guess_atom_element


def universe_label(group: Any) -> str:
    return str(getattr(group.universe, "filename", None) or "MDAnalysis universe")
