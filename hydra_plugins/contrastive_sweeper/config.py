"""The sweeper's settings: a typed schema for conf/hydra/sweeper/optuna.yaml, registered in Hydra's ConfigStore.

The YAML keeps its comments and defaults and names the schema first in its defaults list
(`- optuna_schema`), so a mistyped key or a value of the wrong type is refused when Hydra composes the
config. The range checks run in `__post_init__`, when the facade builds these settings from the values
Hydra passes it; they raise `SweeperConfigError` with a one-line `key=value: why` message.

OmegaConf reads the annotations to type the config nodes: no `from __future__ import annotations` here.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore

from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError

DIRECTIONS = ("maximize", "minimize")


@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper` of the Optuna sweeper; the meaning of each key is commented in optuna.yaml."""

    _target_: str = "hydra_plugins.contrastive_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler, pruner and callback specs reach the sweeper as configs
    sampler: Any = None  # a `_target_` mapping of an Optuna sampler (hydra/sweeper/sampler group)
    pruner: Any = None  # a `_target_` mapping of an Optuna pruner (hydra/sweeper/pruner group); None: never prune
    study_name: str | None = None
    storage: str | None = None  # SQLAlchemy URL; None: a SQLite file in the sweep dir
    direction: Any = "maximize"  # maximize | minimize, or a list of them (multi-objective)
    metric_names: Any = None  # a name per objective (as `direction`), shown by optuna-dashboard; None: unnamed
    n_trials: int = 20
    n_jobs: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int | None = 30
    grace_period: int | None = None
    max_retry: int | None = 2
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> `_target_` mapping of a SweepCallback
    warm_start: Any = None  # recorded runs added as finished trials (_warm_start.py): files, study, match, metrics_key

    def __post_init__(self) -> None:
        self.n_trials = positive_int("hydra.sweeper.n_trials", self.n_trials)
        self.n_jobs = positive_int("hydra.sweeper.n_jobs", self.n_jobs)
        metric_names_of(self.metric_names, directions_of(self.direction))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "OptunaSweeperConf":
        """The settings Hydra passes the sweeper (`hydra.sweeper` less `_target_`), checked."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise SweeperConfigError(f"hydra.sweeper: unknown key(s) {unknown} (see conf/hydra/sweeper/optuna.yaml)")
        return cls(**settings)

    @property
    def directions(self) -> list[str]:
        """The direction of each objective, lower case."""
        return directions_of(self.direction)

    @property
    def names(self) -> list[str] | None:
        """The name of each objective (`study.set_metric_names`), or None when unnamed."""
        return metric_names_of(self.metric_names, self.directions)


def positive_int(key: str, value: Any) -> int:
    """`value` when it is an integer >= 1; SweeperConfigError naming `key` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweeperConfigError(f"{key}={value!r}: must be an integer >= 1")
    return value


def directions_of(direction: Any) -> list[str]:
    """`maximize`, `minimize` or a list of them (one per objective the job returns, in order)."""
    items = list(direction) if isinstance(direction, (list, tuple)) or _is_list_config(direction) else [direction]
    items = [str(d).lower() for d in items]
    if not items or any(d not in DIRECTIONS for d in items):
        raise SweeperConfigError(f"hydra.sweeper.direction={direction!r}: maximize, minimize or a list of them")
    return items


def metric_names_of(names: Any, directions: list[str]) -> list[str] | None:
    """None, or one name per objective: a name, or a list of them as long as the directions."""
    if names is None:
        return None
    items = list(names) if isinstance(names, (list, tuple)) or _is_list_config(names) else [names]
    if len(items) != len(directions) or not all(isinstance(n, str) and n for n in items):
        raise SweeperConfigError(
            f"hydra.sweeper.metric_names={names!r}: one name per objective ({len(directions)}, as direction)"
        )
    return [str(n) for n in items]


def _is_list_config(value: Any) -> bool:
    from omegaconf import ListConfig

    return isinstance(value, ListConfig)


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_schema", node=OptunaSweeperConf, provider="contrastive_sweeper"
)
