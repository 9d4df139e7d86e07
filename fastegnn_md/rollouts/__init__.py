"""Rollouts with reports, for every kind of data (application layer).

`.pipeline` is the one pipeline (`run_rollout`, `RolloutCase`, `FrameSink`); `.md` and `.sph`
are the cases of MD trajectories and SPH datasets. Importing this package registers both.
"""

from .md import MDRollout, rollout_trajectory
from .pipeline import FrameSink, RolloutCase, RolloutOutputs, RolloutRequest, rollout_case_for, rollout_kinds, run_rollout
from .sph import SPHRollout, rollout_sph

__all__ = [
    "FrameSink", "MDRollout", "RolloutCase", "RolloutOutputs", "RolloutRequest", "SPHRollout", "rollout_case_for", "rollout_kinds",
    "rollout_sph", "rollout_trajectory", "run_rollout",
]
