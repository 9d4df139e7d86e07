"""Adapters between fastegnn-md's core and the tools people already use.

Installed as `fastegnn_md.adapters`. Each module converts units at its boundary so the core
only sees Å, ps and amu (see docs/architecture.md).
"""
