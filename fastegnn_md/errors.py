"""Exceptions with one-line messages meant for users (the CLI prints them as they are)."""


class FastEGNNError(Exception):
    """Base class: the message names the file or argument and what is wrong with it."""


class DataError(FastEGNNError):
    """Input data that cannot be read or does not fit what was asked."""


class NonFiniteJump(FastEGNNError):
    """A model returned NaN or infinite values for finite input (diverging, or broken weights)."""


class CheckpointError(FastEGNNError):
    """A checkpoint that is missing, not a checkpoint, too new, or does not fit the data."""


class FastEGNNWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI shows it in one line)."""


class FastEGNNDeprecationWarning(FutureWarning):
    """A deprecated name or option; shown by default (FutureWarning), in one line by the CLI."""
