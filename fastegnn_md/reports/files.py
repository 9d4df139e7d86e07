"""The file set of a report, each file written atomically: ``<stem>.json``, its plots, ``<stem>.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io import write_atomically

#: ``write_plots(directory) -> {plot name: path}``.
PlotWriter = Callable[[Path], dict[str, Path]]
#: ``render_markdown(report, {plot name: file name}) -> text``.
MarkdownRenderer = Callable[[dict[str, Any], dict[str, str]], str]


def write_report_files(
    report: dict[str, Any],
    directory: Path,
    write_plots: PlotWriter,
    render_markdown: MarkdownRenderer,
    stem: str = "report",
) -> dict[str, Path]:
    """Write ``<stem>.json``, the plots ``write_plots(directory)`` writes and ``<stem>.md``
    (``render_markdown(report, {name: plot file name})``) into ``directory``.

    Returns {"json": path, "markdown": path, plot name: path, ...}. The JSON is written first,
    the Markdown last, so a directory with the Markdown holds a whole report.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / f"{stem}.json", "markdown": directory / f"{stem}.md"}
    write_json(paths["json"], report)
    plots = write_plots(directory)
    paths.update(plots)
    markdown = render_markdown(report, {name: path.name for name, path in plots.items()})
    write_atomically(paths["markdown"], lambda handle: handle.write(markdown.encode()))
    return paths


def write_json(path: Path, value: Any) -> Path:
    """``value`` as indented JSON (numpy scalars and arrays converted), written atomically."""
    text = json.dumps(value, indent=2, default=json_default) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def json_default(value: Any) -> Any:
    """`json.dumps` fallback for numpy integers, floats and arrays."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
