"""Entry-point helpers: user errors as one line on stderr and a non-zero exit (single runs); composing a config."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from contrastive.errors import ConfigError, UserError

if TYPE_CHECKING:
    from omegaconf import DictConfig

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


def compose_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """conf/<config_name>.yaml composed with the overrides (Hydra's compose API; no run directory)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from contrastive import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"overrides {' '.join(overrides)!r}: {first}") from exc
