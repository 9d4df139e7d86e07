"""fastegnn-md: learned E(3)-equivariant jumps for molecular dynamics (FastEGNN, ICML 2024)."""

__version__ = "0.1.0"

from .runtime import prefer_passive_waiting  # noqa: E402  (before torch loads OpenMP)

prefer_passive_waiting()

from .graph import FramePair, GraphBatch, collate  # noqa: E402

__all__ = ["FramePair", "GraphBatch", "collate", "__version__", "FastEGNNCalculator", "FastEGNNDynamics"]

# The ASE adapter is imported on first use, so `import fastegnn_md` does not import ase.
_LAZY = {"FastEGNNCalculator": "fastegnn_md.adapters.ase", "FastEGNNDynamics": "fastegnn_md.adapters.ase"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
