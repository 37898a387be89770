"""The sweeper's loop on Optuna >= 4: ask -> overrides -> Hydra launcher -> tell, with pruning, resume and sharing.

- Each trial is an ordinary job of the launcher with its own output dir; it learns which trial it is from
  the overrides of `trial.address_overrides` and reports intermediate values through the storage.
- Job outcomes: a return value -> COMPLETE; optuna.TrialPruned -> PRUNED; any other exception, a
  config that does not compose, or a non-finite / malformed value -> FAIL (reason in user attr `fail_reason`).
- `n_trials` is the study's total (budget.py). Trials left RUNNING by a killed process stop sending
  heartbeats, are marked FAIL after the grace period and re-queued with the same params (Optuna's
  RetryHeartbeatStaleTrialCallback); the re-queued trial takes the killed one's place in the budget.
- Several sweep processes pointed at one storage share the study: the budget is checked against the
  storage before each ask and again after it (by trial number), so no process over-runs `n_trials`.
- The hooks of `hydra.sweeper.callbacks` (callbacks.py) run at the start, before and after each trial and at the
  end; `on_trial_start` may add overrides to one trial's job (the project's resumes a retry from its checkpoint).
- With the submitit launcher (SLURM) each trial is its own job (jobs.py); a job that ends without a result
  (`scancel`, a lost node) fails its trial, which is re-queued with the same params (`max_retry`).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.contrastive_sweeper import jobs as cluster_jobs
from hydra_plugins.contrastive_sweeper import trial as job
from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError, SweepStopped
from hydra_plugins.contrastive_sweeper._warm_start import warm_start, warm_start_conf
from hydra_plugins.contrastive_sweeper.budget import asks_left, budget_trials, over_budget
from hydra_plugins.contrastive_sweeper.callbacks import SweepInfo
from hydra_plugins.contrastive_sweeper.config import OptunaSweeperConf
from hydra_plugins.contrastive_sweeper.search_space import SearchSpace, parse_search_space, trial_overrides

log = logging.getLogger(__name__)

SPACE_ATTR = "search_space"  # study user attr: the latest search space (distributions as dicts)
MAX_REASON = 2000


# ---------------------------------------------------------------- samplers and results


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
            raise SweeperConfigError(
                f"hydra.sweeper.sampler._target_={self.spec.get('_target_')!r}: not an Optuna sampler"
            )
        return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:  # noqa: D102
        if self.seed is not None:
            self.inner = self._make(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    @staticmethod
    def _view(study: optuna.Study) -> Any:
        """Multi-objective studies as the inner sampler sees them: our pruned trials carry intermediate values
        of the first objective, which Optuna's TPE ranks through `study.direction` (refused by a
        multi-objective study), so the sampler gets `trial.FirstObjectiveView`."""
        return job.FirstObjectiveView(study) if len(study.directions) > 1 else study

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


class OptunaSweeperImpl(Sweeper):
    """Optuna ask/tell around Hydra's launcher; see the module docstring and optuna.yaml."""

    def __init__(self, conf: OptunaSweeperConf) -> None:
        self.sampler_spec = _plain(conf.sampler) or {"_target_": "optuna.samplers.TPESampler", "seed": 0}
        self.pruner_spec = _plain(conf.pruner) or None
        self.directions = conf.directions
        self.metric_names = conf.names
        self.n_trials = conf.n_trials
        self.n_jobs = conf.n_jobs
        self.study_name = conf.study_name
        self.storage_url = conf.storage
        self.params = conf.params
        self.heartbeat_interval = int(conf.heartbeat_interval) if conf.heartbeat_interval else None
        self.grace_period = int(conf.grace_period) if conf.grace_period else None
        self.max_retry = conf.max_retry
        self.callback_specs = conf.callbacks or {}
        self.warm_start = warm_start_conf(_plain(conf.warm_start))
        self.callbacks: list[Any] = []
        self.job_overrides: list[str] = []  # added to every job by the callbacks' on_sweep_start
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.job_idx = 0

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
            folder = Path(url.removeprefix("sqlite:///")).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SweeperConfigError(
                    f"hydra.sweeper.storage={job.hide_passwords(url)!r}: its directory {folder} cannot be created "
                    f"({exc.strerror or exc})"
                ) from None
        heartbeat: dict[str, Any] = {}
        with quiet_optuna():
            if self.heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": self.heartbeat_interval,
                    "grace_period": self.grace_period,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(self.max_retry),
                }
            storage = job.rdb_storage(url, **heartbeat)
            seed = self.sampler_spec.get("seed")
            study = optuna.create_study(
                study_name=self.resolved_study_name(),
                storage=storage,
                load_if_exists=True,
                sampler=TrialSeededSampler(self.sampler_spec, None if seed is None else int(seed)),
                pruner=job.build_pruner(self.pruner_spec),
                directions=self.directions,
            )
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise SweeperConfigError(
                f"hydra.sweeper.direction={self.directions}: study {study.study_name!r} in {_safe_url(url)} "
                f"was created with {found}; use another study_name"
            )
        if self.metric_names:  # the objectives' names in optuna-dashboard and trials_dataframe
            with quiet_optuna():  # set_metric_names is marked experimental
                study.set_metric_names(self.metric_names)
        return study, storage

    def info(self, study: optuna.Study, space: SearchSpace) -> SweepInfo:
        """The sweep as the callbacks see it."""
        return SweepInfo(
            study_name=study.study_name,
            storage=_safe_url(self.resolved_storage()),
            directions=list(self.directions),
            n_trials=self.n_trials,
            n_jobs=self.n_jobs,
            sampler=self.sampler_spec.get("_target_"),
            sampler_seed=self.sampler_spec.get("seed"),
            pruner=(self.pruner_spec or {}).get("_target_", "none"),
            sweep_dir=self.sweep_dir,
            space=space.describe(),
            fixed=dict(space.fixed),
        )

    # ---- the loop

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        launcher_log = logging.getLogger(type(self.launcher).__module__)  # it logs each job's overrides
        hide = job.HidePasswords()
        launcher_log.addFilter(hide)
        try:
            with stop_signals_unwind():
                return self._sweep(arguments)
        finally:
            launcher_log.removeFilter(hide)

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_search_space(self.params, arguments, parser)
        self.callbacks = self._instantiate_callbacks()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / "multirun.yaml").write_text(job.hide_passwords(OmegaConf.to_yaml(self.config)))
        study, storage = self.open_study()
        self._record_space(study, space)
        if self.warm_start is not None:
            warm_start(study, self.warm_start, space, self.config, self.metric_names)
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
        info = self.info(study, space)
        returns: list[Sequence[JobReturn]] = []
        try:
            self.job_overrides = [o for cb in self._hooks("on_sweep_start") for o in cb(study, info) or []]
            while True:
                batch = self._ask_batch(study, storage, space)
                if batch is None:
                    break
                if batch:
                    returns.append(self._run_batch(study, storage, space, batch))
            for hook in self._hooks("on_sweep_end"):
                hook(study, info)
        except BaseException as exc:
            for hook in self._hooks("on_sweep_error"):
                with suppress(Exception):
                    hook(study, info, exc)
            raise
        return returns

    def _instantiate_callbacks(self) -> list[Any]:
        """The objects of `hydra.sweeper.callbacks` (a null entry is switched off); a bad one is a config error."""
        callbacks = []
        for name, spec in self.callback_specs.items():
            if not spec:
                continue
            try:
                callbacks.append(instantiate(spec))
            except Exception as exc:  # noqa: BLE001 - Hydra wraps the callback's own error
                cause = str(exc.__cause__ or exc)
                key = f"hydra.sweeper.callbacks.{name}"
                raise SweeperConfigError(cause if cause.startswith(key) else f"{key}: {cause}") from exc
        return callbacks

    def _hooks(self, name: str) -> list[Any]:
        """The callbacks' bound methods called `name` (a callback may define only some hooks)."""
        return [getattr(cb, name) for cb in self.callbacks if callable(getattr(cb, name, None))]

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
                trial.set_user_attr(job.OVER_BUDGET_ATTR, True)
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
            overrides = [
                *trial_overrides(trial, space),
                *job.address_overrides(url, name, trial.number),
                *self.job_overrides,
                *self._trial_start_overrides(study, trial),
            ]
            trial.set_user_attr(job.OVERRIDES_ATTR, overrides)
            if self.pruner_spec:
                trial.set_user_attr(job.PRUNER_ATTR, self.pruner_spec)
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
        try:
            with Heartbeat(storage, ids, self.heartbeat_interval) if self.heartbeat_interval else _nothing():
                results = self._launch([o for _, o in jobs])
        except BaseException as exc:  # SIGTERM / SIGINT (or a launcher error): the batch's trials FAIL, with why
            for trial, _ in jobs:
                with suppress(Exception):
                    self._fail(study, trial, exc)
                    if not isinstance(exc, Exception):  # stopped, not broken: a rerun runs the same params again
                        requeue(study, trial)
            raise
        self.job_idx += len(jobs)
        for (trial, _), ret in zip(jobs, results):
            try:
                self._tell(study, trial, ret)
            except Exception as exc:  # noqa: BLE001 - e.g. another process failed the trial as stale meanwhile
                log.error("trial %d: could not record the result: %s", trial.number, exc)
        return results

    def _trial_start_overrides(self, study: optuna.Study, trial: optuna.Trial) -> list[str]:
        """The callbacks' `on_trial_start` overrides for this trial's job; a failing hook is logged and skipped."""
        overrides: list[str] = []
        for hook in self._hooks("on_trial_start"):
            try:
                overrides.extend(hook(study, trial) or [])
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable checkpoint dir: the job runs without them
                log.warning("trial %d: %s failed: %s", trial.number, getattr(hook, "__qualname__", hook), exc)
        return overrides

    def _launch(self, job_overrides: list[list[str]]) -> Sequence[JobReturn]:
        """The batch through the launcher: as one call, or one job per trial for the submitit launcher."""
        assert self.launcher is not None
        if cluster_jobs.submits_jobs(self.launcher):
            return cluster_jobs.launch_each(self.launcher, job_overrides, self.job_idx)
        return self.launcher.launch(job_overrides, initial_job_idx=self.job_idx)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        """Record a job's outcome: COMPLETE with its value(s), PRUNED, or FAIL with the reason."""
        if ret.hydra_cfg is not None:
            trial.set_user_attr(job.OUTPUT_DIR_ATTR, str(ret.hydra_cfg.hydra.runtime.output_dir))
        if ret.status == JobStatus.FAILED:  # Hydra's run_job caught the job's exception
            exc = ret._return_value
            if isinstance(exc, optuna.TrialPruned):
                self._finish(study, trial, TrialState.PRUNED, reason=str(exc))
            elif isinstance(exc, cluster_jobs.JobLost):  # cancelled or killed, not its own error: its params run again
                self._fail(study, trial, exc)
                requeue(study, trial, self.max_retry)
            elif isinstance(exc, BrokenPipeError):  # the sweep's output is gone: every next trial would fail too
                self._fail(study, trial, exc)
                requeue(study, trial)
                raise SweepStopped(
                    "SIGPIPE",
                    "its output closed (BrokenPipeError: the terminal or the process reading it is gone); "
                    f"trial {trial.number} is queued again for a rerun",
                )
            else:
                out = trial.user_attrs.get(job.OUTPUT_DIR_ATTR)
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
        trial.set_user_attr(job.FAIL_ATTR, reason)
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
        """Tell Optuna the trial's final state, then the callbacks' `on_trial_end`. A retry that completes drops the
        fail reason it inherited from the failed trial it retries (Optuna copies the user attributes)."""
        try:
            if state == TrialState.COMPLETE and trial.user_attrs.get(job.FAIL_ATTR):
                trial.set_user_attr(job.FAIL_ATTR, None)
            study.tell(trial, values=values, state=state, skip_if_finished=True)
        except Exception as exc:  # noqa: BLE001 - e.g. another process already failed it as stale
            log.error("trial %d: could not record %s: %s", trial.number, state.name, exc)
            return
        if state == TrialState.COMPLETE:
            log.info("trial %d: COMPLETE %s", trial.number, values if len(values or []) > 1 else (values or [None])[0])
        elif state == TrialState.PRUNED:
            log.info("trial %d: PRUNED (%s)", trial.number, reason)
        hooks = self._hooks("on_trial_end")
        frozen = trial.storage.get_trial(trial._trial_id) if hooks else None
        for hook in hooks:
            try:
                hook(study, frozen, reason)
            except Exception as exc:  # noqa: BLE001 - a callback's trouble (e.g. tracking) must not stop the sweep
                log.warning("trial %d: %s failed: %s", trial.number, getattr(hook, "__qualname__", hook), exc)

    def _record_space(self, study: optuna.Study, space: SearchSpace) -> None:
        described = space_attr(space)
        previous = study.user_attrs.get(SPACE_ATTR)
        if isinstance(previous, Mapping):  # older studies hold each distribution as JSON text
            previous = {n: json.loads(d) if isinstance(d, str) else d for n, d in previous.items()}
        if previous is not None and previous != described:
            log.warning("the search space differs from the study's previous one; old trials keep their params")
        study.set_user_attr(SPACE_ATTR, described)


# ---------------------------------------------------------------- helpers


def space_attr(space: SearchSpace) -> dict[str, Any]:
    """The search space as a study user attribute: per parameter, Optuna's distribution as a dict
    ({"name": "FloatDistribution", "attributes": {...}}), not JSON text."""
    return {n: json.loads(optuna.distributions.distribution_to_json(d)) for n, d in space.distributions.items()}


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


def _safe_url(url: str) -> str:
    """A storage URL with any password masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


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


def requeue(study: optuna.Study, trial: optuna.Trial, max_retry: int | None = None) -> None:
    """Queue a failed trial's params again (as a stale trial is: Optuna's retry bookkeeping, so the retry takes
    its place in the budget); used when the sweep was stopped by a signal (no limit) or the trial's job was lost
    (at most `max_retry` times), not when the trial failed by its own error."""
    frozen = study._storage.get_trial(trial._trial_id)
    optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)(study, frozen)


@contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """SIGTERM / SIGINT raise SweepStopped in the main thread while the sweep runs (a plain SIGTERM would end the
    process with its trials RUNNING and their runs open); the previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous: dict[int, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        if callable(previous.get(signum)):  # the app's own handler first (it may remember the signal), then ours
            previous[signum](signum, frame)
        raise SweepStopped(signal.Signals(signum).name)

    previous.update({sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)})
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
