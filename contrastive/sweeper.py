"""A Hydra sweeper on Optuna >= 4: ask -> overrides -> Hydra launcher -> tell, with pruning, resume and sharing.

Selected with `hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml), e.g. through `+sweeps=loss_balance`.
Hydra only instantiates sweepers that live in the `hydra_plugins` package: the registered class is
`hydra_plugins.contrastive_sweeper.OptunaSweeper`, a thin subclass of `OptunaSweeper` below.

- Each trial is an ordinary job of the launcher with its own output dir; it learns which trial it is from
  the overrides of `contrastive.pruning.trial_overrides` and reports intermediate values through the storage.
- Job outcomes: a return value -> COMPLETE; optuna.TrialPruned -> PRUNED; any other exception, a
  config that does not compose, or a non-finite / malformed value -> FAIL (reason in user attr `fail_reason`).
- `n_trials` is the study's total: finished trials of earlier runs count. Trials left RUNNING by a killed
  process stop sending heartbeats, are marked FAIL after the grace period and re-queued with the same params
  (Optuna's RetryHeartbeatStaleTrialCallback); the re-queued trial takes the killed one's place in the budget.
- Several sweep processes pointed at one storage share the study: the budget is checked against the
  storage before each ask and again after it (by trial number), so no process over-runs `n_trials`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from contrastive import pruning
from contrastive.errors import ConfigError
from contrastive.utils import write_dir_atomic, write_json

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
FAIL_ATTR = "fail_reason"  # trial user attr: why a trial failed
OVER_BUDGET_ATTR = "over_budget"  # trial user attr: asked after another process filled the budget (not run)
SPACE_ATTR = "search_space"  # study user attr: the latest search space (JSON distributions)
PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the sweep's MLflow parent run, reused on resume
MAX_REASON = 2000


# ---------------------------------------------------------------- search space


@dataclass
class SearchSpace:
    """Sampled parameters (Optuna distributions, keyed by override key) and fixed overrides passed to every job."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # param name -> override key (with + / ++ prefix)
    fixed: dict[str, str] = field(default_factory=dict)  # param name -> full override string

    def describe(self) -> dict[str, str]:
        """One readable line per sampled parameter (for logs and MLflow params)."""
        return {name: describe_distribution(d) for name, d in self.distributions.items()}


def describe_distribution(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = ", log" if dist.log else (f", step={dist.step}" if dist.step not in (None, 1) else "")
    return f"{kind}[{dist.low}, {dist.high}{extra}]"


def distribution_from_spec(name: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """An Optuna distribution from `{type: float|int|categorical, low, high, log, step, choices}`."""
    kind = spec.get("type")
    try:
        if kind == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
        if kind == "float":
            return FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=None if spec.get("step") is None else float(spec["step"]),
            )
        if kind == "int":
            return IntDistribution(
                int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step") or 1)
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.params.{name}={dict(spec)!r}: {exc}") from None
    raise ConfigError(f"hydra.sweeper.params.{name}.type={kind!r}: choose float, int or categorical")


def distribution_from_override(override: Override) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep override: choice(), range(), interval() (float), with the
    tags `log` (log scale) and `int` (integers), e.g. tag(log, int, interval(16, 256))."""
    value = override.value()
    where = override.input_line
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
        if bad:
            raise ConfigError(f"{where}: choices must be plain values (str, number, bool, null), got {bad[0]!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if value.shuffle or any(isinstance(v, float) for v in (start, stop, step)):
            return CategoricalDistribution(list(override.sweep_iterator()))
        values = list(range(int(start), int(stop), int(step)))
        if not values or step < 0:
            raise ConfigError(f"{where}: the range is empty (or descending)")
        return IntDistribution(values[0], values[-1], step=int(step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra's interval() is always float: tag(int, interval(1, 8)) asks for integers
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"{where}: this sweep type is not supported by the Optuna sweeper "
        "(use choice, range, interval or tag(log, interval))"
    )


def _param_name(override: Override) -> str:
    name = override.key_or_group
    return f"{name}@{override.package}" if override.package else name


def parse_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str], parser: OverridesParser | None = None
) -> SearchSpace:
    """`hydra.sweeper.params` then the command-line overrides (a later key replaces an earlier one)."""
    parser = parser or OverridesParser.create()
    space = SearchSpace()
    lines: list[str] = []
    for name, spec in (params or {}).items():
        if isinstance(spec, (Mapping, DictConfig)):
            spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
            space.fixed.pop(str(name), None)
            space.keys[str(name)] = str(name)
            space.distributions[str(name)] = distribution_from_spec(str(name), spec)
        else:
            lines.append(f"{name}={_yaml_scalar(spec)}")
    for override in parser.parse_overrides([*lines, *arguments]):
        name = _param_name(override)
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = distribution_from_override(override)
            space.keys[name] = override.get_key_element()
        else:
            space.fixed[name] = override.input_line.strip()
    return space


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(_yaml_scalar(v) for v in value) + "]"
    return format_value(value) if not isinstance(value, str) else value


def format_value(value: Any) -> str:
    """A sampled value as a Hydra override value that parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return pruning.quote(str(value))


def trial_overrides(trial: optuna.Trial | FrozenTrial, space: SearchSpace) -> list[str]:
    """The job overrides of a trial: its sampled values, then the fixed overrides."""
    sampled = [f"{space.keys.get(name, name)}={format_value(value)}" for name, value in trial.params.items()]
    return [*sampled, *space.fixed.values()]


# ---------------------------------------------------------------- samplers, directions, results


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A configured sampler re-made for every trial with seed `seed + trial.number`.

    Trial n draws the same random numbers whichever process runs it, so a resumed sweep does not replay the
    random start-up draws of the first run, and processes sharing a study do not sample identical params.
    """

    def __init__(self, spec: Mapping[str, Any], seed: int | None) -> None:
        self.spec = {k: v for k, v in spec.items() if k != "seed"}
        self.seed = seed
        self.inner = self._make(seed)

    def _make(self, seed: int | None) -> optuna.samplers.BaseSampler:
        with quiet_optuna():
            sampler = instantiate(OmegaConf.create(self.spec), seed=seed, _convert_="all")
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ConfigError(f"hydra.sweeper.sampler._target_={self.spec.get('_target_')!r}: not an Optuna sampler")
        return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:  # noqa: D102
        if self.seed is not None:
            self.inner = self._make(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    @staticmethod
    def _view(study: optuna.Study) -> Any:
        """Multi-objective studies as the inner sampler sees them: our pruned trials carry intermediate values
        of the first objective, which Optuna's TPE ranks through `study.direction` (refused by a
        multi-objective study), so the sampler gets `pruning.FirstObjectiveView`."""
        return pruning.FirstObjectiveView(study) if len(study.directions) > 1 else study

    def infer_relative_search_space(self, study, trial):  # noqa: D102
        return self.inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        return self.inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: D102
        return self.inner.sample_independent(self._view(study), trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):  # noqa: D102
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # noqa: D102
        self.inner.reseed_rng()


def directions_of(direction: Any) -> list[str]:
    """`maximize`, `minimize` or a list of them (one per objective the job returns, in order)."""
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    items = [str(d).lower() for d in items]
    if not items or any(d not in DIRECTIONS for d in items):
        raise ConfigError(f"hydra.sweeper.direction={direction!r}: maximize, minimize or a list of them")
    return items


def objective_values(value: Any, n_objectives: int) -> list[float]:
    """A job's return value as `n_objectives` finite floats; ValueError naming the problem otherwise."""
    if isinstance(value, Mapping) and "value" in value:  # a metrics-style {"name":..., "value":...}
        value = value["value"]
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if len(items) != n_objectives:
        raise ValueError(f"the job returned {len(items)} value(s) for {n_objectives} objective(s): {value!r}")
    try:
        floats = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"the job's return value is not a number (or list of numbers): {value!r}") from None
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"the job returned a non-finite objective: {floats}")
    return floats


# ---------------------------------------------------------------- budget across processes


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of stale trials that were re-queued (their retry takes their place in the budget)."""
    return {int(n) for t in trials for n in t.system_attrs.get("retry_history", [])}


def budget_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count toward `n_trials`: all but re-queued stale ones and over-budget ones."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and not t.user_attrs.get(OVER_BUDGET_ATTR)]


def asks_left(trials: Sequence[FrozenTrial], n_trials: int) -> int:
    """How many more asks fit the budget (asks take waiting trials first, which are already counted)."""
    counted = budget_trials(trials)
    waiting = sum(t.state == TrialState.WAITING for t in counted)
    return max(0, n_trials - len(counted)) + waiting


def over_budget(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial `number` came after the budget was full (another process asked at the same time)."""
    return sum(t.number < number for t in budget_trials(trials)) >= n_trials


# ---------------------------------------------------------------- heartbeats


class Heartbeat:
    """Records a heartbeat for each running trial every `interval` s; a killed process stops beating."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Sequence[int], interval: float) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the sweep
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- the sweeper


class OptunaSweeper(Sweeper):
    """Hydra sweeper: Optuna ask/tell around Hydra's launcher; see the module docstring and optuna.yaml."""

    def __init__(
        self,
        sampler: Mapping[str, Any] | None = None,
        pruner: Mapping[str, Any] | None = None,
        direction: Any = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str | None = None,
        storage: str | None = None,
        params: Mapping[str, Any] | None = None,
        heartbeat_interval: int | None = 30,
        grace_period: int | None = None,
        max_retry: int | None = 2,
        promote_best: bool = True,
        best_dir: str | None = None,
        promote: Mapping[str, Any] | None = None,
    ) -> None:
        self.sampler_spec = _plain(sampler) or {"_target_": "optuna.samplers.TPESampler", "seed": 0}
        self.pruner_spec = _plain(pruner) or None
        self.directions = directions_of(direction)
        self.n_trials = _positive_int("hydra.sweeper.n_trials", n_trials)
        self.n_jobs = _positive_int("hydra.sweeper.n_jobs", n_jobs)
        self.study_name = study_name
        self.storage_url = storage
        self.params = params
        self.heartbeat_interval = int(heartbeat_interval) if heartbeat_interval else None
        self.grace_period = int(grace_period) if grace_period else None
        self.max_retry = max_retry
        self.promote_best = promote_best
        self.best_dir = best_dir
        self.rule = PromotionRule.from_spec(_plain(promote))
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.job_idx = 0
        self.parent_run_id: str | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---- study

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(self.config.hydra.sweep.dir)

    def resolved_storage(self) -> str:
        """The storage URL; default: a SQLite file in the (stable, study-named) sweep dir."""
        return self.storage_url or f"sqlite:///{self.sweep_dir.resolve() / 'optuna.db'}"

    def resolved_study_name(self) -> str:
        assert self.config is not None
        return str(self.study_name or self.config.hydra.job.name)

    def open_study(self) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
        """Create the study, or load it (resume / another process), with heartbeats and stale-trial retries."""
        url = self.resolved_storage()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        heartbeat: dict[str, Any] = {}
        with quiet_optuna():
            if self.heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": self.heartbeat_interval,
                    "grace_period": self.grace_period,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(self.max_retry),
                }
            storage = pruning.rdb_storage(url, **heartbeat)
            seed = self.sampler_spec.get("seed")
            study = optuna.create_study(
                study_name=self.resolved_study_name(),
                storage=storage,
                load_if_exists=True,
                sampler=TrialSeededSampler(self.sampler_spec, None if seed is None else int(seed)),
                pruner=pruning.build_pruner(self.pruner_spec),
                directions=self.directions,
            )
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise ConfigError(
                f"hydra.sweeper.direction={self.directions}: study {study.study_name!r} in {url} "
                f"was created with {found}; use another study_name"
            )
        return study, storage

    # ---- the loop

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_search_space(self.params, arguments, parser)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study, storage = self.open_study()
        self._record_space(study, space)
        done = sum(t.state.is_finished() for t in budget_trials(study.get_trials(deepcopy=False)))
        log.info(
            "study %r in %s: %d of %d trials finished; sampler %s, pruner %s, directions %s",
            study.study_name,
            _safe_url(self.resolved_storage()),
            done,
            self.n_trials,
            self.sampler_spec.get("_target_"),
            (self.pruner_spec or {}).get("_target_", "none"),
            self.directions,
        )
        for name, text in space.describe().items():
            log.info("  %s ~ %s", name, text)
        if not space.distributions:
            log.warning("the search space is empty (hydra.sweeper.params): every trial runs the same config")
        self.parent_run_id = self._start_tracking(study, space)
        returns: list[Sequence[JobReturn]] = []
        try:
            while True:
                batch = self._ask_batch(study, storage, space)
                if batch is None:
                    break
                if batch:
                    returns.append(self._run_batch(study, storage, space, batch))
            self.finish(study)
        except BaseException:
            self._end_tracking("KILLED")
            raise
        return returns

    def _ask_batch(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, space: SearchSpace
    ) -> list[optuna.Trial] | None:
        """The next trials to run ([] after a wait for other processes), or None when the study is done."""
        with quiet_optuna():
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        room = min(self.n_jobs, asks_left(trials, self.n_trials))
        if room == 0:
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if running and self.heartbeat_interval:
                log.info(
                    "budget of %d trials reached; waiting for trials %s running elsewhere "
                    "(a killed one is re-queued after its heartbeat grace period)",
                    self.n_trials,
                    running,
                )
                time.sleep(self.heartbeat_interval)
                return []
            if running:
                log.warning("trials %s are still RUNNING (heartbeat off: a killed one stays RUNNING)", running)
            return None
        batch: list[optuna.Trial] = []
        for _ in range(room):
            trial = self._ask(study, storage, space)
            if over_budget(study.get_trials(deepcopy=False), trial.number, self.n_trials):
                trial.set_user_attr(OVER_BUDGET_ATTR, True)
                study.tell(trial, state=TrialState.FAIL)
                log.info("trial %d not run: another process filled the budget", trial.number)
                break
            batch.append(trial)
        return batch

    def _ask(self, study: optuna.Study, storage: optuna.storages.RDBStorage, space: SearchSpace) -> optuna.Trial:
        """A new trial with its heartbeat started and its params sampled; a sampler error fails the trial
        (reason recorded) before it propagates, so no trial is left RUNNING without a heartbeat forever."""
        with quiet_optuna():
            trial = study.ask()
        if self.heartbeat_interval:
            storage.record_heartbeat(trial._trial_id)
        try:
            with quiet_optuna():
                for name, dist in space.distributions.items():
                    trial._suggest(name, dist)  # what study.ask(distributions) does
        except Exception as exc:
            self._fail(study, trial, exc)
            raise
        return trial

    def _run_batch(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, space: SearchSpace, trials: list[optuna.Trial]
    ) -> Sequence[JobReturn]:
        """Validate, launch and tell one batch of trials."""
        assert self.launcher is not None
        url, name = self.resolved_storage(), study.study_name
        jobs: list[tuple[optuna.Trial, list[str]]] = []
        for trial in trials:
            overrides = [*trial_overrides(trial, space), *pruning.trial_overrides(url, name, trial.number)]
            if self.parent_run_id:
                overrides.append(f"++tracking.parent_run_id={pruning.quote(self.parent_run_id)}")
            trial.set_user_attr("overrides", overrides)
            if self.pruner_spec:
                trial.set_user_attr(pruning.PRUNER_ATTR, self.pruner_spec)
            log.info("trial %d: %s", trial.number, " ".join(trial_overrides(trial, space)[: len(trial.params)]))
            try:
                self.validate_batch_is_legal([overrides])
            except Exception as exc:  # noqa: BLE001 - a sampled value that does not compose fails its trial
                self._fail(study, trial, exc)
                continue
            jobs.append((trial, overrides))
        if not jobs:
            return []
        ids = [t._trial_id for t, _ in jobs]
        with Heartbeat(storage, ids, self.heartbeat_interval) if self.heartbeat_interval else _nothing():
            results = self.launcher.launch([o for _, o in jobs], initial_job_idx=self.job_idx)
        self.job_idx += len(jobs)
        for (trial, _), ret in zip(jobs, results):
            try:
                self._tell(study, trial, ret)
            except Exception as exc:  # noqa: BLE001 - e.g. another process failed the trial as stale meanwhile
                log.error("trial %d: could not record the result: %s", trial.number, exc)
        return results

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        """Record a job's outcome: COMPLETE with its value(s), PRUNED, or FAIL with the reason."""
        if ret.hydra_cfg is not None:
            trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
        if ret.status == JobStatus.FAILED:  # Hydra's run_job caught the job's exception
            exc = ret._return_value
            if isinstance(exc, optuna.TrialPruned):
                self._finish(study, trial, TrialState.PRUNED, reason=str(exc))
            else:
                out = trial.user_attrs.get("output_dir")
                self._fail(study, trial, exc, Path(out) if out else None)
            return
        try:
            values = objective_values(ret.return_value, len(self.directions))
        except ValueError as exc:
            self._fail(study, trial, exc)
            return
        self._finish(study, trial, TrialState.COMPLETE, values=values)

    def _fail(self, study: optuna.Study, trial: optuna.Trial, exc: BaseException, out: Path | None = None) -> None:
        """FAIL with the reason as user attr `fail_reason`; the traceback goes to `<trial dir>/error.txt`."""
        reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON]
        trial.set_user_attr(FAIL_ATTR, reason)
        log.warning("trial %d failed: %s", trial.number, reason)
        if out is not None and out.is_dir() and exc.__traceback__ is not None:
            with suppress(OSError):
                (out / "error.txt").write_text("".join(traceback.format_exception(exc)))
        self._finish(study, trial, TrialState.FAIL, reason=reason)

    def _finish(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None = None,
        reason: str | None = None,
    ) -> None:
        """Tag the trial's MLflow child run, then tell Optuna the trial's final state."""
        try:
            child = self._track_trial(trial.number, state.name, values, reason)
            if child:
                trial.set_user_attr("mlflow_run_id", child)
            study.tell(trial, values=values, state=state, skip_if_finished=True)
        except Exception as exc:  # noqa: BLE001 - e.g. another process already failed it as stale
            log.error("trial %d: could not record %s: %s", trial.number, state.name, exc)
            return
        if state == TrialState.COMPLETE:
            log.info("trial %d: COMPLETE %s", trial.number, values if len(values or []) > 1 else (values or [None])[0])
        elif state == TrialState.PRUNED:
            log.info("trial %d: PRUNED (%s)", trial.number, reason)

    # ---- the end of a sweep

    def finish(self, study: optuna.Study) -> dict[str, Any]:
        """Study summary (summary.json, figures), promotion of the best trial, MLflow parent run summary.

        Each step only warns when it fails: the trials are safe in the storage and a rerun repeats this.
        """
        best, why = choose_trial(study, self.rule)
        summary = study_summary(study, self.n_trials, best)
        summary["promotion"] = {"rule": self.rule.describe(), "why": why}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        names = self._objective_names()
        figures = [
            p
            for p in (
                _tolerant(plot_history, study, self.sweep_dir / "objective_by_trial.png"),
                _tolerant(plot_importances, study, self.sweep_dir / "param_importances.png"),
                _tolerant(plot_pareto, study, self.sweep_dir / "pareto_front.png", names, best),
            )
            if p
        ]
        summary["figures"] = [str(p) for p in figures]
        promoted = None
        if best is not None and self.promote_best:
            target = Path(self.best_dir) if self.best_dir else self.sweep_dir / "best"
            promoted = _tolerant(promote, best, target, summary)
        summary["promoted_dir"] = str(promoted) if promoted else None
        path = self.sweep_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        log.info(
            "study %r: %s; best %s",
            study.study_name,
            summary["states"],
            {k: summary.get(k) for k in ("best_trial", "best_values", "best_params")},
        )
        if promoted:
            log.info("best trial promoted to %s", promoted)
        if self.parent_run_id:
            tracking = _tracking()
            _tolerant(tracking.log_sweep_summary, self.parent_run_id, summary, [path, *figures])
            if promoted is not None and best is not None:
                summary["registered"] = _tolerant(
                    tracking.register_best, self._tracking_cfg(), best.user_attrs.get("mlflow_run_id"), promoted
                )
            self._end_tracking("FINISHED")
        return summary

    def _objective_names(self) -> list[str]:
        """The objectives' metric names (the jobs' eval.objective), for labels; generic names if unknown."""
        names = OmegaConf.select(self.config, "eval.objective") if self.config is not None else None
        names = [names] if isinstance(names, str) else list(names or [])
        return names if len(names) == len(self.directions) else [f"objective {i}" for i in range(len(self.directions))]

    # ---- MLflow (only through contrastive.tracking)

    def _tracking_cfg(self) -> DictConfig | None:
        assert self.config is not None
        tcfg = self.config.get("tracking")
        return tcfg if tcfg is not None and tcfg.get("enabled", False) else None

    def _record_space(self, study: optuna.Study, space: SearchSpace) -> None:
        described = {n: optuna.distributions.distribution_to_json(d) for n, d in space.distributions.items()}
        previous = study.user_attrs.get(SPACE_ATTR)
        if previous is not None and previous != described:
            log.warning("the search space differs from the study's previous one; old trials keep their params")
        study.set_user_attr(SPACE_ATTR, described)

    def _start_tracking(self, study: optuna.Study, space: SearchSpace) -> str | None:
        tcfg = self._tracking_cfg()
        if tcfg is None:
            return None
        settings = {
            "study_name": study.study_name,
            "storage": _safe_url(self.resolved_storage()),
            "directions": ",".join(self.directions),
            "n_trials": self.n_trials,
            "n_jobs": self.n_jobs,
            "sampler": self.sampler_spec.get("_target_"),
            "sampler_seed": self.sampler_spec.get("seed"),
            "pruner": (self.pruner_spec or {}).get("_target_", "none"),
            "sweep_dir": str(self.sweep_dir),
            **{f"space.{k}": v for k, v in space.describe().items()},
            **{f"fixed.{k}": v for k, v in space.fixed.items()},
        }
        run_id = _tracking().start_sweep_run(tcfg, study.study_name, settings, study.user_attrs.get(PARENT_ATTR))
        if run_id != study.user_attrs.get(PARENT_ATTR):
            study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    def _track_trial(self, number: int, state: str, values: list[float] | None, reason: str | None) -> str | None:
        """Tag the trial's child run (found under the parent run) with its number and state; its run id."""
        tcfg = self._tracking_cfg()
        if not self.parent_run_id or tcfg is None:
            return None
        try:
            return _tracking().tag_trial_run(tcfg, self.parent_run_id, number, state, values, reason)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not stop the sweep
            log.warning("trial %d: MLflow tagging failed: %s", number, exc)
            return None

    def _end_tracking(self, status: str) -> None:
        if self.parent_run_id:
            with suppress(Exception):
                _tracking().end_sweep_run(self.parent_run_id, status)


# ---------------------------------------------------------------- summary, figures, promotion


@dataclass(frozen=True)
class PromotionRule:
    """Which COMPLETE trial a sweep promotes (`hydra.sweeper.promote`).

    With `pick` unset: the study's best (single objective), or the Pareto-front trial best on the first
    objective. With `pick`: the trial with the highest fine-tuned `pick` metric (read from the trial's
    metrics.json) among the eligible ones, where eligible means `delta[floor_metric] >= floor_delta`
    (fine-tuned minus untuned baseline) when `floor_metric` is set. When no trial is eligible, the one with
    the highest floor-metric delta is promoted, and the summary says so.
    """

    pick: str | None = None
    floor_metric: str | None = None
    floor_delta: float = 0.0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> PromotionRule:
        spec = dict(spec or {})
        unknown = set(spec) - {"pick", "floor_metric", "floor_delta"}
        if unknown:
            raise ConfigError(
                f"hydra.sweeper.promote: unknown key(s) {sorted(unknown)} (pick, floor_metric, floor_delta)"
            )
        floor = spec.get("floor_delta", 0.0)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor):
            raise ConfigError(f"hydra.sweeper.promote.floor_delta: {floor!r} must be a finite number")
        return cls(spec.get("pick") or None, spec.get("floor_metric") or None, float(floor))

    def describe(self) -> str:
        if not self.pick:
            return "the study's best trial (first objective on the Pareto front)"
        floor = f" among trials with {self.floor_metric} delta >= {self.floor_delta:+g}" if self.floor_metric else ""
        return f"highest {self.pick}{floor}"


def trial_metrics(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's metrics.json (written by the training job), or None when it is missing or unreadable."""
    out = trial.user_attrs.get("output_dir")
    path = Path(out) / "metrics.json" if out else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def choose_trial(study: optuna.Study, rule: PromotionRule) -> tuple[FrozenTrial | None, str]:
    """The trial `rule` promotes and a sentence saying why."""
    if not rule.pick:
        best = best_trial(study)
        return best, rule.describe() if best else "no COMPLETE trial"
    scored = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        m = trial_metrics(t)
        value = (m or {}).get("finetuned", {}).get(rule.pick)
        if value is None:
            log.warning("trial %d: no %s in its metrics.json; not a promotion candidate", t.number, rule.pick)
            continue
        floor = ((m.get("delta") or {}).get(rule.floor_metric) or {}).get("delta") if rule.floor_metric else 0.0
        scored.append((t, float(value), float("-inf") if floor is None else float(floor)))
    if not scored:
        return None, f"no COMPLETE trial with {rule.pick} in its metrics.json"
    eligible = [row for row in scored if row[2] >= rule.floor_delta]
    if eligible:
        t, value, _ = max(eligible, key=lambda row: row[1])
        return t, f"{rule.describe()}: trial {t.number} ({rule.pick} {value:.4f}; {len(eligible)} eligible)"
    t, _, floor = max(scored, key=lambda row: row[2])
    return t, (
        f"no trial held {rule.floor_metric} delta >= {rule.floor_delta:+g}; promoted trial {t.number}, "
        f"the one closest to it ({rule.floor_metric} delta {floor:+.4f})"
    )


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial (multi-objective: the Pareto-front trial best on the first objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(front, key=lambda t: sign * t.values[0])


def study_summary(study: optuna.Study, n_trials: int, best: FrozenTrial | None = None) -> dict[str, Any]:
    """Counts by state and the best (or given) trial's number, values, params and output dir (JSON-able)."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in budget_trials(trials):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    best = best if best is not None else best_trial(study)
    return {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": n_trials,
        "states": states,
        "retried": sorted(retried_numbers(trials)),
        "best_trial": best.number if best else None,
        "best_values": best.values if best else None,
        "best_params": best.params if best else None,
        "best_output_dir": best.user_attrs.get("output_dir") if best else None,
        "best_mlflow_run_id": best.user_attrs.get("mlflow_run_id") if best else None,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "output_dir": t.user_attrs.get("output_dir"),
                FAIL_ATTR: t.user_attrs.get(FAIL_ATTR),
            }
            for t in trials
        ],
    }


def plot_history(study: optuna.Study, path: Path) -> Path | None:
    """Objective by trial number (first objective): complete dots, pruned crosses, best-so-far line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trials = study.get_trials(deepcopy=False)
    done = [(t.number, t.values[0]) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in trials
        if t.state == TrialState.PRUNED and t.intermediate_values
    ]
    if not done and not pruned:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if done:
        ax.scatter(*zip(*done), label="complete", color="tab:blue")
        better = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
        xs, best, running = [], [], None
        for number, value in done:
            running = value if running is None else better(running, value)
            xs.append(number)
            best.append(running)
        ax.step(xs, best, where="post", color="tab:orange", label="best so far")
    if pruned:
        ax.scatter(
            *zip(*pruned), marker="x", color="tab:red", label="pruned: last intermediate value (on the val subset)"
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title(f"{study.study_name}: objective by trial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pareto(
    study: optuna.Study, path: Path, names: Sequence[str], chosen: FrozenTrial | None = None
) -> Path | None:
    """First vs second objective of every COMPLETE trial, the Pareto front joined, the promoted trial starred,
    and the untuned baseline's values (from the trials' metrics.json) as dashed lines; 2+ objectives only."""
    if len(study.directions) < 2:
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted(study.best_trials, key=lambda t: t.values[0])
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], color="tab:blue", label="trial")
    for t in done:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "-o", color="tab:orange", label="Pareto front")
    if chosen is not None and chosen.values:
        ax.scatter(
            [chosen.values[0]],
            [chosen.values[1]],
            marker="*",
            s=250,
            color="tab:red",
            zorder=5,
            label=f"promoted (trial {chosen.number})",
        )
    base = next((m["baseline"] for m in map(trial_metrics, done) if m and m.get("baseline")), None)
    if base is not None:
        for axis, name in ((ax.axvline, names[0]), (ax.axhline, names[1])):
            if name in base:
                axis(base[name], linestyle="--", color="gray", linewidth=1)
        ax.plot([], [], linestyle="--", color="gray", label="untuned baseline")
    ax.set_xlabel(f"{names[0]} ({study.directions[0].name.lower()})")
    ax.set_ylabel(f"{names[1]} ({study.directions[1].name.lower()})")
    ax.set_title(f"{study.study_name}: objectives of complete trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def param_importances(study: optuna.Study, index: int = 0) -> dict[str, float]:
    """Parameter importances (Optuna's default evaluator) for objective `index`, most important first; {} when
    they cannot be computed (fewer than 2 complete trials, a constant objective)."""
    target = None
    if len(study.directions) > 1:  # the evaluator ranks params for low target values
        sign = -1.0 if study.directions[index] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        target = lambda t: sign * t.values[index]  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*computes the importances of params to achieve low")
            return dict(optuna.importance.get_param_importances(study, target=target))
    except (RuntimeError, ValueError) as exc:
        log.info("no parameter importances: %s", exc)
        return {}


def plot_importances(study: optuna.Study, path: Path) -> Path | None:
    """Parameter importances of the first objective as a bar chart; None when there are none."""
    importances = param_importances(study)
    if not importances:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 1 + 0.5 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (normalized; Optuna's default evaluator)")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def promote(best: FrozenTrial, target: Path, summary: Mapping[str, Any]) -> Path | None:
    """Copy the best trial's `model/` (+ its metrics.json) to a stable dir, replacing the previous one."""
    out = best.user_attrs.get("output_dir")
    model = Path(out) / "model" if out else None
    if model is None or not model.is_dir():
        log.info("best trial %d has no model dir to promote (%s)", best.number, model)
        return None

    def fill(tmp: Path) -> None:
        shutil.copytree(model, tmp)
        metrics = Path(out) / "metrics.json"
        if metrics.is_file():
            shutil.copy2(metrics, tmp / "metrics.json")
        write_json(
            {
                "study_name": summary.get("study_name"),
                "trial": best.number,
                "values": best.values,
                "params": best.params,
                "source_dir": out,
            },
            tmp / "sweep_best.json",
        )

    return write_dir_atomic(target, fill)


# ---------------------------------------------------------------- helpers


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r}: must be an integer >= 1")
    return value


def _safe_url(url: str) -> str:
    """A storage URL with any password masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def _tolerant(step: Any, *args: Any) -> Any:
    """Run one end-of-sweep step; on an error, warn and return None."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s failed: %s: %s", getattr(step, "__name__", step), type(exc).__name__, exc)
        return None


def _tracking():
    from contrastive import tracking  # imports MLflow: only when a sweep tracks

    return tracking


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's experimental-feature warnings and its note that heartbeats are meant for optimize()."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield
