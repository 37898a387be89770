"""Turning user errors into one line on stderr and a non-zero exit, in single runs."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from contrastive.errors import UserError

log = logging.getLogger("contrastive")


def in_multirun() -> bool:
    """True inside a Hydra multirun job, where errors must propagate to the sweeper as failed trials."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError as `error: <message>` and exit 2, unless a sweeper is waiting for the exception."""
    try:
        yield
    except UserError as exc:
        if in_multirun():
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
