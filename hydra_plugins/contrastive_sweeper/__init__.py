"""A Hydra sweeper on Optuna >= 4: ask -> overrides -> Hydra launcher -> tell, with pruning, resume and sharing.

Selected with `hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml: `_target_` is `OptunaSweeper` below,
the only place Hydra instantiates sweepers from). The package is generic: it imports nothing of the project.
- config.py: the typed settings (the schema of optuna.yaml); search_space.py: sweep syntax -> distributions;
- _impl.py: the ask / launch / tell loop, heartbeats, resume; budget.py: the budget across processes;
- trial.py: the job side (find the trial, report, get pruned, record results);
- callbacks.py: hooks a project plugs in (`hydra.sweeper.callbacks`), e.g. a report at the end;
- _errors.py: `SweeperConfigError`.

A bad sweeper setting is the user's input error: it is printed as one line, `error: <key>=<value>: <why>`,
and the command exits with status 2, like the project's own entry points (no Hydra stack trace).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError
from hydra_plugins.contrastive_sweeper.callbacks import SweepCallback, SweepInfo
from hydra_plugins.contrastive_sweeper.config import OptunaSweeperConf

__all__ = ["OptunaSweeper", "OptunaSweeperConf", "SweepCallback", "SweepInfo", "SweeperConfigError"]


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Print a SweeperConfigError as `error: <message>` on stderr and exit 2."""
    try:
        yield
    except SweeperConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class OptunaSweeper(Sweeper):
    """The sweeper Hydra instantiates with the values of `hydra.sweeper` (see config.py and optuna.yaml)."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.contrastive_sweeper._impl import OptunaSweeperImpl  # Optuna: only when a sweep runs

        with one_line_errors():
            self.sweeper = OptunaSweeperImpl(OptunaSweeperConf.from_settings(settings))

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        with one_line_errors():
            return self.sweeper.sweep(arguments)
