"""`fastegnn-md validate`: moved to `fastegnn_md.adapters.openmm.validate`; re-exported here."""

from __future__ import annotations

from .openmm.validate import (
    CHECKPOINT_VERSION,
    RECORD_ARRAYS,
    SPEED_UP_GOAL,
    STEPPER_COUNTERS,
    ValidationResult,
    build_report,
    render_markdown,
    validate,
    write_plot,
)

__all__ = [
    "CHECKPOINT_VERSION", "RECORD_ARRAYS", "SPEED_UP_GOAL", "STEPPER_COUNTERS", "ValidationResult",
    "build_report", "render_markdown", "validate", "write_plot",
]
