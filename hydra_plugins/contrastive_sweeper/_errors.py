"""The sweeper's error type, in a private module: Hydra's plugin scan re-executes every public module of the
package, which would make a second class under the same name (and an `except` miss the one raised)."""


class SweeperConfigError(ValueError):
    """A bad sweeper setting (`hydra.sweeper.*`): the message is one line naming the key and the value."""


class SweepStopped(BaseException):
    """SIGTERM or SIGINT reached the sweep: unwinds (like KeyboardInterrupt) so the running trials are told FAIL
    with the signal as the reason and queued again, and the callbacks' `on_sweep_error` runs."""

    def __init__(self, signal_name: str, why: str | None = None) -> None:
        super().__init__(why or f"interrupted by {signal_name}")
        self.signal_name = signal_name


class LockTimeout(RuntimeError):
    """A study lock (`lock.study_lock`) was not acquired in time: another worker holds it."""
