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


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the process: unwinds like KeyboardInterrupt, so every clean-up (an MLflow run
    ending KILLED, a trial told FAIL, a staging directory removed) runs with the signal's name as the reason."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
