"""Moved to `fastegnn_md.reports.sph` (the SPH rollout report); these names stay importable from here."""

from .reports.sph import (
    FRAMES_SHOWN,
    SinkhornSettings,
    SPHReportInputs,
    compare,
    render_markdown,
    shown_jumps,
    write_plots,
    write_report,
)

__all__ = [
    "FRAMES_SHOWN", "SinkhornSettings", "SPHReportInputs", "compare", "render_markdown", "shown_jumps",
    "write_plots", "write_report",
]
