"""User-facing error types: each carries a one-line message naming the field and the value."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, data, paths): printed as one line, no traceback."""


class ConfigError(UserError):
    """A config value is out of range or unknown."""


class DataError(UserError):
    """A data file is missing, empty or malformed."""


class ModelError(UserError):
    """A model cannot be resolved or its weights fail verification."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or inf; a sweeper records the trial as failed."""
