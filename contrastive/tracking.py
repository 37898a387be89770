"""Every MLflow call of the project: runs, params, metrics, artifacts, models, tags."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from contrastive import PROJECT_ROOT
from contrastive.errors import ConfigError
from contrastive.utils import file_lock
from hydra_plugins.contrastive_sweeper.trial import hide_passwords

log = logging.getLogger(__name__)

MAX_PARAMS_PER_CALL = 100  # MLflow's limit on one log_params batch
MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value


MODEL_URI_TAG = "model_uri"  # run tag: where the run's sentence_transformers model was logged (models:/m-...)
METRIC_TAG = "metric."  # model version tags: the promotion metric's value (metric.<name>)
CHAMPION, CHALLENGER = "best", "candidate"  # registry aliases: the champion, and a version that did not beat it


def artifact_root(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts: `mlartifacts/` beside a SQLite store file; None (MLflow's
    default, the server's --artifacts-destination) for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve().parent / "mlartifacts").as_uri()


def default_tracking_uri() -> str:
    """The store outside a training config: $MLFLOW_TRACKING_URI, else the project's mlruns.db (conf/tracking)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlruns.db'}"


def store_lock(tracking_uri: str) -> contextlib.AbstractContextManager:
    """A lock beside a SQLite store (`<db>.lock`) for creating its tables and experiments: two processes that open
    a fresh store at once would both create MLflow's tables (`duplicate column name`); a no-op for servers."""
    if tracking_uri.startswith("sqlite:///"):
        return file_lock(tracking_uri.removeprefix("sqlite:///") + ".lock")
    return contextlib.nullcontext()


PROBE_TIMEOUT_S = 5.0  # conf/tracking's probe_timeout_s, for callers without a tracking config
_answered: set[str] = set()  # servers that answered a probe in this process (probed once each)


def require_server(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """An http(s) tracking server must answer one GET /health within `timeout_s`, else one ConfigError naming the
    URI (MLflow's own client retries for minutes); other stores (sqlite, file) are not probed."""
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")) or tracking_uri in _answered:
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=float(timeout_s)):  # noqa: S310 - the configured server
            pass
    except urllib.error.HTTPError:
        pass  # something answers (a proxy's 401/404...): MLflow's own calls say what is wrong
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"tracking.tracking_uri={hide_passwords(tracking_uri)!r}: no server answered within {timeout_s:g} s "
            f"({reason}); start it, or point tracking.tracking_uri elsewhere (or tracking.enabled=false)"
        ) from None
    _answered.add(tracking_uri)


HOST_TAG, PID_TAG, PID_START_TAG = "host", "pid", "pid_start"  # run tags: the process that holds the run open
DEAD_REASON = "its process {pid} on {host} died without closing the run (SIGKILL, out of memory, power)"
_swept: set[str] = set()  # stores whose dead processes' runs this process closed already


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat), None where it cannot be read: with
    the pid it names one process, so a reused pid is not taken for the run's."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_tags() -> dict[str, str]:
    """The tags naming this process as a run's holder (host, pid, its start time)."""
    import socket

    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: str(process_start(pid))}


def holder_alive(tags: Mapping[str, str]) -> bool:
    """Whether the local process that a run's tags name still runs (False: it died; a reused pid is not it)."""
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return True  # a run that names no process: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    started = tags.get(PID_START_TAG)
    return started in (None, "None") or process_start(pid) in (None, started)


def close_dead_runs(tracking_uri: str) -> list[str]:
    """End KILLED (tagged `state=KILLED` and the reason) every RUNNING run of this store whose process ran on this
    host and is dead; once per store per process. Returns the ids it closed."""
    import socket

    from mlflow.entities import RunTag, ViewType

    if tracking_uri in _swept:
        return []
    _swept.add(tracking_uri)
    client, host = MlflowClient(tracking_uri=tracking_uri), socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    closed: list[str] = []
    for start in range(0, len(experiments), 100):
        runs = client.search_runs(
            experiments[start : start + 100],
            filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'",
            max_results=1000,
        )
        for found in runs:
            tags = found.data.tags
            if holder_alive(tags):
                continue
            why = DEAD_REASON.format(pid=tags.get(PID_TAG), host=host)
            with contextlib.suppress(Exception):  # another process may close it at the same moment
                client.log_batch(found.info.run_id, tags=[RunTag("state", "KILLED"), RunTag("error", why)])
                client.set_terminated(found.info.run_id, "KILLED")
                closed.append(found.info.run_id)
    if closed:
        log.warning("closed %d run(s) left RUNNING by dead processes: %s", len(closed), ", ".join(closed))
    return closed


def configure(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the store and experiment (created with its artifacts beside a SQLite store); its id. The
    first time in a process, the store's runs that dead local processes left RUNNING are closed KILLED."""
    require_server(tracking_uri)
    with store_lock(tracking_uri):
        mlflow.set_tracking_uri(tracking_uri)
        found = mlflow.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else None
        if experiment_id is None:
            experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_root(tracking_uri))
    close_dead_runs(tracking_uri)
    return experiment_id


def flatten(mapping: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts to keys joined by `sep`; lists become their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + sep, sep))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return flat


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """Every resolved config value (Hydra's own block excluded) as flat params."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return {k: hide_passwords(str(v))[:MAX_PARAM_LENGTH] for k, v in flatten(container).items()}


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log params (to the active run, or `run_id`) in batches of at most 100 (MLflow's cap per call)."""
    items = [(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if v is not None]
    for start in range(0, len(items), MAX_PARAMS_PER_CALL):
        batch = dict(items[start : start + MAX_PARAMS_PER_CALL])
        mlflow.log_params(batch, run_id=run_id) if run_id else mlflow.log_params(batch)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the finite numeric values of a (possibly nested) dict of metrics, names joined by `/`."""
    numeric = {
        prefix + k: float(v)
        for k, v in flatten(metrics, sep="/").items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def eval_metrics(finetuned: Mapping[str, Any], baseline: Mapping[str, Any], delta: Mapping[str, Any]) -> dict:
    """An evaluation's metrics under one namespace style: `finetuned/<m>`, `baseline/<m>`, `delta/<m>` and
    `ci/<m>/low|high` (the delta's bootstrap interval); eval-set sizes (`n_*`) are left to `eval_sizes`."""
    out: dict[str, Any] = {}
    for side, values in (("finetuned", finetuned), ("baseline", baseline)):
        out.update({f"{side}/{k}": v for k, v in (values or {}).items() if not str(k).startswith("n_")})
    for name, row in (delta or {}).items():
        out[f"delta/{name}"] = row.get("delta")
        out[f"ci/{name}/low"], out[f"ci/{name}/high"] = row.get("ci_low"), row.get("ci_high")
    return out


def interpolation_metrics(entries: Mapping[str, Mapping[str, Any]]) -> dict:
    """The weight mixes' metrics (metrics.json `interpolate`: {alpha: {finetuned, delta}}) in `eval_metrics`'
    style under `interp/<alpha>/` (the alpha's dot as `_`, metric names keep no dots): `interp/0_5/finetuned/<m>`,
    `interp/0_5/delta/<m>`, `interp/0_5/ci/<m>/low|high`."""
    out: dict[str, Any] = {}
    for alpha, entry in entries.items():
        label = str(alpha).replace(".", "_")
        metrics = eval_metrics(entry.get("finetuned") or {}, {}, entry.get("delta") or {})
        out.update({f"interp/{label}/{k}": v for k, v in metrics.items()})
    return out


def eval_sizes(finetuned: Mapping[str, Any]) -> dict[str, Any]:
    """The eval set's sizes (`n_queries`, `n_corpus`, `n_pairs`) as `data.eval_<name>` params."""
    return {f"data.eval_{k}": v for k, v in (finetuned or {}).items() if str(k).startswith("n_")}


def log_data(summary: Mapping[str, Any], fingerprint: str, name: str = "qqp") -> None:
    """The data as the run's input dataset (digest: the data fingerprint; Dataset column) and its counts as
    `data/<key>` params (constants of the run, not metrics)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    origin = str(summary.get("source") or name)
    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file either way
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(origin)
    except Exception:  # noqa: BLE001 - an origin MLflow has no resolver for (hf ids...)
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        source = HTTPDatasetSource(origin)
    mlflow.log_input(MetaDataset(source, name=name, digest=fingerprint[:36]), context="training")
    log_params({f"data.{k}": v for k, v in summary.items() if k != "source"})


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
    if not isinstance(exc, Exception):  # SIGTERM / SIGINT (Interrupted, the sweeper's SweepStopped), SystemExit
        return "KILLED", "KILLED"
    return "FAILED", "FAIL"


@contextlib.contextmanager
def run(tcfg: Any, run_name: str | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """One MLflow run for a job, from the tracking settings `tcfg` (nested under its `parent_run_id` if set).

    Yields the run id (None when tracking is disabled). The run ends FINISHED, KILLED (pruned, or SIGTERM /
    SIGINT) or FAILED, with the error as a tag, and the exception propagates.
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
        tags={k: str(v) for k, v in (tags or {}).items() if v is not None} | owner_tags(),
        log_system_metrics=bool(getattr(tcfg, "system_metrics", False)),  # CPU, memory, disk (GPU) every 10 s
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


def log_model(model: Any, examples: list[str], name: str = "model") -> str:
    """Log the model as MLflow's `sentence_transformers` flavor (signature and input example from `examples`),
    so it loads with mlflow.sentence_transformers / mlflow.pyfunc; its URI, also the run's `model_uri` tag."""
    from mlflow.models import infer_signature

    examples = [str(x) for x in examples[:3]] or ["How do I learn Python?"]
    signature = infer_signature(examples, model.encode(examples, show_progress_bar=False))
    info = mlflow.sentence_transformers.log_model(
        model, name=name, signature=signature, input_example=examples, pip_requirements=pinned_requirements()
    )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def pinned_requirements() -> list[str]:
    """The flavor's own requirements pinned to the installed versions, without local labels (`torch==2.13.0`, not
    `+cpu`, so pip can install them): given explicitly, MLflow skips inferring them in a subprocess (~10 s a model)."""
    return [req.split("+", 1)[0] for req in mlflow.sentence_transformers.get_default_pip_requirements()]


def is_model_uri(name: str) -> bool:
    """True for an MLflow model URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/ID/PATH`)."""
    return str(name).startswith(("models:/", "runs:/"))


def _cache_key(uri: str) -> str:
    """A stable cache folder name for a model URI: the version an alias points to now, or the run id."""
    from contrastive.utils import sha256_hex

    client = MlflowClient()
    body = uri.split(":/", 1)[1].strip("/")
    if uri.startswith("models:/") and "@" in body:
        model, alias = body.split("@", 1)
        version = client.get_model_version_by_alias(model, alias)
        return f"{model}-v{version.version}"
    return body.replace("/", "-")[:80] + "-" + sha256_hex(uri)[:8]


def download_model(uri: str, cache_dir: str | Path, tracking_uri: str | None = None) -> Path:
    """A local SentenceTransformer directory for a model URI: the logged flavor downloaded once into
    `cache_dir` (an alias is cached per version it points to), with the run's metrics.json beside it."""
    from contrastive.utils import write_dir_atomic

    store = tracking_uri or default_tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise ValueError(f"no MLflow store at {store} (set MLFLOW_TRACKING_URI to the store that holds it)")
    require_server(store)
    close_dead_runs(store)
    mlflow.set_tracking_uri(store)
    target = Path(cache_dir).expanduser() / _cache_key(uri)

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp))
        found = sorted(tmp.rglob("model.sentence_transformer"))
        run_id = mlflow.models.get_model_info(uri).run_id
        if found and run_id:
            with contextlib.suppress(Exception):  # the app's thresholds: the run's metrics.json, beside the weights
                mlflow.artifacts.download_artifacts(f"runs:/{run_id}/metrics.json", dst_path=str(found[0]))

    if not target.is_dir():
        write_dir_atomic(target, fill)
    found = sorted(target.rglob("model.sentence_transformer"))
    if not found:
        raise ValueError(f"{uri} holds no sentence_transformers model (no model.sentence_transformer folder)")
    return found[0]


def fetch_run_model(tcfg: DictConfig, run_id: str, into: str | Path) -> Path:
    """A run's model downloaded into `into`: its logged sentence_transformers flavor (the `model_uri` tag), else
    its `model` artifacts, with the run's metrics.json inside (how promotion reaches a trial another machine ran)."""
    client, _ = _client(tcfg)
    uri = client.get_run(run_id).data.tags.get(MODEL_URI_TAG) or f"runs:/{run_id}/model"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(into), tracking_uri=tcfg.tracking_uri))
    found = sorted(local.rglob("model.sentence_transformer"))
    model = found[0] if found else local
    with contextlib.suppress(Exception):  # a run without metrics.json still promotes its weights
        mlflow.artifacts.download_artifacts(
            f"runs:/{run_id}/metrics.json", dst_path=str(model), tracking_uri=tcfg.tracking_uri
        )
    return model


def registry_champion(name: str | None, tracking_uri: str | None = None) -> str | None:
    """`models:/NAME@best` when the store holds that alias (a SQLite store that does not exist is not created)."""
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or default_tracking_uri()
    if not name or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file()):
        return None
    require_server(uri)
    close_dead_runs(uri)  # the app's start on this store
    try:
        MlflowClient(tracking_uri=uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return f"models:/{name}@{CHAMPION}"


def log_loss_history(history: list[dict[str, Any]]) -> None:
    """The Trainer's loss history as a JSON artifact (the points themselves were streamed by MlflowLossCallback:
    logging them again would give every step two points)."""
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
    from mlflow.entities import RunTag
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
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in owner_tags().items()])  # held by this process now
            if changed:
                client.set_tag(run_id, "settings_changed_on_resume", ",".join(changed))
            return run_id
    space = ", ".join(str(k).removeprefix("space.") for k in settings if str(k).startswith("space."))
    note = (
        f"Optuna sweep `{study_name}` of `python -m contrastive.train`: each trial is a child run (params, metrics "
        "beside the untuned baseline, figures, model); this run holds the study's settings, summary.json, the "
        f"objective / Pareto / importance figures and the promoted trial.{' Searched: ' + space + '.' if space else ''}"
    )
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{study_name}",
        tags={
            "sweep": "true",
            "study_name": study_name,
            GIT_COMMIT_TAG: str(git_commit()),
            "mlflow.note.content": note,  # the run's description in the UI
            "mlflow.source.name": "contrastive.train (Optuna sweep)",
            "mlflow.source.type": "LOCAL",
        }
        | owner_tags(),
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
    promotion = summary.get("promotion") or {}
    if promotion.get("why"):
        tags.append(RunTag("promotion", str(promotion["why"])[:5000]))
    if promotion.get("unhealthy"):
        tags.append(RunTag("unhealthy_trials", ",".join(map(str, promotion["unhealthy"]))))
    soup = summary.get("soup") or {}
    if soup:
        soup_metrics, soup_tags = soup_summary(soup)
        metrics += [Metric(k, float(v), now, 0) for k, v in soup_metrics.items()]
        tags += [RunTag(k, v[:5000]) for k, v in soup_tags.items()]
        known = client.get_run(parent_run_id).data.params  # params cannot change: a resumed sweep keeps the first
        log_params({k: v for k, v in soup_params(soup).items() if k not in known}, parent_run_id)
    client.log_batch(parent_run_id, metrics=metrics, tags=tags)
    if summary.get("best_mlflow_run_id"):
        copy_inputs(client, str(summary["best_mlflow_run_id"]), parent_run_id)
    for path in artifacts:
        client.log_artifact(parent_run_id, str(path))


def copy_inputs(client: MlflowClient, source_run_id: str, run_id: str) -> None:
    """The datasets a trial's run logged (its training data, by fingerprint) as the sweep's parent run's inputs
    too, once: the parent's Dataset column names what the sweep trained on."""
    have = {(i.dataset.name, i.dataset.digest) for i in client.get_run(run_id).inputs.dataset_inputs}
    new = [
        i for i in client.get_run(source_run_id).inputs.dataset_inputs if (i.dataset.name, i.dataset.digest) not in have
    ]
    if new:
        client.log_inputs(run_id, datasets=new)


def soup_summary(soup: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A sweep soup's (summary.json `soup`) metrics on the parent run, `soup/finetuned/<m>`, `soup/delta/<m>`...,
    and its tags: the ingredients with their weights, whether it was promoted and why."""
    val = (soup.get("val") or {}).get("soup") or {}
    named = eval_metrics(val.get("finetuned") or {}, {}, val.get("delta") or {})
    metrics = {f"soup/{k}": float(v) for k, v in named.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    ingredients = ", ".join(
        f"trial {i['trial']} (weight {i['weight']:.3g})"
        if isinstance(i.get("weight"), float)
        else f"trial {i['trial']}"
        for i in soup.get("ingredients") or []
    )
    tags = {
        "soup_ingredients": ingredients or ", ".join(f"trial {n}" for n in soup.get("candidates") or []),
        "soup_kept_trials": ",".join(map(str, soup.get("kept_trials") or [])),
        "soup_promoted": str(bool(soup.get("promoted"))).lower(),
        "soup_why": str(soup.get("why") or ""),
    }
    if soup.get("mlflow_run_id"):
        tags["soup_run_id"] = str(soup["mlflow_run_id"])
    return metrics, tags


def soup_params(soup: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep soup's settings as parent-run params: method, top_k, the metric it must beat the best trial on."""
    return {f"soup.{k}": soup.get(k) for k in ("method", "top_k", "metric")}


def _version_source(client: MlflowClient, run_id: str | None, best_dir: str | Path) -> str:
    """What a promoted checkpoint is registered from: the run's logged flavor, else the promoted directory."""
    if run_id:
        tags = client.get_run(run_id).data.tags
        if tags.get(MODEL_URI_TAG):
            return tags[MODEL_URI_TAG]
    return str(Path(best_dir).resolve())


def champion_verdict(current: Any, candidate: Mapping[str, str], metric: str | None) -> tuple[bool, str]:
    """Whether a candidate version (its tags) takes `best` from `current` (a version, or None), and why: only
    a higher `metric` on the same data fingerprint and evaluation protocol beats the champion."""
    if current is None:
        return True, "no champion yet"
    held = current.tags
    for key in ("data_fingerprint", "eval_protocol"):
        if held.get(key) != candidate.get(key):
            return False, f"{key} differs from champion v{current.version} ({held.get(key)} vs {candidate.get(key)})"
    mine, theirs = candidate.get(METRIC_TAG + str(metric)), held.get(METRIC_TAG + str(metric))
    if metric is None or mine is None or theirs is None:
        return False, f"no {metric} recorded on both the candidate and champion v{current.version}"
    if float(mine) > float(theirs):
        return True, f"{metric} {float(mine):.4f} beats champion v{current.version} ({float(theirs):.4f})"
    return False, f"{metric} {float(mine):.4f} does not beat champion v{current.version} ({float(theirs):.4f})"


GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag (the UI links it); set by us for `python -m` runs
REGISTERED_DESCRIPTION = (
    "all-MiniLM-L6-v2 fine-tuned on Quora Question Pairs with contrastive learning (MNRL + an auxiliary pair loss) "
    "by the contrastive project's sweeps; alias `best` is the champion (moved only by a higher promotion metric on "
    "the same data and eval protocol), `candidate` the latest challenger. Each version's description and tags carry "
    "its metrics beside the untuned baseline."
)


def version_description(metrics: Mapping[str, float], run_tags: Mapping[str, str]) -> str:
    """A model version's description: its val metrics beside the untuned baseline's, and the protocol."""
    rows = []
    for key in sorted(k for k in metrics if k.startswith("finetuned/")):
        name = key.removeprefix("finetuned/")
        base, delta = metrics.get(f"baseline/{name}"), metrics.get(f"delta/{name}")
        if name == "pair_threshold" or base is None or delta is None:
            continue  # a threshold is a setting the run found, not a score
        rows.append(f"{name} {metrics[key]:.4f} (baseline {base:.4f}, {delta:+.4f})")
    protocol = run_tags.get("eval_protocol", "?")
    return "Fine-tuned vs untuned all-MiniLM-L6-v2 on " + protocol + ": " + "; ".join(rows) if rows else ""


def register_best(
    tcfg: DictConfig | None,
    run_id: str | None,
    best_dir: str | Path,
    metric: str | None = None,
    value: float | None = None,
) -> dict[str, Any] | None:
    """Register a sweep's promoted checkpoint as a version of `tracking.registered_model`, champion style.

    The version (one per run: a rerun reuses it) carries the run's data fingerprint, evaluation protocol and
    its `metric` value as tags. It takes alias `best` only when it beats the current `best` on the same data
    and protocol (`champion_verdict`); otherwise it gets alias `candidate`, and the log and summary say why.
    """
    from mlflow.exceptions import MlflowException

    name = getattr(tcfg, "registered_model", None) if tcfg is not None else None
    if not name:
        return None
    client, _ = _client(tcfg)
    run_tags = client.get_run(run_id).data.tags if run_id else {}
    if run_tags.get("health", "ok") != "ok":  # collapsed, zero loss or zero gradient: never a champion or candidate
        why = f"not registered: run {run_id} is flagged health={run_tags['health']}"
        log.warning("%s", why)
        return {"name": name, "version": None, "alias": None, "why": why}
    tags = {"promoted_dir": str(Path(best_dir).resolve())}
    tags.update({k: str(run_tags[k]) for k in ("data_fingerprint", "eval_protocol") if run_tags.get(k)})
    if metric is not None and value is not None:
        tags[METRIC_TAG + metric] = repr(float(value))
    with contextlib.suppress(MlflowException):  # it may exist already
        client.create_registered_model(name, description=REGISTERED_DESCRIPTION)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if current is not None and run_id and current.run_id == run_id:
        return {"name": name, "version": current.version, "alias": CHAMPION, "why": "already the champion"}
    mine = client.search_model_versions(f"name='{name}' and run_id='{run_id}'") if run_id else []
    if mine:
        version = mine[0]
    else:
        source = _version_source(client, run_id, best_dir)
        # a logged model (`models:/m-<id>`) is named by its id too: a tracking server refuses the source without it
        model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
        description = version_description(client.get_run(run_id).data.metrics if run_id else {}, run_tags)
        version = client.create_model_version(
            name, source, run_id=run_id, tags=tags, model_id=model_id, description=description
        )
    wins, why = champion_verdict(current, tags, metric)
    alias = CHAMPION if wins else CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as @%s: %s", name, version.version, alias, why)
    return {"name": name, "version": version.version, "alias": alias, "why": why, "source": version.source}


def end_sweep_run(parent_run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run (FINISHED, or KILLED when the sweep was interrupted; a rerun reopens it)."""
    MlflowClient().set_terminated(parent_run_id, status)


def close_lost_runs(tcfg: DictConfig, reasons: Mapping[str, str]) -> list[str]:
    """End KILLED each run of `reasons` (run id -> why) that is still RUNNING (its process died without closing
    it), tagged `trial_state=FAIL` and the reason; returns the ids it closed."""
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    client, _ = _client(tcfg)
    closed = []
    for run_id, reason in reasons.items():
        try:
            found = client.get_run(run_id)
            status, tagged = found.info.status, "trial_state" in found.data.tags
            if status != "RUNNING" and (status != "KILLED" or tagged):  # KILLED untagged: closed by close_dead_runs
                continue
            client.log_batch(run_id, tags=[RunTag("trial_state", "FAIL"), RunTag("trial_reason", reason[:5000])])
            if status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
        except MlflowException as exc:
            log.warning("could not close run %s: %s", run_id, exc)
            continue
        closed.append(run_id)
    return closed
