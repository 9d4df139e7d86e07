"""Figures for reports: made with matplotlib's Figure API (never pyplot, so writing a report does
not change the plotting backend of the caller's session, and a notebook keeps its inline plots),
saved atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..io import write_atomically

DPI = 110


def new_figure(figsize: tuple[float, float] = (5.5, 3.8), **kwargs: Any) -> Any:
    """A matplotlib Figure with an Agg canvas (``kwargs`` go to Figure, e.g. ``layout``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


class PlotSet:
    """The PNG files of one report: `save` writes ``<directory>/<name>.png`` and remembers it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.paths: dict[str, Path] = {}

    def save(self, fig: Any, name: str, tight: bool = True) -> Path:
        path = self.directory / f"{name}.png"
        options = {"bbox_inches": "tight"} if tight else {}
        write_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=DPI, **options))
        self.paths[name] = path
        return path


def series(rows: Sequence[dict[str, Any]], x_key: str, metric: str, name: str) -> tuple[list[Any], list[float]]:
    """(x, value) of predictor ``name`` for ``metric`` over the per-jump rows that have it."""
    points = [(row[x_key], row[metric][name]) for row in rows if name in row.get(metric, {})]
    return [p[0] for p in points], [p[1] for p in points]


def plot_predictors(ax: Any, rows: Sequence[dict[str, Any]], x_key: str, metric: str, names: Sequence[str]) -> None:
    """One line with markers per predictor: ``metric`` against ``x_key``."""
    for name in names:
        ax.plot(*series(rows, x_key, metric, name), marker="o", ms=3, label=name)
