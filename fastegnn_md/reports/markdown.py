"""The Markdown renderer of every report: a document built line by line, tables, number formats."""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

#: Shown where a value is missing (no frame, no reference, NaN).
MISSING = "–"


def fixed(value: Optional[float], digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or `MISSING`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"


def significant(value: Optional[float], digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, or `MISSING`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}g}"


class MarkdownDocument:
    """A Markdown document: a title, then bullets, headings, paragraphs and tables in order."""

    def __init__(self, title: str) -> None:
        self.lines: list[str] = [f"# {title}", ""]

    def line(self, text: str = "") -> "MarkdownDocument":
        self.lines.append(text)
        return self

    def bullet(self, text: str) -> "MarkdownDocument":
        self.lines.append(f"- {text}")
        return self

    def bullets(self, items: Iterable[str]) -> "MarkdownDocument":
        for item in items:
            self.bullet(item)
        return self

    def heading(self, title: str) -> "MarkdownDocument":
        self.lines += ["", f"## {title}", ""]
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]], numeric: bool = True) -> "MarkdownDocument":
        """A table; with ``numeric`` every column after the first is right-aligned."""
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" + ("---:|" if numeric else "---|") * (len(header) - 1))
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")
        return self

    def notes(self, notes: Sequence[str]) -> "MarkdownDocument":
        if notes:
            self.heading("Notes").bullets(notes)
        return self

    def plots(self, plots: dict[str, str]) -> "MarkdownDocument":
        """Embed ``{plot name: file name}`` images under "Plots"."""
        if plots:
            self.heading("Plots")
            self.lines += [f"![{name}]({file})" for name, file in plots.items()]
        return self

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def info_bullets(document: MarkdownDocument, info: dict, keys: Sequence[str]) -> None:
    """One bullet ``- <key with spaces>: `value``` for each of ``keys`` that ``info`` has."""
    for key in keys:
        if key in info:
            document.bullet(f"{key.replace('_', ' ')}: `{info[key]}`")
