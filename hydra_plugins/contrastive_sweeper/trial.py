"""The job side of a sweep: find this job's trial through the storage, report intermediate values (and get
pruned), record the job's results on the trial; and the names of the user attributes a trial carries.

Contract with the sweeper (`_impl`): each trial job runs with the overrides of `address_overrides`,
    ++optuna.storage='<url>' ++optuna.study_name='<name>' ++optuna.trial_number=<n>
so a job running in any process (or machine) that reaches the storage can load its study, look its trial
up by number, report intermediate objective values, ask the study's pruner whether to stop, and record what
it found (`Reporter.record`: JSON-able structures, stored as the trial's user attributes) for whatever reads
the study at the end of the sweep. The pruner the sweeper configured is stored on the trial as the user
attr `pruner` (a Hydra `_target_` mapping).

Optuna is imported inside the functions: Hydra imports every public module of a plugin at start-up.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError
from hydra_plugins.contrastive_sweeper.masking import hide_passwords  # noqa: F401 - re-exported: its callers import it here
from hydra_plugins.contrastive_sweeper.search_space import quote

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TRIAL_KEY = "optuna"  # the job config block the sweeper adds
SQLITE_TIMEOUT_S = 60  # wait this long for a SQLite write lock (several processes share one file)
PG_CONNECT_TIMEOUT_S = 10  # give up connecting to a PostgreSQL storage after this

# user attributes the sweeper records on a trial
PRUNER_ATTR = "pruner"  # the pruner spec the job rebuilds
OUTPUT_DIR_ATTR = "output_dir"  # the job's output directory (recorded as the job starts, again when it ends)
OVERRIDES_ATTR = "overrides"  # the job's overrides
FAIL_ATTR = "fail_reason"  # why a trial failed
OVER_BUDGET_ATTR = "over_budget"  # asked after another process filled the budget (not run)
WARM_ATTR = "warm_start"  # a recorded run added by the warm start ("<file>#<name>", "study:<name>#<n>"): never ran


class HidePasswords(logging.Filter):
    """A logging filter that hides URL passwords in a record's message (e.g. Hydra's launcher lists overrides)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = hide_passwords(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


STORAGE_ENV = "CONTRASTIVE_SWEEP_STORAGE"  # the storage URL with its password, for the jobs (never in a config)


def hand_over_storage(storage: str) -> str:
    """What a job's config gets for the storage: the URL with its password hidden. The full URL goes to the jobs
    through the environment (`STORAGE_ENV`, inherited by the launcher's processes) when it has a password."""
    hidden = hide_passwords(storage)
    if hidden != storage:
        os.environ[STORAGE_ENV] = storage
    return hidden


def job_storage(url: str) -> str:
    """The storage URL a job connects with: its config's, or, when that one's password is hidden, the sweeper's
    (`STORAGE_ENV`) if it is the same URL."""
    if hide_passwords(url) != url or ":***@" not in url:
        return url
    real = os.environ.get(STORAGE_ENV, "")
    if real and hide_passwords(real) == url:
        return real
    raise SweeperConfigError(
        f"{TRIAL_KEY}.storage={url}: the password is hidden from the job's config and this process did not "
        f"inherit {STORAGE_ENV} from the sweeper; keep the password in ~/.pgpass (PostgreSQL) instead of the URL"
    )


def hide_passwords_in_files(folder: str | os.PathLike) -> list[Path]:
    """Rewrite every YAML file of `folder` (a job's `.hydra/`: the overrides and the hydra config, which list
    the command line) with URL passwords hidden; the files it changed."""
    changed = []
    for path in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []:
        text = path.read_text()
        hidden = hide_passwords(text)
        if hidden != text:
            path.write_text(hidden)
            changed.append(path)
    return changed


def address_overrides(storage: str, study_name: str, number: int) -> list[str]:
    """The overrides that tell a job which trial it is (the storage's password hidden: `hand_over_storage`)."""
    return [
        f"++{TRIAL_KEY}.storage={quote(hand_over_storage(storage))}",
        f"++{TRIAL_KEY}.study_name={quote(study_name)}",
        f"++{TRIAL_KEY}.trial_number={int(number)}",
    ]


def storage_error(url: str, exc: BaseException) -> SweeperConfigError:
    """One line for a storage that cannot be opened (server down, wrong password, missing file or directory)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return SweeperConfigError(
        f"hydra.sweeper.storage={hide_passwords(url)!r}: cannot open it ({hide_passwords(first)})"
    )


def rdb_storage(url: str, attempts: int = 5, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An RDB storage for a SQLAlchemy URL; SQLite gets a long lock timeout for concurrent processes.

    Processes that open a new database at the same moment race to create its tables: the loser retries.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):  # an unreachable host: one line after this, not a connect that never ends
        engine_kwargs = {"connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}}
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts:
                raise storage_error(url, exc) from None
            log.info("opening %s raced another process (%s); retrying", url.split("@")[-1], type(exc).__name__)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from a Hydra `_target_` mapping (None or an empty mapping: never prune)."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    pruner = instantiate(OmegaConf.create(dict(spec)), _convert_="all")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise SweeperConfigError(f"hydra.sweeper.pruner._target_={spec.get('_target_')!r}: not an Optuna pruner")
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
    """A job's handle on its Optuna trial: reports intermediate objective values (raising `optuna.TrialPruned`
    when told) and records the job's results as user attributes.

    Multi-objective studies: Optuna's `Trial.report` refuses them, so the value (of the first objective) is
    written to the storage directly and the pruner judges it through `FirstObjectiveView`: a trial is pruned
    when it trails the others on the first objective at the same step.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.multi = len(trial.study.directions) > 1

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, value: float, step: int) -> None:
        """Record `value` at `step`; raise optuna.TrialPruned if the study's pruner stops this trial."""
        import optuna

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

    def record(self, **attrs: Any) -> None:
        """Store JSON-able values (numbers, strings, lists, dicts) as the trial's user attributes; a trial that
        another process already finished (e.g. failed as stale) keeps its attributes, with a warning."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for key, value in attrs.items():
                if value is not None:
                    self.trial.set_user_attr(key, value)
        except UpdateFinishedTrialError as exc:
            log.warning("trial %d: results not recorded: %s", self.trial.number, exc)


def retry_history(trial: optuna.Trial | optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the killed attempts a re-queued trial retries (Optuna's system attr, oldest first); [] if none."""
    from optuna.trial import FrozenTrial

    frozen = trial if isinstance(trial, FrozenTrial) else trial.storage.get_trial(trial._trial_id)
    return [int(n) for n in frozen.system_attrs.get("retry_history") or []]


def load_trial(storage: str, study_name: str, number: int) -> optuna.Trial:
    """The live trial `number` of a study, found through the storage (works from any process)."""
    import optuna

    rdb = rdb_storage(job_storage(storage))
    study_id = rdb.get_study_id_from_name(study_name)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, int(number))
    spec = rdb.get_trial(trial_id).user_attrs.get(PRUNER_ATTR)
    study = optuna.load_study(study_name=study_name, storage=rdb, pruner=build_pruner(spec))
    return optuna.Trial(study, trial_id)


def reporter_from_cfg(cfg: Any) -> Reporter | None:
    """The reporter of this job when it runs as an Optuna trial (`optuna.*` set in its config), else None; records
    the job's output dir on the trial (user attr `output_dir`) as the job starts."""
    block = cfg.get(TRIAL_KEY) if cfg is not None else None
    if not block or block.get("trial_number") is None:
        return None
    trial = load_trial(str(block["storage"]), str(block["study_name"]), int(block["trial_number"]))
    reporter = Reporter(trial)
    reporter.record(**{OUTPUT_DIR_ATTR: job_output_dir()})  # now, not at the end: a killed trial's retry finds it
    return reporter


def job_output_dir() -> str | None:
    """This Hydra job's output directory (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
