"""Moved to `fastegnn_md.reports.md` (the MD rollout report) and `fastegnn_md.reports.files`;
these names stay importable from here."""

from .reports.files import write_report_files
from .reports.md import (
    CONTACT_CUTOFF,
    CONTACT_MIN_SEPARATION,
    MODEL,
    ReportInputs,
    compare,
    reference_frame_at,
    render_markdown,
    write_plots,
    write_report,
)

__all__ = [
    "CONTACT_CUTOFF", "CONTACT_MIN_SEPARATION", "MODEL", "ReportInputs", "compare", "reference_frame_at",
    "render_markdown", "write_plots", "write_report", "write_report_files",
]
