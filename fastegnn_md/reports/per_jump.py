"""The per-jump table every rollout report is built on: metrics chosen by name, for every predictor.

A report compares predictors (the model and the trivial ones) with reference frames, jump by
jump. A `JumpMetric` computes one number per (predictor, jump); `per_jump_rows` fills one row per
jump with ``row[metric.name] = {predictor: value}`` for every predictor that has a frame there
(a rollout that stopped has fewer), and `summarise` reduces the rows to means, final values and
the model's wins over each trivial predictor, over the jumps where the model has a frame (so
every predictor is scored on the same jumps).

Trajectories are (1 + K_p, N, 3): row 0 the start every predictor begins from, row k its frame
after jump k. Units are the caller's (Å for MD, the dataset's for SPH).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

#: The learned model's name among the predictors.
MODEL = "model"


class JumpMetric:
    """One metric of the per-jump table; subclasses set ``name`` and override `value`.

    ``reference_key``: where the reference's own value goes, if it has one (`reference_value`):
    a key of the row (e.g. ``"reference_radius_of_gyration"``), or ``None`` to store it as the
    entry ``"reference"`` of the metric's own dict when ``reference_in_metric`` is set.
    """

    name: str = ""
    reference_key: Optional[str] = None
    reference_in_metric: bool = False

    def prepare(self, trajectories: dict[str, np.ndarray], references: Sequence[Optional[np.ndarray]]) -> None:
        """Called once before the rows are filled (precompute over whole trajectories here)."""

    def reference_value(self, k: int, reference: np.ndarray) -> Optional[float]:
        """The reference frame's own value at jump ``k`` (None: the metric has none)."""
        return None

    def value(self, name: str, k: int, trajectory: np.ndarray, reference: np.ndarray) -> float:
        """Predictor ``name``'s value at jump ``k`` (``trajectory[k]`` is its frame there)."""
        raise NotImplementedError


def per_jump_rows(
    bases: Sequence[dict[str, Any]],
    references: Sequence[Optional[np.ndarray]],
    trajectories: dict[str, np.ndarray],
    metrics: Sequence[JumpMetric],
    progress: Optional[Callable[[Sequence[int]], Any]] = None,
) -> list[dict[str, Any]]:
    """One row per jump k = 1..len(bases): ``bases[k-1]`` plus every metric's values.

    references[k-1] : the reference frame of jump k, or None (no metrics for that jump: the
    reference has no frame at its time). trajectories : {predictor: (1 + K_p, N, 3)}.
    progress : wraps the jump indices (a tqdm bar) when given.
    """
    for metric in metrics:
        metric.prepare(trajectories, references)
    jumps = range(1, len(bases) + 1)
    rows = []
    for k in progress(jumps) if progress else jumps:
        row = dict(bases[k - 1])
        reference = references[k - 1]
        if reference is not None:
            for metric in metrics:
                own = metric.reference_value(k, reference)
                values: dict[str, float] = {}
                if own is not None and metric.reference_key:
                    row[metric.reference_key] = own
                elif own is not None and metric.reference_in_metric:
                    values["reference"] = own
                row[metric.name] = values
            for name, trajectory in trajectories.items():
                if len(trajectory) <= k:
                    continue
                for metric in metrics:
                    row[metric.name][name] = metric.value(name, k, trajectory, reference)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class SummaryStat:
    """``summary[key][predictor] = reduce(values of metric over the scored jumps)``."""

    key: str
    metric: str
    reduce: Callable[[list[float]], float]


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def final(values: list[float]) -> float:
    return values[-1]


def mean_square(values: list[float]) -> float:
    return float(np.mean(np.square(values)))


def summarise(
    rows: Sequence[dict[str, Any]],
    names: Sequence[str],
    primary: str,
    stats: Sequence[SummaryStat],
    wins: Sequence[str],
) -> dict[str, Any]:
    """Means/final values over the jumps where the model has a ``primary`` value, and wins.

    ``summary["jumps"]`` counts those jumps; each stat is None for a predictor without values;
    ``summary["model_vs_trivial"][name]`` counts, for each metric in ``wins``, the jumps where
    the model's value is lower than ``name``'s (``"model_lower_<metric>"``) out of ``"jumps"``
    with both; ``summary["model_beats_all"][metric]`` counts the jumps where it is lower than
    every other predictor's. Values compare by magnitude, so a signed error (the kinetic-energy
    error) wins by being nearer zero; for the non-negative metrics that is the plain order.
    """
    scored_rows = [row for row in rows if MODEL in row.get(primary, {})]
    summary: dict[str, Any] = {"jumps": len(scored_rows)}
    for stat in stats:
        summary[stat.key] = {}
        for name in names:
            values = [row[stat.metric][name] for row in scored_rows if name in row[primary]]
            summary[stat.key][name] = stat.reduce(values) if values else None
    against: dict[str, Any] = {}
    for name in names:
        if name == MODEL:
            continue
        both = [row for row in scored_rows if name in row[primary]]
        against[name] = {f"model_lower_{metric}": sum(_lower(row[metric], MODEL, name) for row in both)
                         for metric in wins}
        against[name]["jumps"] = len(both)
    summary["model_vs_trivial"] = against
    summary["model_beats_all"] = {
        metric: sum(beats_all(row[metric]) for row in scored_rows if row.get(metric, {}).get(MODEL) is not None)
        for metric in wins
    }
    return summary


def beats_all(values: dict[str, Optional[float]]) -> bool:
    """Whether the model's value (``values[MODEL]``) is nearer zero than every other predictor's
    in one jump's row of a metric (the reference's own entry and missing values left out)."""
    return all(_lower(values, MODEL, name) for name, value in values.items()
               if name not in (MODEL, "reference") and value is not None)


def _lower(values: dict[str, float], name: str, other: str) -> bool:
    """Whether ``name``'s value is nearer zero than ``other``'s (see `summarise`)."""
    return abs(values[name]) < abs(values[other])


def with_start(start: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(1 + K, N, 3): the shared start frame, then a predictor's K frames (float64)."""
    return np.concatenate([np.asarray(start, np.float64)[None], np.asarray(frames, np.float64).reshape(-1, *start.shape)])
