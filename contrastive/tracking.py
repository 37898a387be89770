"""Every MLflow call of the project: runs, params, metrics, artifacts, models, tags."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from contrastive import PROJECT_ROOT

log = logging.getLogger(__name__)

MAX_PARAMS_PER_CALL = 100  # MLflow's limit on one log_params batch
MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value


def configure(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    return found.experiment_id if found else mlflow.create_experiment(experiment)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return flat


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """Every resolved config value (Hydra's own block excluded) as flat params."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(container).items()}


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log params (to the active run, or `run_id`) in batches of at most 100 (MLflow's cap per call)."""
    items = [(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if v is not None]
    for start in range(0, len(items), MAX_PARAMS_PER_CALL):
        batch = dict(items[start : start + MAX_PARAMS_PER_CALL])
        mlflow.log_params(batch, run_id=run_id) if run_id else mlflow.log_params(batch)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the finite numeric values of a (possibly nested) dict of metrics."""
    numeric = {
        prefix + k: float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def log_dict(obj: Any, name: str) -> None:
    """Log a JSON-able object as an artifact file."""
    mlflow.log_dict(obj, name)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file, or a whole directory, as artifacts."""
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The current commit of the project (with a -dirty suffix when the tree has changes), if in git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _end_state(exc: BaseException | None) -> tuple[str, str]:
    """MLflow run status and our `state` tag for how a job ended."""
    if exc is None:
        return "FINISHED", "COMPLETE"
    if type(exc).__name__ == "TrialPruned":
        return "KILLED", "PRUNED"
    return "FAILED", "FAIL"


@contextlib.contextmanager
def run(tcfg: Any, run_name: str | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """One MLflow run for a job, from the tracking settings `tcfg` (nested under its `parent_run_id` if set).

    Yields the run id (None when tracking is disabled). The run ends FINISHED, KILLED (pruned) or
    FAILED with the error as a tag, and the exception propagates.
    """
    if not tcfg.enabled:
        yield None
        return
    experiment_id = configure(tcfg.tracking_uri, tcfg.experiment)
    parent = getattr(tcfg, "parent_run_id", None)  # set by the sweeper for trial jobs
    active = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        parent_run_id=parent or None,
        tags={k: str(v) for k, v in (tags or {}).items()},
    )
    try:
        yield active.info.run_id
    except BaseException as exc:
        status, state = _end_state(exc)
        with contextlib.suppress(Exception):
            set_tags({"state": state, "error": f"{type(exc).__name__}: {exc}"[:5000]})
        mlflow.end_run(status)
        raise
    set_tags({"state": "COMPLETE"})
    mlflow.end_run("FINISHED")


def log_text(text: str, name: str) -> None:
    mlflow.log_text(text, name)


def log_model_dir(model_dir: str | Path, artifact_path: str = "model") -> None:
    """Log a saved SentenceTransformer directory as the run's model artifact."""
    mlflow.log_artifacts(str(model_dir), artifact_path)


def log_loss_curve(history: list[dict[str, Any]]) -> None:
    """Log the Trainer's loss history (one metric point per logged step) and a JSON copy."""
    for entry in history:
        step = int(entry.get("step", 0))
        log_metrics({k: v for k, v in entry.items() if k not in ("step", "epoch")}, step=step, prefix="train/")
    log_dict(history, "train_log_history.json")


class MlflowLossCallback(TrainerCallback):
    """Streams the Trainer's logs (loss, lr, grad norm) into the active run, in place of report_to=mlflow."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        if logs and mlflow.active_run() is not None:
            log_metrics({k: v for k, v in logs.items() if k != "epoch"}, step=state.global_step, prefix="train/")


def run_info(run_id: str) -> dict[str, Any]:
    """Params, metrics, tags, status and artifact paths of a run (for tests and reports)."""
    client = MlflowClient()
    data = client.get_run(run_id)
    artifacts: list[str] = []
    stack = [None]
    while stack:
        for item in client.list_artifacts(run_id, stack.pop()):
            (stack.append(item.path) if item.is_dir else artifacts.append(item.path))
    return {
        "status": data.info.status,
        "params": dict(data.data.params),
        "metrics": dict(data.data.metrics),
        "tags": dict(data.data.tags),
        "artifacts": sorted(artifacts),
    }


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) points of one metric."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


# ---- sweep-level tracking ----
# The sweep report (contrastive/sweep_report.py) keeps the sweep's parent run off MLflow's fluent run stack,
# because trial jobs may run in the same process and start their own (child) runs: everything below uses
# MlflowClient.


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _client(tcfg: DictConfig) -> tuple[MlflowClient, str]:
    """A client on the configured store, and the experiment id."""
    experiment_id = configure(tcfg.tracking_uri, tcfg.experiment)
    return MlflowClient(), experiment_id


def start_sweep_run(tcfg: DictConfig, study_name: str, settings: Mapping[str, Any], run_id: str | None = None) -> str:
    """The sweep's parent run: `run_id` reopened when it exists (resumed or shared study), else a new one.

    `settings` (study name, storage, sampler, pruner, search space...) become params; on a reopened run,
    only new keys are logged (MLflow params cannot change) and changed ones are listed in a tag.
    """
    from mlflow.exceptions import MlflowException

    client, experiment_id = _client(tcfg)
    if run_id:
        try:
            found = client.get_run(run_id)
        except MlflowException:
            found = None
        if found is not None and found.info.lifecycle_stage == "active" and found.info.experiment_id == experiment_id:
            old = found.data.params
            changed = sorted(k for k, v in settings.items() if k in old and old[k] != str(v)[:MAX_PARAM_LENGTH])
            log_params({k: v for k, v in settings.items() if k not in old}, run_id)
            client.update_run(run_id, status="RUNNING")
            if changed:
                client.set_tag(run_id, "settings_changed_on_resume", ",".join(changed))
            return run_id
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{study_name}",
        tags={"sweep": "true", "study_name": study_name, "git_commit": str(git_commit())},
    )
    log_params(settings, run.info.run_id)
    return run.info.run_id


def find_trial_run(tcfg: DictConfig, parent_run_id: str, trial_number: int) -> str | None:
    """The child run of a trial: nested under the parent, with param `optuna.trial_number` (latest if several)."""
    client, experiment_id = _client(tcfg)
    runs = client.search_runs(
        [experiment_id],
        max_results=5,
        order_by=["attributes.start_time DESC"],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        f"and params.`optuna.trial_number` = '{int(trial_number)}'",
    )
    return runs[0].info.run_id if runs else None


def tag_trial_run(
    tcfg: DictConfig,
    parent_run_id: str,
    trial_number: int,
    state: str,
    values: list[float] | None = None,
    reason: str | None = None,
    run_id: str | None = None,
) -> str | None:
    """Tag a finished trial's child run (`run_id`, the one the job recorded, else found under the parent) with
    the trial number, state PRUNED/FAIL/COMPLETE and reason; log its value on the parent at step = trial
    number. Returns the child run id (None when the job never started a run)."""
    from mlflow.entities import Metric, RunTag

    client, _ = _client(tcfg)
    child = run_id or find_trial_run(tcfg, parent_run_id, trial_number)
    if child:
        tags = [RunTag("trial_number", str(trial_number)), RunTag("trial_state", state)]
        if reason:
            tags.append(RunTag("trial_reason", reason[:5000]))
        client.log_batch(child, tags=tags)
    if values:
        now = _now_ms()
        metrics = [
            Metric("trial_value" if len(values) == 1 else f"trial_value_{i}", float(v), now, int(trial_number))
            for i, v in enumerate(values)
            if math.isfinite(float(v))
        ]
        client.log_batch(parent_run_id, metrics=metrics)
    return child


def log_sweep_summary(parent_run_id: str, summary: Mapping[str, Any], artifacts: list[str | Path]) -> None:
    """Best value(s) and state counts as metrics, best trial and params as tags, files as artifacts."""
    from mlflow.entities import Metric, RunTag

    client = MlflowClient()
    now = _now_ms()
    metrics = [Metric(f"n_{state.lower()}", float(n), now, 0) for state, n in summary.get("states", {}).items()]
    values = summary.get("best_values") or []
    metrics += [
        Metric("best_value" if len(values) == 1 else f"best_value_{i}", float(v), now, 0) for i, v in enumerate(values)
    ]
    tags = [RunTag("best_trial", str(summary.get("best_trial")))]
    tags += [RunTag(f"best.{k}", str(v)) for k, v in (summary.get("best_params") or {}).items()]
    if summary.get("best_mlflow_run_id"):
        tags.append(RunTag("best_run_id", str(summary["best_mlflow_run_id"])))
    if summary.get("promoted_dir"):
        tags.append(RunTag("best_dir", str(summary["promoted_dir"])))
    client.log_batch(parent_run_id, metrics=metrics, tags=tags)
    for path in artifacts:
        client.log_artifact(parent_run_id, str(path))


def register_best(tcfg: DictConfig | None, run_id: str | None, best_dir: str | Path) -> dict[str, Any] | None:
    """Register the promoted checkpoint as a version of `tracking.registered_model` with alias `best`.

    Source: the child run's `model` artifact when it was logged, else the promoted directory. A version with
    the same source already under the alias is kept (reruns do not pile up versions).
    """
    from mlflow.exceptions import MlflowException

    name = tcfg.get("registered_model") if tcfg is not None else None
    if not name:
        return None
    client, _ = _client(tcfg)
    source = str(Path(best_dir).resolve())
    if run_id and any(a.path == "model" for a in client.list_artifacts(run_id)):
        source = f"runs:/{run_id}/model"
    try:
        current = client.get_model_version_by_alias(name, "best")
        if current.source == source or (run_id and current.run_id == run_id):
            return {"name": name, "version": current.version, "alias": "best", "source": current.source}
    except MlflowException:
        pass
    with contextlib.suppress(MlflowException):  # it may exist already
        client.create_registered_model(name)
    version = client.create_model_version(
        name, source, run_id=run_id, tags={"promoted_dir": str(Path(best_dir).resolve())}
    )
    client.set_registered_model_alias(name, "best", version.version)
    log.info("registered %s version %s (alias best) from %s", name, version.version, source)
    return {"name": name, "version": version.version, "alias": "best", "source": source}


def end_sweep_run(parent_run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run (FINISHED, or KILLED when the sweep was interrupted; a rerun reopens it)."""
    MlflowClient().set_terminated(parent_run_id, status)
