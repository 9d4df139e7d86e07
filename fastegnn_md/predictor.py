"""Predictor: numpy in, numpy out. The one way adapters (rollout, ASE, OpenMM) use a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from . import spec_keys
from .checkpoint import Checkpoint, DataSpec, load_checkpoint
from .chemistry import identity_attributes, uses_identity
from .errors import DataError, NonFiniteJump
from .graph import FramePair, collate
from .models import JumpModel
from .models.precision import check_precision, precision_context
from .runtime import tune_allocator
from .local_geometry import HeldGeometry
from .spread import JumpSpread, node_invariants


@dataclass
class Jump:
    """Result of one learned jump.

    positions : (N, 3) or (B, N, 3) positions after ``dt``, same length unit as the input.
    velocities : predicted velocities of the same shape, or None if the model does not predict them.
    virtual_positions : (C, 3) or (B, C, 3) virtual-node coordinates, or None.
    dt : jump length in the checkpoint's time unit.
    mean : for a sampled jump (`Predictor.sample`), the model's mean positions the sample was
        drawn around (``positions`` is the sample); for a mean jump with its geometry held
        (`fastegnn_md.rollout.MeanJump`), the model's positions before that; else None.
    spread : for a sampled jump, the per-node scale σ (N,) or (B, N), length unit; else None.
    """

    positions: np.ndarray
    velocities: Optional[np.ndarray]
    virtual_positions: Optional[np.ndarray]
    dt: float
    mean: Optional[np.ndarray] = None
    spread: Optional[np.ndarray] = None


class Predictor:
    """Applies a trained model to coordinates given as numpy arrays.

    Units are the checkpoint's (``predictor.spec.units``): Å and Å/ps for molecular models.
    ``precision`` ("full" or "bf16-mixed", `fastegnn_md.models.precision`) is how every jump
    computes; "bf16-mixed" needs float32.
    Creating a Predictor calls `fastegnn_md.runtime.tune_allocator` (keeps freed memory in the
    process so repeated jumps do not page-fault their temporaries again).
    """

    def __init__(
        self,
        model: JumpModel,
        spec: DataSpec,
        model_name: str = "",
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        checkpoint: Optional[Checkpoint] = None,
        precision: str = "full",
    ) -> None:
        check_precision(precision, device, dtype)  # a ValueError now, not at the first jump
        tune_allocator()
        self.precision = precision
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.spec = spec
        self.model_name = model_name
        self.checkpoint = checkpoint

    @classmethod
    def from_checkpoint(
        cls,
        path_or_name: Union[str, Path],
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        precision: str = "full",
    ) -> "Predictor":
        ckpt = load_checkpoint(path_or_name)
        return cls(ckpt.build_model(), ckpt.data_spec, ckpt.model_name, device, dtype, ckpt, precision)

    @property
    def name(self) -> str:
        """The checkpoint file (or the model's name) for messages."""
        path = getattr(self.checkpoint, "path", None)
        return str(path) if path else (self.model_name or "model")

    @property
    def dt(self) -> float:
        return float(self.spec.dt)

    @property
    def uses_identity(self) -> bool:
        """True if the model's node attributes come from atom identity (`fastegnn_md.chemistry`):
        give them with `identity_attributes` (names, residue names, elements) for each system."""
        return uses_identity(self.spec)

    def identity_attributes(self, names, residue_names, elements=None, where: str = "atoms") -> np.ndarray:
        """(N, 32) node attributes of atoms with these names, residue names and elements (see
        `fastegnn_md.chemistry.identity_attributes`), for a checkpoint that `uses_identity`."""
        return identity_attributes(names, residue_names, elements, where=where)

    def default_node_attrs(self, num_nodes: int) -> np.ndarray:
        if self.uses_identity:
            raise DataError(
                "node_attrs: the checkpoint's node attributes come from atom identity (role, residue, element); "
                "pass node_attrs=predictor.identity_attributes(names, residue_names)"
            )
        stored = self.spec.extra.get(spec_keys.NODE_ATTRS)
        if stored is not None:
            attrs = np.asarray(stored, dtype=np.float64)
            if attrs.shape[0] == num_nodes:
                return attrs.reshape(num_nodes, -1)
        if self.spec.num_node_attrs == 0:
            return np.zeros((num_nodes, 0))
        raise DataError(
            f"node_attrs: the checkpoint needs {self.spec.num_node_attrs} attributes per node "
            f"and stores none for {num_nodes} nodes; pass node_attrs"
        )

    def default_moving(self, attrs: np.ndarray) -> Optional[np.ndarray]:
        """(N,) bool moving mask from one-hot node attributes, or None (every node moves).

        SPH checkpoints record which attribute columns mark kinematic particles (walls) in
        ``spec.extra[spec_keys.KINEMATIC_ATTR_COLUMNS]``; a node with a 1 in any of them is not moving.
        """
        columns = self.spec.extra.get(spec_keys.KINEMATIC_ATTR_COLUMNS)
        if not columns:
            return None
        return ~(attrs[:, list(columns)] > 0.5).any(axis=1)

    def predict(
        self,
        positions: np.ndarray,
        velocities: np.ndarray,
        node_attrs: Optional[np.ndarray] = None,
        *,
        moving: Optional[np.ndarray] = None,
        kinematic_positions: Optional[np.ndarray] = None,
    ) -> Jump:
        """One learned jump for one frame (N, 3) or a batch of frames (B, N, 3).

        Raises DataError for malformed or non-finite input, and `NonFiniteJump` (naming the
        checkpoint) when the model's output is not finite.

        positions in the checkpoint's length unit, velocities in length/time following the
        checkpoint's velocity convention; node_attrs (N, F) defaults to the ones stored in the
        checkpoint. Graphs are built with the checkpoint's cutoff and drop rate.

        moving : (N,) bool, the nodes the model predicts; default from the node attributes for
            SPH checkpoints (`default_moving`: walls are not moving), else all nodes.
        kinematic_positions : positions after the jump, same shape as ``positions``, of which
            only the non-moving rows are used: where walls or other kinematic particles will be
            (their motion is prescribed). Default: they stay at their input positions. The
            returned positions of non-moving nodes are these (`JumpModel.forward`).
        """
        positions = np.asarray(positions, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        single = positions.ndim == 2
        if single:
            positions, velocities = positions[None], velocities[None]
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise DataError(f"positions: expected shape (N, 3) or (B, N, 3), got {positions.shape}")
        if velocities.shape != positions.shape:
            raise DataError(f"velocities: shape {velocities.shape} does not match positions {positions.shape}")
        num_nodes = positions.shape[1]
        attrs = self.default_node_attrs(num_nodes) if node_attrs is None else np.asarray(node_attrs, np.float64)
        if attrs.ndim == 1:
            attrs = attrs[:, None]
        if attrs.shape[0] != num_nodes:
            raise DataError(f"node_attrs: has {attrs.shape[0]} rows for {num_nodes} nodes")
        self.spec.check_fits(attrs.shape[1], num_nodes, where="input")
        if not (np.isfinite(positions).all() and np.isfinite(velocities).all()):
            raise DataError("positions/velocities: contain NaN or infinite values")
        moving = self.default_moving(attrs) if moving is None else np.asarray(moving, dtype=bool)
        if moving is not None and moving.shape != (num_nodes,):
            raise DataError(f"moving: expected shape ({num_nodes},), got {moving.shape}")
        if kinematic_positions is None:
            later = positions
        else:
            later = np.asarray(kinematic_positions, dtype=np.float64)
            if single:
                later = later[None]
            if later.shape != positions.shape:
                raise DataError(f"kinematic_positions: shape {later.shape} does not match positions {positions.shape}")

        # The "target" of a prediction-only pair is where non-moving nodes end up (see above).
        pairs = [FramePair(x, v, y, attrs, moving=moving) for x, v, y in zip(positions, velocities, later)]
        batch = collate(pairs, cutoff=self.spec.cutoff, drop_rate=self.spec.drop_rate, dtype=self.dtype)
        with torch.inference_mode(), precision_context(self.precision, self.device, self.dtype):
            out = self.model(batch.to(self.device))
        jumped = out.positions.double().cpu().numpy().reshape(positions.shape)
        new_v = None if out.velocities is None else out.velocities.double().cpu().numpy().reshape(positions.shape)
        virtual = None if out.virtual_positions is None else out.virtual_positions.double().cpu().numpy()
        for name, values in (("positions", jumped), ("velocities", new_v), ("virtual-node positions", virtual)):
            if values is not None and not np.isfinite(values).all():
                raise NonFiniteJump(
                    f"{self.name}: the model predicted non-finite {name} from finite input "
                    "(it is diverging, or its weights are broken)"
                )
        if single:
            jumped = jumped[0]
            new_v = None if new_v is None else new_v[0]
            virtual = None if virtual is None else virtual[0]
        return Jump(positions=jumped, velocities=new_v, virtual_positions=virtual, dt=self.dt)

    # -- stochastic jumps ---------------------------------------------------------------------

    @property
    def spread(self) -> Optional[JumpSpread]:
        """The checkpoint's fitted `JumpSpread` (added by ``fastegnn-md calibrate``), or None."""
        stored = self.spec.extra.get(spec_keys.SPREAD)
        return None if stored is None else JumpSpread.from_dict(stored)

    def require_spread(self) -> JumpSpread:
        """The checkpoint's `JumpSpread`; DataError (one line, what to run) when it has none."""
        spread = self.spread
        if spread is None:
            raise DataError(
                f"{self.name}: has no fitted spread, so its jumps cannot be sampled; run "
                "`fastegnn-md calibrate CHECKPOINT --out NEW.pt` on it (or use the mean jump)"
            )
        return spread

    def sample(
        self,
        positions: np.ndarray,
        velocities: np.ndarray,
        node_attrs: Optional[np.ndarray] = None,
        *,
        rng: Optional[np.random.Generator] = None,
        seed: Optional[int] = None,
        moving: Optional[np.ndarray] = None,
        kinematic_positions: Optional[np.ndarray] = None,
        scale: float = 1.0,
        held_pairs: Optional[np.ndarray] = None,
    ) -> Jump:
        """One jump drawn from the checkpoint's spread around the model's mean (`fastegnn_md.spread`).

        Same inputs and units as `predict`; randomness from ``rng`` (or ``numpy.random.default_rng(seed)``).
        Returns a `Jump` whose ``positions`` are the sample, ``mean`` the model's prediction and
        ``spread`` the per-node σ. Nodes that do not move get no noise. A spread with a
        ``geometry_cutoff`` (molecules) then restores the start's local distances
        (`fastegnn_md.local_geometry.HeldGeometry`). Raises DataError when
        the checkpoint has no spread (``fastegnn-md calibrate`` fits one). ``scale`` multiplies
        the noise (1: the calibrated spread; the OpenMM stepper exposes it as ``sample_scale``).
        ``held_pairs`` (P, 2) node indices whose start distances are restored as well, where the
        caller knows the topology: `fastegnn_md.metrics.peptide_plane_pairs` keeps every peptide ω
        (bonds and angles alone leave it free, and full-spread samples of AdK turned 52 of its 213
        peptide bonds cis in 100 jumps).
        """
        if not scale >= 0:
            raise DataError(f"scale: must be a non-negative factor on the spread, got {scale}")
        spread = self.require_spread()
        generator = rng if rng is not None else np.random.default_rng(seed)
        jump = self.predict(positions, velocities, node_attrs, moving=moving, kinematic_positions=kinematic_positions)
        x = np.asarray(positions, dtype=np.float64)
        v = np.asarray(velocities, dtype=np.float64)
        single = x.ndim == 2
        xs, vs, means = (x[None], v[None], jump.positions[None]) if single else (x, v, jump.positions)
        num_nodes = xs.shape[1]
        attrs = self.default_node_attrs(num_nodes) if node_attrs is None else np.asarray(node_attrs, np.float64)
        attrs = attrs.reshape(num_nodes, -1)
        if moving is None:
            moving = self.default_moving(attrs)
        samples, scales = [], []
        for xi, vi, mi in zip(xs, vs, means):
            invariants = node_invariants(xi, mi, vi, attrs, self.dt, spread.packing_radius)
            try:
                sigma = spread.scales(invariants)
                noise = scale * spread.sample_noise(xi, sigma, generator, moving)
            except ValueError as exc:
                raise DataError(f"{self.name}: {exc}") from None
            drawn = mi + noise
            if spread.geometry_cutoff:  # bonds and angles as at the start (fastegnn_md.local_geometry)
                drawn = HeldGeometry(spread.geometry_cutoff, held_pairs).restore(xi, drawn, moving)
            samples.append(drawn)
            scales.append(sigma)
        sampled, sigma = np.stack(samples), np.stack(scales)
        if single:
            sampled, sigma = sampled[0], sigma[0]
        return Jump(positions=sampled, velocities=jump.velocities, virtual_positions=jump.virtual_positions,
                    dt=jump.dt, mean=jump.positions, spread=sigma)
