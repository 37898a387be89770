"""The sweeper's error type, in a private module: Hydra's plugin scan re-executes every public module of the
package, which would make a second class under the same name (and an `except` miss the one raised)."""


class SweeperConfigError(ValueError):
    """A bad sweeper setting (`hydra.sweeper.*`): the message is one line naming the key and the value."""
