"""README's "Scaling past one machine" against the real engines: a PostgreSQL cluster and an `mlflow server` on
127.0.0.1, started by `.ci/cluster up DIR` (CI does it; by hand: `bash .ci/cluster up /tmp/cl && source
/tmp/cl/env`, then `bash .ci/cluster down /tmp/cl`). Nothing here is mocked: the study lock is PostgreSQL's
advisory lock, the runs and the registry live in the server, and each sweep worker is a separate process with
its own output and cache dirs, as two machines that share nothing but the two servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from contrastive import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> SimpleNamespace:
    pg, uri = os.environ.get("CONTRASTIVE_TEST_PG_URL"), os.environ.get("CONTRASTIVE_TEST_MLFLOW_URI")
    if not pg or not uri:
        if os.environ.get("CI"):
            pytest.fail("CI runs the cluster tests: .ci/run must start .ci/cluster and export its env")
        pytest.skip("no PostgreSQL / MLflow server: bash .ci/cluster up DIR && source DIR/env")
    return SimpleNamespace(pg=pg, mlflow=uri, secret=os.environ["CONTRASTIVE_TEST_PG_SECRET"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(cluster: SimpleNamespace):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cluster.mlflow)


def runs_of(cluster: SimpleNamespace, experiment: str) -> list:
    c = client(cluster)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def assert_no_secret(secret: str, texts: list[str], folders: list[Path]) -> None:
    """The password is in no text given and in no file under the folders."""
    assert all(secret not in text for text in texts)
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                assert secret not in path.read_bytes().decode("utf-8", "ignore"), path


# ---------------------------------------------------------------- the study lock on PostgreSQL
def test_the_study_lock_on_postgresql_has_one_holder_and_dies_with_it(cluster):
    from hydra_plugins.contrastive_sweeper.lock import LockTimeout, study_lock
    from hydra_plugins.contrastive_sweeper.trial import rdb_storage

    name = unique("lock")
    study = optuna.create_study(study_name=name, storage=rdb_storage(cluster.pg))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with study_lock(study, "promotion"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    busy = pytest.raises(LockTimeout, match="still held by another worker")
    with busy, study_lock(study, "promotion", timeout_s=0.5):
        pass
    release.set()
    thread.join()
    # a worker killed while it holds the lock: the server frees it with the connection
    code = (
        "import optuna, sys, time\n"
        "from hydra_plugins.contrastive_sweeper.lock import study_lock\n"
        f"study = optuna.load_study(study_name={name!r}, storage=sys.argv[1])\n"
        "with study_lock(study, 'promotion'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, cluster.pg], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout), study_lock(study, "promotion", timeout_s=0.5):
            pass
    finally:
        proc.kill()
        proc.wait()
    with study_lock(study, "promotion", timeout_s=30):
        pass


# ---------------------------------------------------------------- two machines, one study
def train_worker(cluster: SimpleNamespace, machine: Path, study: str, n_trials: int) -> list[str]:
    """One sweep worker of the real train job on the fixture, its files in its own `machine` dir only."""
    return [
        sys.executable,
        "-m",
        "contrastive.train",
        "+sweeps=fixture_tiny",
        f"hydra.sweeper.storage={cluster.pg}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra/sweeper/pruner=none",  # every trial completes: the promotion is checked against all of them
        f"tracking.tracking_uri={cluster.mlflow}",
        f"tracking.experiment={study}",
        f"tracking.registered_model={study}",
        f"paths.output_root={machine / 'outputs'}",
        f"paths.cache_dir={machine / 'cache'}",
    ]


def test_two_machines_share_one_study_one_parent_run_and_one_promotion(cluster, tmp_path):
    """Two workers of the real train job, started at the same moment, each with its own output and cache dirs,
    against PostgreSQL + the MLflow server: exactly n_trials, one parent run holding every child, one promotion
    and one registry version, `@best` = the study's real best, and the storage password nowhere."""
    name, n_trials = unique("two-machines"), 4
    machines = [tmp_path / "machine_a", tmp_path / "machine_b"]
    procs = [
        subprocess.Popen(
            train_worker(cluster, m, name, n_trials),
            cwd=m.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in machines
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[1][-3000:] for o in outputs)

    study = optuna.load_study(study_name=name, storage=cluster.pg)
    trials = study.get_trials()
    assert len(trials) == n_trials and sorted(t.number for t in trials) == list(range(n_trials))
    assert [t.state.name for t in trials] == ["COMPLETE"] * n_trials
    ran_on = {t.number: t.user_attrs["output_dir"].split("/machine_")[1][0] for t in trials}
    assert set(ran_on.values()) == {"a", "b"}  # both machines ran trials

    runs = runs_of(cluster, name)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(n_trials))

    best = study.best_trial
    promoted = study.user_attrs["promoted"]
    assert promoted["trial"] == best.number and promoted["run_id"] == best.user_attrs["mlflow_run_id"]
    assert parents[0].data.tags["best_trial"] == str(best.number)
    summaries = [json.loads((m / "outputs" / "sweeps" / name / "summary.json").read_text()) for m in machines]
    promoters = [s for s in summaries if s["promoted_dir"]]
    assert len(promoters) == 1 and promoters[0]["best_trial"] == best.number
    assert (Path(promoters[0]["promoted_dir"]) / "model.safetensors").is_file()
    versions = client(cluster).search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and promoters[0]["registered"]["alias"] == "best", promoters[0].get("registered")
    champion = client(cluster).get_model_version_by_alias(name, "best")
    assert champion.run_id == best.user_attrs["mlflow_run_id"]

    texts = [o[0] + o[1] for o in outputs]
    texts += [json.dumps(r.data.params) + json.dumps(r.data.tags) for r in runs]
    import mlflow

    for r in children:  # the job's config.yaml, as uploaded to the server
        path = mlflow.artifacts.download_artifacts(
            f"runs:/{r.info.run_id}/config.yaml",
            dst_path=str(tmp_path / "dl" / r.info.run_id),
            tracking_uri=cluster.mlflow,
        )
        texts.append(Path(path).read_text())
    assert_no_secret(cluster.secret, texts, machines)


# ---------------------------------------------------------------- a worker killed mid-trial
def test_a_worker_killed_mid_trial_is_retried_and_its_run_ends_killed(cluster, tmp_path):
    """SIGKILL a sweep worker (the toy task) while its trial runs, against PostgreSQL + the MLflow server: the
    next worker retries the trial and ends its run KILLED ("worker lost"); no run stays RUNNING."""
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from sweep_toy.runner import run_toy, start_toy_until_hang

    name = unique("killed")
    marker = tmp_path / "hanging"
    args = (
        f"hydra.sweeper.storage={cluster.pg}",
        f"hydra.sweeper.study_name={name}",
        "tracking.enabled=true",
        f"tracking.tracking_uri={cluster.mlflow}",
        f"tracking.experiment={name}",
        "hydra.sweeper.n_trials=3",
        f"hang_marker={marker}",
        "hang_at_trial=1",
        "hydra/sweeper/pruner=none",
    )
    first = start_toy_until_hang(
        tmp_path / "a", marker, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert "RUNNING" in {r.info.status for r in runs_of(cluster, name)}
    time.sleep(3)  # past the heartbeat's grace period (2 x 1 s)
    done = run_toy(tmp_path / "b", *args)
    assert cluster.secret not in done.stdout + done.stderr
    study = optuna.load_study(study_name=name, storage=cluster.pg)
    killed = study.trials[1]
    assert killed.state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3
    runs = runs_of(cluster, name)
    assert "RUNNING" not in {r.info.status for r in runs}
    lost = client(cluster).get_run(killed.user_attrs["mlflow_run_id"])
    assert lost.info.status == "KILLED" and lost.data.tags["trial_reason"].startswith("worker lost")
