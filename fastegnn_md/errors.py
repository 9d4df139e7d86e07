"""Exceptions with one-line messages meant for users (the CLI prints them as they are)."""


class FastEGNNError(Exception):
    """Base class: the message names the file or argument and what is wrong with it."""


class DataError(FastEGNNError):
    """Input data that cannot be read or does not fit what was asked."""


class CheckpointError(FastEGNNError):
    """A checkpoint that is missing, not a checkpoint, too new, or does not fit the data."""
