"""The job side of an Optuna sweep: find this job's trial through the storage, report values, get pruned.

Contract with `contrastive.sweeper`: each trial job runs with the overrides
    ++optuna.storage='<url>' ++optuna.study_name='<name>' ++optuna.trial_number=<n>
so a job running in any process (or machine) that reaches the storage can load its study, look its trial
up by number, report intermediate objective values and ask the study's pruner whether to stop. The pruner
the sweeper configured is stored on the trial as the user attr `pruner` (a Hydra `_target_` mapping).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

TRIAL_KEY = "optuna"  # the job config block the sweeper adds
PRUNER_ATTR = "pruner"  # trial user attr: the pruner spec the job rebuilds
SQLITE_TIMEOUT_S = 60  # wait this long for a SQLite write lock (several processes share one file)


def quote(value: str) -> str:
    """A string as a single-quoted Hydra override value (backslashes doubled only before a quote or the end)."""
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


def trial_overrides(storage: str, study_name: str, number: int) -> list[str]:
    """The overrides that tell a job which trial it is."""
    return [
        f"++{TRIAL_KEY}.storage={quote(storage)}",
        f"++{TRIAL_KEY}.study_name={quote(study_name)}",
        f"++{TRIAL_KEY}.trial_number={int(number)}",
    ]


def rdb_storage(url: str, attempts: int = 5, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An RDB storage for a SQLAlchemy URL; SQLite gets a long lock timeout for concurrent processes.

    Processes that open a new database at the same moment race to create its tables: the loser retries.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts:
                raise
            log.info("opening %s raced another process (%s); retrying", url.split("@")[-1], type(exc).__name__)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from a Hydra `_target_` mapping (None or an empty mapping: never prune)."""
    if not spec:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    pruner = instantiate(OmegaConf.create(dict(spec)), _convert_="all")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        from contrastive.errors import ConfigError

        raise ConfigError(f"hydra.sweeper.pruner._target_={spec.get('_target_')!r}: not an Optuna pruner")
    return pruner


class FirstObjectiveView:
    """A multi-objective study as Optuna's pruners see a single-objective one: `direction` is the first
    objective's, everything else is the study's own (pruners only read trials' intermediate values)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self._study.directions[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class Reporter:
    """Reports a job's intermediate objective to its Optuna trial and raises `optuna.TrialPruned` when told.

    Multi-objective studies: Optuna's `Trial.report` refuses them, so the value (of the first objective) is
    written to the storage directly and the pruner judges it through `FirstObjectiveView`: a trial is pruned
    when it trails the others on the first objective at the same step.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.multi = len(trial.study.directions) > 1

    def report(self, value: float, step: int) -> None:
        """Record `value` at `step`; raise optuna.TrialPruned if the study's pruner stops this trial."""
        value = float(value)
        if not math.isfinite(value):
            log.warning("trial %d: not reporting non-finite value %r at step %d", self.trial.number, value, step)
            return
        if self.multi:
            self.trial.storage.set_trial_intermediate_value(self.trial._trial_id, int(step), value)
            frozen = self.trial.storage.get_trial(self.trial._trial_id)
            prune = self.trial.study.pruner.prune(FirstObjectiveView(self.trial.study), frozen)
        else:
            self.trial.report(value, int(step))
            prune = self.trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned at step {step} (value {value:.4g})")


def load_trial(storage: str, study_name: str, number: int) -> optuna.Trial:
    """The live trial `number` of a study, found through the storage (works from any process)."""
    rdb = rdb_storage(storage)
    study_id = rdb.get_study_id_from_name(study_name)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, int(number))
    spec = rdb.get_trial(trial_id).user_attrs.get(PRUNER_ATTR)
    study = optuna.load_study(study_name=study_name, storage=rdb, pruner=build_pruner(spec))
    return optuna.Trial(study, trial_id)


def reporter_from_cfg(cfg: DictConfig | Mapping[str, Any]) -> Reporter | None:
    """The pruning reporter of this job when it runs as an Optuna trial (`optuna.*` set), else None."""
    block = cfg.get(TRIAL_KEY) if cfg is not None else None
    if not block or block.get("trial_number") is None:
        return None
    trial = load_trial(str(block["storage"]), str(block["study_name"]), int(block["trial_number"]))
    return Reporter(trial)
