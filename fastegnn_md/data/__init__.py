"""Datasets: generators and readers that turn data on disk into `fastegnn_md.graph.FramePair`s."""
