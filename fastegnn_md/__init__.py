"""fastegnn-md: learned E(3)-equivariant jumps for molecular dynamics (FastEGNN, ICML 2024)."""

__version__ = "0.1.0"

from .graph import FramePair, GraphBatch, collate  # noqa: E402

__all__ = ["FramePair", "GraphBatch", "collate", "__version__"]
