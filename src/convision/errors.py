"""Errors a user can fix. The CLI prints them as one line and exits with code 2.

Anything else that escapes is a bug in convision: the CLI exits with code 1 and ``--debug``
shows the traceback.
"""

from __future__ import annotations


class ConvisionError(Exception):
    """A problem with the user's input, files or settings; the message says what and where."""


class DataError(ConvisionError):
    """A data file is missing, unreadable or inconsistent (message starts with the path)."""


class ConfigError(ConvisionError):
    """An unknown or invalid setting."""


class CheckpointError(ConvisionError):
    """A checkpoint is missing, corrupt or not a convision checkpoint."""


class TrainingDiverged(ConvisionError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
