"""Entry-point helpers: user errors (config mistakes too) as one line on stderr and exit 2; composing a config."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from omegaconf import DictConfig

from contrastive import stop
from contrastive.errors import ConfigError, Interrupted, TrainingDiverged, UserError

log = logging.getLogger("contrastive")


def in_multirun() -> bool:
    """True inside a Hydra multirun job, where errors must propagate to the sweeper as failed trials."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def remove_refused_run_dir() -> None:
    """A single run refused before any work leaves no run directory: Hydra's job dir goes when it holds only
    Hydra's own files (.hydra/, the job's log), and so does its date folder when that is left empty."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    own = {".hydra", f"{hc.job.name}.log"}
    if not out.is_dir() or any(p.name not in own for p in out.iterdir()):
        return
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(OSError):
        out.parent.rmdir()  # only when empty: other runs of that day stay


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError (or a diverged training: the settings made the loss non-finite) as `error: <message>` and
    exit 2, unless a sweeper is waiting for the exception (it records the trial as failed); a refused run leaves no
    empty run directory behind."""
    try:
        yield
    except (UserError, TrainingDiverged) as exc:
        if in_multirun():
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        remove_refused_run_dir()
        raise SystemExit(2) from None


def config_error_line(exc: BaseException) -> str:
    """One line from a Hydra / OmegaConf composition error, naming the key and the value where it can."""
    from omegaconf.errors import OmegaConfBaseException

    def first(e: BaseException) -> str:
        text = str(getattr(e, "msg", None) or e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        reason = first(cause)
        if cause is exc:
            return f"{key}: {reason}" if key else reason
        return f"{key}: {reason} ({first(exc)})" if key else f"{first(exc)}: {reason}"
    options = list(getattr(exc, "options", None) or [])
    return f"{first(exc)} (choose one of {', '.join(map(str, options))})" if options else first(exc)


def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """`@hydra.main` on conf/<config_name>.yaml whose config mistakes are one line and exit 2.

    A config that does not compose (an unknown group option, a typo'd key, a value of the wrong type for the
    schema in contrastive/settings.py) prints `error: ...` and exits 2, as a ConfigError raised by the task
    does, instead of Hydra's several lines and exit 1. Hydra re-raises such errors only under
    HYDRA_FULL_ERROR=1, which this sets while it runs. SIGTERM and SIGINT unwind the job (runs end KILLED,
    trials FAIL, with the signal as the reason), print `stopped: interrupted by SIG...` and exit 128 + the signal.
    """
    import hydra

    from contrastive import CONF_DIR

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

        @functools.wraps(task)
        def entry() -> Any:
            from hydra.errors import HydraException
            from omegaconf.errors import OmegaConfBaseException

            previous = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                with stop.signals_unwind():
                    return main()
            except Interrupted as exc:
                print(f"stopped: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(128 + signal.Signals[exc.signal_name].value) from None
            except (HydraException, OmegaConfBaseException) as exc:
                print(f"error: {config_error_line(exc)}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            except UserError as exc:  # raised outside the task (e.g. by the sweeper)
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            finally:
                if previous is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = previous

        return entry

    return decorate


def compose_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """conf/<config_name>.yaml composed with the overrides (Hydra's compose API; no run directory); a config
    that does not compose is a one-line ConfigError. It works inside a running Hydra app too (reproduce composes
    its stages' training config): that app's Hydra is set aside while this one composes, then put back."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from contrastive import CONF_DIR

    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()  # initialize_config_dir refuses to start beside an initialized Hydra
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(config_error_line(exc)) from exc
    finally:
        if running is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(running)
