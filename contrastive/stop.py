"""Stopping on SIGTERM / SIGINT: the signal raises `Interrupted` so every clean-up on the way out runs.

A signal handler's exception can land where Python swallows it (a garbage-collection callback prints "Exception
ignored" and goes on), so the signal is also remembered and `check()`, called at every training step and encode
batch, raises it again until the job unwinds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from contrastive.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: list[str] = []  # the signal received, until the process unwinds


def _on_signal(signum: int, frame: Any) -> None:
    _pending[:] = [signal.Signals(signum).name]
    raise Interrupted(_pending[0])


def check() -> None:
    """Raise `Interrupted` if a stop signal arrived (a no-op otherwise: cheap enough for every step)."""
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread while inside (the default SIGTERM ends the process
    on the spot, skipping every clean-up); the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        _pending.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
