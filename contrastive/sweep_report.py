"""The project's side of an Optuna sweep: MLflow parent run, promotion, summary and figures, from the study.

`SweepReport` is a callback of the generic sweeper (hydra_plugins/contrastive_sweeper/callbacks.py), set in
conf/hydra/sweeper/optuna.yaml under `hydra.sweeper.callbacks.report`:
- at the start it opens the sweep's MLflow parent run (reopened on resume: its id is the study's user attr
  `mlflow_parent_run_id`) and gives every job `++tracking.parent_run_id=<id>`, so the job's run is its child;
- after each trial it tags the trial's child run (trial number, state, reason) and logs the value on the parent;
- at the end it chooses the trial to promote (`PromotionRule`), writes summary.json and three figures into
  the sweep dir, copies the promoted trial's `model/` to `best_dir`, and logs the summary on the parent run
  and registers the promoted model: it becomes the registry's `best` only when it beats the champion on the
  same data and protocol, else `candidate` (all MLflow calls through contrastive.tracking);
- with `promote.soup.enabled`, it first merges the top trials into a soup (contrastive.merge, scored on the
  trials' own val protocol), which is promoted in the trial's place only when it beats the trial on the rule.

It reads what the training jobs recorded on their trials (`result_attrs`: objective, fine-tuned and baseline
metrics, deltas, pair threshold, MLflow run id), so it needs no trial's files but the promoted `model/` dir
(a soup also needs its ingredients' `model/` dirs, fetched from MLflow like it, and the best trial's config.yaml).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from contrastive import CONF_DIR
from contrastive.errors import ConfigError
from contrastive.settings import need_bool, need_choice, need_int
from contrastive.utils import write_dir_atomic, write_json
from hydra_plugins.contrastive_sweeper import SweepCallback, SweepInfo
from hydra_plugins.contrastive_sweeper.budget import budget_trials, retried_numbers
from hydra_plugins.contrastive_sweeper.lock import study_lock
from hydra_plugins.contrastive_sweeper.search_space import quote
from hydra_plugins.contrastive_sweeper.trial import FAIL_ATTR, OUTPUT_DIR_ATTR, WARM_ATTR

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the sweep's MLflow parent run, reused on resume
PROMOTED_ATTR = "promoted"  # study user attr: the study's one promotion {trial, run_id, finished, by}
# trial user attrs recorded by the training job (`result_attrs`)
RUN_ATTR = "mlflow_run_id"  # the job's MLflow run (the parent's child)
OBJECTIVE_ATTR = "objective"  # {"name": metric or list of metrics, "value": ...}
METRICS_ATTR = "metrics"  # fine-tuned metrics on the split
BASELINE_ATTR = "baseline"  # the untuned baseline's metrics on the same split
DELTA_ATTR = "delta"  # metric -> {"delta", "ci_low", "ci_high"} (fine-tuned - baseline)
THRESHOLD_ATTR = "pair_threshold"  # the fine-tuned model's best-F1 cosine threshold
HEALTH_ATTR = "health"  # the job's health flags (contrastive/health.py; [] when healthy): flagged never promotes


def result_attrs(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a training job records on its trial, taken from its metrics.json content."""
    finetuned = metrics.get("finetuned") or {}
    return {
        OBJECTIVE_ATTR: metrics.get("objective"),
        METRICS_ATTR: finetuned or None,
        BASELINE_ATTR: metrics.get("baseline"),
        DELTA_ATTR: metrics.get("delta"),
        THRESHOLD_ATTR: finetuned.get("pair_threshold"),
        HEALTH_ATTR: list(metrics.get("flags") or []),
    }


def health_flags(trial: FrozenTrial) -> list[str]:
    """The health flags its job recorded on a trial ([]: healthy, or recorded before health was)."""
    return [str(f) for f in trial.user_attrs.get(HEALTH_ATTR) or []]


def unhealthy_trials(study: optuna.Study) -> dict[int, list[str]]:
    """COMPLETE trials whose job flagged the run (collapsed, zero loss, zero gradient): number -> flags."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.number: flags for t in complete if (flags := health_flags(t))}


# ---------------------------------------------------------------- the sweeper callback
LOST_REASON = "worker lost (its process died mid-trial)"


def lost_run_reasons(trials: Sequence[FrozenTrial]) -> dict[str, str]:
    """MLflow run id -> reason, for every FAIL trial that recorded a run (MLflow says whether it is still open)."""
    return {
        t.user_attrs[RUN_ATTR]: str(t.user_attrs.get(FAIL_ATTR) or LOST_REASON)
        for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get(RUN_ATTR)
    }


class SweepReport(SweepCallback):
    """MLflow parent run, promotion, summary and figures of a sweep (`hydra.sweeper.callbacks.report`)."""

    def __init__(
        self,
        tracking: DictConfig | None = None,
        promote_best: bool = True,
        best_dir: str | None = None,
        promote: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracking = tracking if tracking is not None and tracking.enabled else None
        self.promote_best = promote_best
        self.best_dir = best_dir
        self.rule = PromotionRule.from_spec(_plain(promote))
        self.parent_run_id: str | None = None

    def on_sweep_start(self, study: optuna.Study, info: SweepInfo) -> list[str]:
        """Open (or reopen) the parent run; its id for every job."""
        if self.tracking is None:
            return []
        with study_lock(study, "parent_run"):  # workers started together, on any machine, share one parent run
            previous = study.user_attrs.get(PARENT_ATTR)
            run_id = _tracking().start_sweep_run(self.tracking, study.study_name, info.settings(), previous)
            if run_id != previous:
                study.set_user_attr(PARENT_ATTR, run_id)
        self.parent_run_id = run_id
        self.close_lost_runs(study)
        return [f"++tracking.parent_run_id={quote(run_id)}"]

    def close_lost_runs(self, study: optuna.Study) -> None:
        """End KILLED the child runs that failed trials left RUNNING (a worker killed mid-trial), with the reason."""
        if self.tracking is None:
            return
        reasons = lost_run_reasons(study.get_trials(deepcopy=False))
        closed = _tolerant(_tracking().close_lost_runs, self.tracking, reasons) if reasons else None
        if closed:
            log.info("closed %d child run(s) of failed trials left RUNNING: %s", len(closed), ", ".join(closed))

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial, reason: str | None) -> None:
        """Tag the trial's child run with its number and state; its value on the parent run."""
        if self.parent_run_id and self.tracking is not None:
            _tracking().tag_trial_run(
                self.tracking,
                self.parent_run_id,
                trial.number,
                trial.state.name,
                trial.values,
                reason,
                run_id=trial.user_attrs.get(RUN_ATTR),
            )

    def on_sweep_end(self, study: optuna.Study, info: SweepInfo) -> None:
        """Study summary (summary.json, figures), promotion of the chosen trial, MLflow parent run summary.

        Several workers (processes or machines) may share the study: under the study's storage lock, the worker
        that ends while another still runs trials only writes its local summary; the last one to end promotes,
        logs the summary on the parent run and closes it. A promotion is recorded on the study (`promoted`), so
        a worker ending at the same moment, or a rerun, does not promote the same trial again.
        Each step only warns when it fails: the trials are safe in the storage and a rerun repeats this.
        """
        self.close_lost_runs(study)
        with study_lock(study, "promotion"):
            waiting = unfinished_trials(study)
            if waiting:
                log.info(
                    "trial(s) %s still run in another worker: the last worker to end promotes and closes the parent",
                    waiting,
                )
                self.finish(study, info, deferred=waiting)
                return
            self.finish(study, info)
        self.end_parent("FINISHED")

    def on_sweep_error(self, study: optuna.Study, info: SweepInfo, exc: BaseException) -> None:
        self.end_parent("KILLED")

    def finish(self, study: optuna.Study, info: SweepInfo, deferred: Sequence[int] = ()) -> dict[str, Any]:
        """The end of the sweep, but closing the parent run; the summary. With `deferred` (trials another worker
        still runs) only the local summary and figures: no promotion, nothing logged on the parent run."""
        sweep_dir = Path(info.sweep_dir)
        best, why = choose_trial(study, self.rule)
        summary = study_summary(study, info.n_trials, best)
        summary["promotion"] = {"rule": self.rule.describe(), "why": why}
        summary["promotion"]["unhealthy"] = {str(n): flags for n, flags in unhealthy_trials(study).items()}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        figures = [
            p
            for p in (
                _tolerant(plot_history, study, sweep_dir / "objective_by_trial.png"),
                _tolerant(plot_importances, study, sweep_dir / "param_importances.png"),
                _tolerant(plot_pareto, study, sweep_dir / "pareto_front.png", objective_names(study), best),
            )
            if p
        ]
        summary["figures"] = [str(p) for p in figures]
        path = sweep_dir / "summary.json"
        if deferred:
            summary["promotion"]["deferred"] = f"trials {list(deferred)} still ran in another worker, which promotes"
            summary["promoted_dir"] = None
            path.write_text(json.dumps(summary, indent=2, default=str))
            return summary
        previous = study.user_attrs.get(PROMOTED_ATTR) or {}
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        again = best is not None and previous.get("trial") == best.number and previous.get("finished") == finished
        promoted = None
        if again:
            summary["promotion"]["already"] = previous
            log.info("trial %d was promoted already (%s): not again", best.number, previous.get("by"))
        elif best is not None and self.promote_best:
            target = Path(self.best_dir) if self.best_dir else sweep_dir / "best"
            if self.rule.soup.enabled:
                summary["soup"] = self.make_soup(study, best, sweep_dir / "soup")
            promoted = self.promote_soup_or_trial(best, target, summary)
        summary["promoted_dir"] = str(promoted) if promoted else None
        soup = summary.get("soup") or {}
        won = bool(soup.get("promoted"))
        path.write_text(json.dumps(summary, indent=2, default=str))
        log.info(
            "study %r: %s; best %s",
            study.study_name,
            summary["states"],
            {k: summary.get(k) for k in ("best_trial", "best_values", "best_params")},
        )
        if promoted:
            log.info("best trial promoted to %s", promoted)
        if self.parent_run_id and not again:
            tracking = _tracking()
            _tolerant(tracking.log_sweep_summary, self.parent_run_id, summary, [path, *figures])
            if promoted is not None and best is not None:
                metric = self.rule.pick or objective_names(study)[0]
                values = soup["val"]["soup"]["finetuned"] if won else best.user_attrs.get(METRICS_ATTR) or {}
                run_id = soup.get("mlflow_run_id") if won else best.user_attrs.get(RUN_ATTR)
                summary["registered"] = _tolerant(
                    tracking.register_best, self.tracking, run_id, promoted, metric, values.get(metric)
                )
                path.write_text(json.dumps(summary, indent=2, default=str))  # with the registry's verdict
        if promoted is not None and best is not None:
            record = {
                "trial": best.number,
                "run_id": soup.get("mlflow_run_id") if won else best.user_attrs.get(RUN_ATTR),
                "finished": finished,
                "by": f"{socket.gethostname()}:{os.getpid()}",
            }
            if won:
                record["soup"] = soup["kept_trials"]
            study.set_user_attr(PROMOTED_ATTR, record)
        return summary

    def make_soup(self, study: optuna.Study, best: FrozenTrial, out: Path) -> dict[str, Any]:
        """summary.json's `soup`: the top `promote.soup.top_k` trials by the rule (`best` first) merged into `out`,
        scored on their val protocol, and whether it beats `best` on the rule (`promoted`, `why`)."""
        spec = self.rule.soup
        metric, sign = soup_metric(study, self.rule)
        trials = [best, *(t for t in ranked_trials(study, self.rule) if t.number != best.number)][: spec.top_k]
        entry: dict[str, Any] = {
            "method": spec.method,
            "top_k": spec.top_k,
            "metric": metric,
            "candidates": [t.number for t in trials],
            "promoted": False,
        }
        if len(trials) < 2:
            return entry | {"why": f"no soup: {len(trials)} healthy COMPLETE trial(s) with a model, a soup needs 2"}
        name = f"soup of {study.study_name}: trials {', '.join(str(t.number) for t in trials)}"
        parent = self.parent_run_id if self.tracking is not None else None
        try:
            made = build_soup(trials, self.rule, metric, sign, out, self.tracking, parent, name, self.fetch_model)
        except Exception as exc:  # noqa: BLE001 - the trial is promoted as without a soup, and the summary says why
            log.warning("no soup: %s: %s", type(exc).__name__, exc)
            return entry | {"why": f"no soup: {type(exc).__name__}: {exc}"}
        return entry | made

    def promote_soup_or_trial(self, best: FrozenTrial, target: Path, summary: dict[str, Any]) -> Path | None:
        """Copy the soup to `target` when it won (summary `soup.promoted`), else the best trial's model."""
        soup = summary.get("soup") or {}
        if soup.get("promoted"):
            promoted = _tolerant(promote_soup, soup, target, summary)
            if promoted is not None:
                summary["promotion"]["why"] += f"; the soup of trials {soup['kept_trials']} instead: {soup['why']}"
                return promoted
            soup["promoted"], soup["why"] = False, f"{soup['why']}, but its copy to {target} failed: the trial instead"
        if soup:
            summary["promotion"]["why"] += f"; no soup instead: {soup['why']}"
        return _tolerant(promote, best, target, summary, self.fetch_model)

    def fetch_model(self, trial: FrozenTrial, into: Path) -> Path | None:
        """The trial's model from MLflow (its logged model, else its `model` artifacts) when this machine does not
        hold the trial's output dir: promotion needs no shared filesystem."""
        run_id = trial.user_attrs.get(RUN_ATTR)
        if self.tracking is None or not run_id:
            return None
        return _tracking().fetch_run_model(self.tracking, run_id, into)

    def end_parent(self, status: str) -> None:
        """Close the parent run (FINISHED, or KILLED when the sweep was interrupted; a rerun reopens it)."""
        if self.parent_run_id:
            _tolerant(_tracking().end_sweep_run, self.parent_run_id, status)


# ---------------------------------------------------------------- promotion
PROMOTE_KEY = "hydra.sweeper.callbacks.report.promote"
SOUP_METHODS = ("greedy", "uniform")  # contrastive.merge's soups (task_arithmetic and ties need a scale tuned)
BELOW_FLOOR = 10.0  # taken off a soup's pick metric (a value in [0, 1]) below the floor: it ranks below any above


@dataclass(frozen=True)
class SoupSpec:
    """`promote.soup`: whether a soup of the top trials may take the promotion from the best one, and which soup."""

    enabled: bool = False
    top_k: int = 3
    method: str = "greedy"

    def __post_init__(self) -> None:
        need_bool(self.enabled, f"{PROMOTE_KEY}.soup.enabled")
        need_int(self.top_k, f"{PROMOTE_KEY}.soup.top_k", low=2)
        need_choice(self.method, f"{PROMOTE_KEY}.soup.method", SOUP_METHODS)

    @classmethod
    def from_spec(cls, spec: Any) -> SoupSpec:
        """The checked `promote.soup` mapping (None: no soup); a one-line ConfigError naming a bad key or value."""
        if spec is None:
            return cls()
        names = [f.name for f in fields(cls)]
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{PROMOTE_KEY}.soup={spec!r}: must be a mapping of {', '.join(names)}")
        unknown = set(spec) - set(names)
        if unknown:
            raise ConfigError(f"{PROMOTE_KEY}.soup: unknown key(s) {sorted(unknown)} ({', '.join(names)})")
        return cls(**dict(spec))


@dataclass(frozen=True)
class PromotionRule:
    """Which COMPLETE trial a sweep promotes (`hydra.sweeper.callbacks.report.promote`).

    With `pick` unset: the study's best (single objective), or the Pareto-front trial best on the first
    objective. With `pick`: the trial with the highest fine-tuned `pick` metric (recorded on the trial by its
    job) among the eligible ones, where eligible means `delta[floor_metric] >= floor_delta` (fine-tuned minus
    untuned baseline) when `floor_metric` is set. When no trial is eligible, the one with the highest
    floor-metric delta is promoted, and the summary says so. With `soup.enabled`, a soup of the top trials
    takes the promotion when it beats that trial on the same rule (`soup_verdict`).
    """

    pick: str | None = None
    floor_metric: str | None = None
    floor_delta: float = 0.0
    soup: SoupSpec = field(default_factory=SoupSpec)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> PromotionRule:
        spec = dict(spec or {})
        unknown = set(spec) - {"pick", "floor_metric", "floor_delta", "soup"}
        if unknown:
            raise ConfigError(
                f"{PROMOTE_KEY}: unknown key(s) {sorted(unknown)} (pick, floor_metric, floor_delta, soup)"
            )
        floor = spec.get("floor_delta", 0.0)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor):
            raise ConfigError(f"{PROMOTE_KEY}.floor_delta: {floor!r} must be a finite number")
        soup = SoupSpec.from_spec(spec.get("soup"))
        return cls(spec.get("pick") or None, spec.get("floor_metric") or None, float(floor), soup)

    def describe(self) -> str:
        if not self.pick:
            return "the study's best trial (first objective on the Pareto front)"
        floor = f" among trials with {self.floor_metric} delta >= {self.floor_delta:+g}" if self.floor_metric else ""
        return f"highest {self.pick}{floor}"

    def floor_of(self, delta: Mapping[str, Any] | None) -> float:
        """The floor metric's delta vs the baseline in `delta` (0.0 with no floor_metric, -inf when unrecorded)."""
        if not self.floor_metric:
            return 0.0
        value = ((delta or {}).get(self.floor_metric) or {}).get("delta")
        return float("-inf") if value is None else float(value)


def choose_trial(study: optuna.Study, rule: PromotionRule) -> tuple[FrozenTrial | None, str]:
    """The trial `rule` promotes and a sentence saying why; a trial its job flagged unhealthy is never chosen."""
    flagged = unhealthy_trials(study)
    skipped = "; ".join(f"trial {n} not promoted: {'; '.join(flags)}" for n, flags in sorted(flagged.items()))
    best, why = _choose_healthy(study, rule, set(flagged))
    if best is None and flagged:
        why = f"no healthy COMPLETE trial ({len(flagged)} flagged)"
    return best, f"{why}; {skipped}" if skipped else why


def _choose_healthy(study: optuna.Study, rule: PromotionRule, flagged: set[int]) -> tuple[FrozenTrial | None, str]:
    """`choose_trial` among the trials not in `flagged`."""
    if not rule.pick:
        best = best_trial(study, flagged)
        return best, rule.describe() if best else "no COMPLETE trial"
    scored = _scored_trials(study, rule, flagged)
    if not scored:
        return None, f"no COMPLETE trial with {rule.pick} recorded"
    eligible = [row for row in scored if row[2] >= rule.floor_delta]
    if eligible:
        t, value, _ = max(eligible, key=lambda row: row[1])
        return t, f"{rule.describe()}: trial {t.number} ({rule.pick} {value:.4f}; {len(eligible)} eligible)"
    t, _, floor = max(scored, key=lambda row: row[2])
    return t, (
        f"no trial held {rule.floor_metric} delta >= {rule.floor_delta:+g}; promoted trial {t.number}, "
        f"the one closest to it ({rule.floor_metric} delta {floor:+.4f})"
    )


def _scored_trials(
    study: optuna.Study, rule: PromotionRule, flagged: set[int]
) -> list[tuple[FrozenTrial, float, float]]:
    """(trial, fine-tuned `rule.pick`, floor-metric delta) of each COMPLETE trial not in `flagged` that recorded it."""
    scored = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number in flagged:
            continue
        value = (t.user_attrs.get(METRICS_ATTR) or {}).get(rule.pick)
        if value is None:
            log.warning("trial %d: no %s recorded by its job; not a promotion candidate", t.number, rule.pick)
            continue
        scored.append((t, float(value), rule.floor_of(t.user_attrs.get(DELTA_ATTR))))
    return scored


def ranked_trials(study: optuna.Study, rule: PromotionRule) -> list[FrozenTrial]:
    """The healthy COMPLETE trials that trained a model (warm-start records left out), in the order `rule` prefers
    them: `choose_trial`'s choice first, then the others as it would choose among what is left."""
    flagged = set(unhealthy_trials(study))
    if not rule.pick:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = sorted((t for t in complete if t.number not in flagged), key=_signed_values(study), reverse=True)
    else:
        scored = _scored_trials(study, rule, flagged)
        eligible = sorted((r for r in scored if r[2] >= rule.floor_delta), key=lambda r: r[1], reverse=True)
        below = sorted((r for r in scored if r[2] < rule.floor_delta), key=lambda r: r[2], reverse=True)
        ranked = [row[0] for row in (*eligible, *below)]
    return [t for t in ranked if not t.user_attrs.get(WARM_ATTR)]


def _signed_values(study: optuna.Study) -> Callable[[FrozenTrial], tuple[float, ...]]:
    """A trial's values, each signed so that larger is better in the study's directions (a sort key)."""
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    return lambda t: tuple(s * v for s, v in zip(signs, t.values, strict=False))


def best_trial(study: optuna.Study, skip: set[int] | frozenset[int] = frozenset()) -> FrozenTrial | None:
    """The best COMPLETE trial that ran and is not in `skip` (multi-objective: the Pareto-front trial best on the
    first objective, later objectives breaking ties, which keeps it on the front); warm-start trials (recorded runs,
    no model) are left out."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number not in skip and not t.user_attrs.get(WARM_ATTR)
    ]
    if not complete:
        return None
    return max(complete, key=_signed_values(study))


def unfinished_trials(study: optuna.Study) -> list[int]:
    """Numbers of the study's trials still RUNNING (in some worker) or WAITING (queued for a retry)."""
    live = (TrialState.RUNNING, TrialState.WAITING)
    return [t.number for t in study.get_trials(deepcopy=False, states=live)]


def promote(
    best: FrozenTrial,
    target: Path,
    summary: Mapping[str, Any],
    fetch: Callable[[FrozenTrial, Path], Path | None] | None = None,
) -> Path | None:
    """Copy the best trial's `model/` (+ its metrics.json) to a stable dir, replacing the previous one. When this
    machine does not hold the trial's output dir (another machine ran it), `fetch` brings the model (MLflow)."""
    out = best.user_attrs.get(OUTPUT_DIR_ATTR)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent if target.parent.is_dir() else None) as tmp:
        model = trial_model(best, Path(tmp), fetch)
        if model is None:
            log.info("best trial %d has no model dir to promote (output dir %s)", best.number, out)
            return None
        local = Path(out) / "metrics.json" if out else None
        metrics = local if local is not None and local.is_file() else model / "metrics.json"
        record = {
            "study_name": summary.get("study_name"),
            "trial": best.number,
            "values": best.values,
            "params": best.params,
            "source_dir": out,
            "mlflow_run_id": best.user_attrs.get(RUN_ATTR),
        }
        return install_promoted(model, target, record, json.loads(metrics.read_text()) if metrics.is_file() else None)


def install_promoted(
    model: Path, target: Path, record: Mapping[str, Any], metrics: Mapping[str, Any] | None, card_note: str = ""
) -> Path:
    """Copy `model` to `target` atomically, with its `metrics` as metrics.json (the app's thresholds), `record` as
    sweep_best.json and `card_note` appended to its model card."""

    def fill(staging: Path) -> None:
        shutil.copytree(model, staging, ignore=shutil.ignore_patterns("metrics.json"))
        if metrics is not None:
            write_json(dict(metrics), staging / "metrics.json")
        write_json(dict(record), staging / "sweep_best.json")
        readme = staging / "README.md"
        if card_note and readme.is_file():
            readme.write_text(readme.read_text() + "\n" + card_note)

    return write_dir_atomic(target, fill)


def trial_model(
    trial: FrozenTrial, into: Path, fetch: Callable[[FrozenTrial, Path], Path | None] | None
) -> Path | None:
    """A trial's saved `model/` dir: in its output dir when this machine holds it, else `fetch`ed (MLflow) into
    `into`; None when neither has it."""
    out = trial.user_attrs.get(OUTPUT_DIR_ATTR)
    model = Path(out) / "model" if out else None
    if (model is None or not model.is_dir()) and fetch is not None:
        into.mkdir(parents=True, exist_ok=True)
        model = _tolerant(fetch, trial, into)
    return model if model is not None and model.is_dir() else None


# ---------------------------------------------------------------- the soup
def soup_metric(study: optuna.Study, rule: PromotionRule) -> tuple[str, int]:
    """The metric a soup must beat the best trial on (`rule.pick`, else the first objective) and its sign (+1:
    higher is better; the first direction's, with no pick)."""
    if rule.pick:
        return rule.pick, 1
    return objective_names(study)[0], 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1


def rule_score(rule: PromotionRule, metric: str, sign: int, finetuned: Mapping[str, Any], delta: Any) -> float:
    """A model's score on the rule, higher better: its signed `metric`, less BELOW_FLOOR when it misses the floor
    (so greedy keeps an ingredient only when the soup neither falls on the metric nor drops below the floor)."""
    value = sign * float(finetuned[metric])
    return value - BELOW_FLOOR if rule.pick and rule.floor_of(delta) < rule.floor_delta else value


def soup_verdict(
    rule: PromotionRule, metric: str, soup: Mapping[str, Any], trial: Mapping[str, Any], sign: int = 1
) -> tuple[bool, str]:
    """Whether the soup takes the promotion from the best trial (each {"finetuned", "delta"} on val), and why: it
    must hold the rule's floor, and beat the trial's `metric` (or hold the floor the trial missed)."""
    mine, theirs = (soup.get("finetuned") or {}).get(metric), (trial.get("finetuned") or {}).get(metric)
    if mine is None:
        return False, f"the soup has no {metric}"
    if rule.pick and rule.floor_metric:
        floor = rule.floor_of(soup.get("delta"))
        if floor < rule.floor_delta:
            return False, f"the soup's {rule.floor_metric} delta {floor:+.4f} is below the floor {rule.floor_delta:+g}"
        if rule.floor_of(trial.get("delta")) < rule.floor_delta:
            return True, f"the soup holds {rule.floor_metric} delta >= {rule.floor_delta:+g}, the best trial did not"
    if theirs is None:
        return True, f"the best trial recorded no {metric}"
    wins = sign * float(mine) > sign * float(theirs)
    return wins, f"the soup's {metric} {mine:.4f} {'beats' if wins else 'does not beat'} the best trial's {theirs:.4f}"


def build_soup(
    trials: Sequence[FrozenTrial],
    rule: PromotionRule,
    metric: str,
    sign: int,
    out: Path,
    tracking: DictConfig | None,
    parent_run_id: str | None,
    run_name: str,
    fetch: Callable[[FrozenTrial, Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Merge `trials`' models (the best first) into `out` with contrastive.merge, scored on the first trial's val
    protocol, greedy by `rule_score`; the ingredients, the soup's val metrics beside the best trial's, the verdict."""
    from contrastive import merge

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out.parent) as tmp:
        models = [trial_model(t, Path(tmp) / f"trial_{t.number}", fetch) for t in trials]
        missing = [t.number for t, m in zip(trials, models) if m is None]
        if missing:
            return {"why": f"no soup: no model dir (nor MLflow model) for trial(s) {missing}"}
        cfg = soup_config(trials[0], [str(m) for m in models], out, metric, tracking, parent_run_id, run_name)
        cfg.merge.method = rule.soup.method
        record = merge.run(cfg, lambda result: rule_score(rule, metric, sign, result.finetuned, result.delta))
    best = trials[0]
    alone = {step["ingredient"]: step.get("alone") for step in record["greedy_steps"]}
    kept = [int(i) for i in record["kept"]]
    soup_val = {"finetuned": record["finetuned"], "delta": record["delta"]}
    best_val = {"finetuned": best.user_attrs.get(METRICS_ATTR), "delta": best.user_attrs.get(DELTA_ATTR)}
    if len(kept) < 2:  # one model is no soup (and a re-scored trial does not outrank the rule's choice)
        wins, why = False, f"greedy kept trial {trials[kept[0]].number} alone: no mix of two or more scored higher"
    else:
        wins, why = soup_verdict(rule, metric, soup_val, best_val, sign)
    return {
        "ingredients": [
            {
                "trial": t.number,
                "path": record["ingredients"][i],
                "weight": record["weights"].get(str(i)),
                "kept": i in kept,
                "score_alone": alone.get(i),  # its rule score re-measured by the soup's evaluator (greedy only)
            }
            for i, t in enumerate(trials)
        ],
        "kept_trials": [trials[i].number for i in kept],
        "val": {"soup": soup_val, "best_trial": {"trial": best.number, **best_val}},
        "baseline": record["baseline"],
        "dir": record["output_dir"],
        "mlflow_run_id": record["mlflow_run_id"],
        "promoted": wins,
        "why": why,
    }


def promote_soup(soup: Mapping[str, Any], target: Path, summary: Mapping[str, Any]) -> Path:
    """Copy the winning soup's checkpoint to `target`: its val metrics as metrics.json, sweep_best.json naming its
    trials, and a model-card line saying which trials it merges and what it beat."""
    val = soup["val"]["soup"]
    metrics = {"split": "val", "finetuned": val["finetuned"], "baseline": soup.get("baseline"), "delta": val["delta"]}
    record = {
        "study_name": summary.get("study_name"),
        "trial": None,
        "soup": {k: soup[k] for k in ("method", "metric", "kept_trials", "ingredients", "why")},
        "source_dir": soup["dir"],
        "mlflow_run_id": soup.get("mlflow_run_id"),
    }
    trials = ", ".join(str(n) for n in soup["kept_trials"])
    top = len(soup["candidates"])
    note = (
        f"## Sweep soup\n\nA {soup['method']} soup of sweep `{summary.get('study_name')}`'s trials {trials} (of "
        f"the top {top} by the promotion rule), promoted in place of the best trial: {soup['why']}.\n"
    )
    return install_promoted(Path(soup["dir"]), target, record, metrics, note)


def soup_config(
    trial: FrozenTrial,
    checkpoints: Sequence[str],
    out: Path,
    metric: str,
    tracking: DictConfig | None,
    parent_run_id: str | None,
    run_name: str,
) -> DictConfig:
    """conf/merge.yaml's config for a soup of `checkpoints` into `out`, on the model, data and eval groups `trial`'s
    job ran with (its config.yaml: the val protocol its metrics were measured on), tracked as the sweep's child."""
    path = Path(trial.user_attrs.get(OUTPUT_DIR_ATTR) or ".") / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"trial {trial.number}: no config.yaml at {path} (its val protocol scores the soup)")
    job = OmegaConf.load(path)
    track = OmegaConf.create(_plain(tracking)) if tracking is not None else OmegaConf.merge(job.tracking)
    track.enabled = tracking is not None
    track.parent_run_id = parent_run_id
    cfg = OmegaConf.create(
        {
            **{key: job[key] for key in ("model", "data", "eval", "paths")},
            "tracking": track,
            "merge": OmegaConf.load(CONF_DIR / "merge.yaml").merge,
            "checkpoints": list(checkpoints),
            "output": str(out),
            "run_name": run_name,
            "device": OmegaConf.select(job, "trainer.device"),
        }
    )
    cfg.merge.metric = metric
    return cfg


# ---------------------------------------------------------------- summary and figures


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
        "best_output_dir": best.user_attrs.get(OUTPUT_DIR_ATTR) if best else None,
        "best_mlflow_run_id": best.user_attrs.get(RUN_ATTR) if best else None,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "output_dir": t.user_attrs.get(OUTPUT_DIR_ATTR),
                FAIL_ATTR: t.user_attrs.get(FAIL_ATTR),
            }
            for t in trials
        ],
    }


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names as the jobs recorded them (labels); generic names if unknown."""
    n = len(study.directions)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = (t.user_attrs.get(OBJECTIVE_ATTR) or {}).get("name")
        names = [name] if isinstance(name, str) else list(name or [])
        if len(names) == n:
            return [str(x) for x in names]
    return [f"objective {i}" for i in range(n)]


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
    name = objective_names(study)[0]
    ax.set_ylabel(f"{name} ({study.directions[0].name.lower()})")  # the metric, as on the Pareto figure's axes
    ax.set_title(f"{study.study_name}: {name} by trial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pareto(
    study: optuna.Study, path: Path, names: Sequence[str], chosen: FrozenTrial | None = None
) -> Path | None:
    """First vs second objective of every COMPLETE trial, the Pareto front joined, the promoted trial starred,
    and the untuned baseline's values (recorded on the trials) as dashed lines; 2+ objectives only."""
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
    base = next((t.user_attrs[BASELINE_ATTR] for t in done if t.user_attrs.get(BASELINE_ATTR)), None)
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
    ax.set_xlabel(f"importance for {objective_names(study)[0]} (normalized; Optuna's default evaluator)")
    ax.set_title(f"{study.study_name}: parameter importances ({objective_names(study)[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- helpers


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


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
