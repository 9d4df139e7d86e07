"""Moved to `fastegnn_md.rollouts.sph` (the SPH case of the one rollout pipeline); these names stay
importable from here."""

from .rollouts.sph import SPHRollout, SPHRolloutOutputs, bounds_diagonal, read_trajectory, rollout_sph

__all__ = ["SPHRollout", "SPHRolloutOutputs", "bounds_diagonal", "read_trajectory", "rollout_sph"]
