"""The unit boundary: OpenMM's nm (nm/ps) <-> fastegnn-md's Å (Å/ps), and the OpenMM imports.

Every other submodule takes ``openmm``, ``app`` and ``unit`` from here, so a missing OpenMM is
reported once, with the install hint, whichever submodule is imported first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # OpenMM is an optional dependency of the package but required by this module.
    import openmm
    import openmm.app as app
    import openmm.unit as unit
except ImportError as _exc:  # pragma: no cover - exercised only without openmm installed
    raise ImportError("fastegnn_md.adapters.openmm needs OpenMM: pip install openmm pdbfixer") from _exc

NM_TO_ANGSTROM = 10.0


def nm_to_angstrom(values: Any) -> np.ndarray:
    """nm (or nm/ps) -> Å (or Å/ps); a float64 array."""
    return np.asarray(values, dtype=np.float64) * NM_TO_ANGSTROM


def angstrom_to_nm(values: Any) -> np.ndarray:
    """Å (or Å/ps) -> nm (or nm/ps); a float64 array."""
    return np.asarray(values, dtype=np.float64) / NM_TO_ANGSTROM


__all__ = ["NM_TO_ANGSTROM", "angstrom_to_nm", "app", "nm_to_angstrom", "openmm", "unit"]
