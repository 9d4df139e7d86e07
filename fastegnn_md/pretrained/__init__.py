"""Shipped checkpoints, resolvable by name (see `fastegnn_md.checkpoint.resolve_checkpoint`)."""
