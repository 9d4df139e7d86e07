"""Moved to `fastegnn_md.rollouts.md` (the MD case of the one rollout pipeline); these names stay
importable from here."""

from .rollouts.md import (
    DEFAULT_CHECKPOINT,
    MDRollout,
    TrajectoryRolloutOutputs,
    default_start,
    fits_pdb,
    resolve_topology,
    rollout_trajectory,
    shipped_models_for,
)

#: The outputs of a trajectory rollout (its old name).
RolloutOutputs = TrajectoryRolloutOutputs

__all__ = [
    "DEFAULT_CHECKPOINT", "MDRollout", "RolloutOutputs", "TrajectoryRolloutOutputs", "default_start", "fits_pdb",
    "resolve_topology", "rollout_trajectory", "shipped_models_for",
]
