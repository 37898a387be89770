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
MAX_PARAM_LENGTH = 6000    # MLflow's limit on one param value


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


def log_params(params: Mapping[str, Any]) -> None:
    """Log params in batches of at most 100 (MLflow's cap per call)."""
    items = list(params.items())
    for start in range(0, len(items), MAX_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[start:start + MAX_PARAMS_PER_CALL]))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the finite numeric values of a (possibly nested) dict of metrics."""
    numeric = {
        prefix + k: float(v) for k, v in flatten(metrics).items()
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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
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
def run(cfg: DictConfig, run_name: str | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """One MLflow run for a job (nested under `tracking.parent_run_id` when a sweeper set it).

    Yields the run id (None when tracking is disabled). The run ends FINISHED, KILLED (pruned) or
    FAILED with the error as a tag, and the exception propagates.
    """
    tcfg = cfg.tracking
    if not tcfg.enabled:
        yield None
        return
    experiment_id = configure(tcfg.tracking_uri, tcfg.experiment)
    parent = tcfg.get("parent_run_id")
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent or None,
                              tags={k: str(v) for k, v in (tags or {}).items()})
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
        "status": data.info.status, "params": dict(data.data.params), "metrics": dict(data.data.metrics),
        "tags": dict(data.data.tags), "artifacts": sorted(artifacts),
    }


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) points of one metric."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


# ---- sweep-level tracking ----
