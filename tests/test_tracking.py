"""tracking.py on a throwaway SQLite store: params in batches, nested runs, end states."""

from __future__ import annotations

import mlflow
import pytest
from omegaconf import OmegaConf

from contrastive import tracking


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    yield uri
    mlflow.end_run()


def _cfg(uri: str, **tracking_extra):
    return OmegaConf.create(
        {
            "tracking": {"enabled": True, "tracking_uri": uri, "experiment": "t", **tracking_extra},
            "a": {"b": 1, "c": [1, 2]},
            "hydra": {"x": 1},
        }
    )


def test_flatten_and_config_params(store):
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    assert tracking.config_params(_cfg(store)) == {
        "tracking.enabled": "True",
        "tracking.tracking_uri": store,
        "tracking.experiment": "t",
        "a.b": "1",
        "a.c": "[1, 2]",
    }  # Hydra's own block left out


def test_more_than_100_params_are_batched(store, monkeypatch):
    calls = []
    real = mlflow.log_params
    monkeypatch.setattr(mlflow, "log_params", lambda p: calls.append(len(p)) or real(p))
    with tracking.run(_cfg(store).tracking, "params") as run_id:
        tracking.log_params({f"p{i}": i for i in range(250)})
    assert calls == [100, 100, 50]
    assert len(tracking.run_info(run_id)["params"]) == 250


def test_run_states_and_nesting(store):
    with tracking.run(_cfg(store).tracking, "parent") as parent:
        pass
    with tracking.run(_cfg(store, parent_run_id=parent).tracking, "child") as child:
        tracking.log_metrics({"x": {"y": 1.5}, "nan": float("nan"), "s": "text"}, step=3)
    info = tracking.run_info(child)
    assert info["status"] == "FINISHED" and info["tags"]["state"] == "COMPLETE"
    assert info["tags"]["mlflow.parentRunId"] == parent
    assert info["metrics"] == {"x/y": 1.5}  # non-finite and non-numeric values skipped
    with pytest.raises(RuntimeError), tracking.run(_cfg(store).tracking, "fails") as failed:
        raise RuntimeError("boom")
    info = tracking.run_info(failed)
    assert info["status"] == "FAILED" and info["tags"]["state"] == "FAIL" and "boom" in info["tags"]["error"]


def test_pruned_run_is_killed(store):
    import optuna

    with pytest.raises(optuna.TrialPruned), tracking.run(_cfg(store).tracking, "pruned") as run_id:
        raise optuna.TrialPruned("step 2")
    info = tracking.run_info(run_id)
    assert info["status"] == "KILLED" and info["tags"]["state"] == "PRUNED"


def test_disabled_tracking_yields_none(store):
    cfg = _cfg(store)
    cfg.tracking.enabled = False
    with tracking.run(cfg.tracking) as run_id:
        assert run_id is None


# ---------------------------------------------------------------- MLflow views
def test_eval_metrics_one_namespace_style():
    finetuned = {"mrr_at_10": 0.9, "pair_threshold": 0.8, "n_queries": 48}
    delta = {"mrr_at_10": {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15}}
    flat = tracking.eval_metrics(finetuned, {"mrr_at_10": 0.8, "n_queries": 48}, delta)
    assert flat == {
        "finetuned/mrr_at_10": 0.9,
        "finetuned/pair_threshold": 0.8,
        "baseline/mrr_at_10": 0.8,
        "delta/mrr_at_10": 0.1,
        "ci/mrr_at_10/low": 0.05,
        "ci/mrr_at_10/high": 0.15,
    }
    assert tracking.eval_sizes(finetuned) == {"data.eval_n_queries": 48}


def test_artifacts_beside_the_sqlite_store_and_data_as_input(store, tmp_path):
    assert tracking.artifact_root(store) == (tmp_path / "mlartifacts").as_uri()
    assert tracking.artifact_root("http://host:5000") is None  # a server: its --artifacts-destination
    with tracking.run(_cfg(store).tracking, "data") as run_id:
        tracking.log_data({"source": "/data/train.csv", "train_pairs": 180}, "f" * 64)
        tracking.log_dict({"a": 1}, "a.json")
    run = mlflow.get_run(run_id)
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert (tmp_path / "mlartifacts").is_dir()
    assert run.data.params["data.train_pairs"] == "180" and not run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.digest == "f" * 36


def test_run_name_says_what_changed():
    from contrastive.train import run_name

    overrides = [
        "data=fixture",
        "trainer.lr=3.1622776601683795e-05",
        "paths.output_dir=/x",
        "++tracking.parent_run_id=1",
    ]
    assert run_name(overrides, "12-00-00") == "data=fixture,trainer.lr=3.16e-05"
    assert run_name(["hydra.run.dir=/x"], "12-00-00") == "12-00-00"
    trial = ["batch.size=16", "+sweeps=fixture_tiny", "++optuna.study_name='s'", "++optuna.trial_number=3"]
    assert run_name(trial, "x") == "trial 3: batch.size=16"
    assert len(run_name([f"k{i}=v" for i in range(40)], "x")) == 80


# ---------------------------------------------------------------- champion semantics
def _candidate(store, fingerprint: str, tmp_path, name: str) -> str:
    """A finished run on data `fingerprint`, and a promoted dir for it."""
    tags = {"data_fingerprint": fingerprint, "eval_protocol": "split=val"}
    with tracking.run(_cfg(store).tracking, name, tags) as rid:
        pass
    (tmp_path / name).mkdir()
    return rid


def test_best_moves_only_for_a_better_model_on_the_same_data(store, tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    caplog.set_level("INFO", logger="contrastive.tracking")
    tcfg = _cfg(store, registered_model="m").tracking
    first = _candidate(store, "fpA", tmp_path, "first")
    got = tracking.register_best(tcfg, first, tmp_path / "first", "mrr_at_10", 0.5)
    assert got["alias"] == "best" and got["why"] == "no champion yet"
    worse = _candidate(store, "fpA", tmp_path, "worse")
    got = tracking.register_best(tcfg, worse, tmp_path / "worse", "mrr_at_10", 0.4)
    assert got["alias"] == "candidate" and "does not beat champion v1" in got["why"]
    assert "as @candidate" in caplog.text
    client = MlflowClient(tracking_uri=store)
    assert client.get_model_version_by_alias("m", "best").run_id == first
    better = _candidate(store, "fpA", tmp_path, "better")
    got = tracking.register_best(tcfg, better, tmp_path / "better", "mrr_at_10", 0.6)
    assert got["alias"] == "best" and "beats champion v1" in got["why"]
    other_data = _candidate(store, "fpB", tmp_path, "other")
    got = tracking.register_best(tcfg, other_data, tmp_path / "other", "mrr_at_10", 0.9)
    assert got["alias"] == "candidate" and "data_fingerprint differs" in got["why"]
    assert tracking.register_best(tcfg, better, tmp_path / "better", "mrr_at_10", 0.6)["why"] == "already the champion"
    assert len(client.search_model_versions("name='m'")) == 4  # a rerun adds no version
    assert client.get_model_version_by_alias("m", "best").run_id == better


def test_a_stopped_run_ends_killed_with_the_signal(store):
    from contrastive.errors import Interrupted

    cfg = _cfg(store).tracking
    with pytest.raises(Interrupted), tracking.run(cfg, "stopped") as run_id:
        raise Interrupted("SIGTERM")
    info = tracking.run_info(run_id)
    assert info["status"] == "KILLED"
    assert info["tags"]["state"] == "KILLED" and info["tags"]["error"] == "Interrupted: interrupted by SIGTERM"


def test_lost_runs_of_failed_trials_are_closed_killed_with_the_reason(store):
    from mlflow.tracking import MlflowClient

    cfg = _cfg(store).tracking
    _, experiment_id = tracking._client(cfg)
    client = MlflowClient()
    lost = client.create_run(experiment_id).info.run_id  # its process died: still RUNNING
    done = client.create_run(experiment_id).info.run_id
    client.set_terminated(done, "FINISHED")
    closed = tracking.close_lost_runs(cfg, {lost: "worker lost", done: "worker lost", "0" * 32: "x"})
    assert closed == [lost]
    info = tracking.run_info(lost)
    assert info["status"] == "KILLED" and info["tags"]["trial_reason"] == "worker lost"
    assert tracking.run_info(done)["status"] == "FINISHED"


def test_config_params_hide_url_passwords(store):
    cfg = _cfg(store)
    cfg.optuna = {"storage": "postgresql://sweeper:hunter2@db/optuna"}
    assert tracking.config_params(cfg)["optuna.storage"] == "postgresql://sweeper:***@db/optuna"


# ---------------------------------------------------------------- runs left RUNNING by dead processes
HOLD_RUN = """
import os, signal, sys, time
from omegaconf import OmegaConf
from contrastive import tracking
tcfg = OmegaConf.create({"enabled": True, "tracking_uri": sys.argv[1], "experiment": "t"})
with tracking.run(tcfg, sys.argv[2]) as run_id:
    print(run_id, flush=True)
    if sys.argv[2] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` (or the OOM killer) would, mid-run
    time.sleep(120)
"""


def _hold_run(store: str, name: str):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD_RUN, store, name], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


@pytest.mark.slow
def test_runs_record_their_process_and_a_start_closes_dead_processes_runs(store):
    """Seen: a SIGKILL'd training run stayed RUNNING forever. Now any next start on the store ends it KILLED with
    the reason, and leaves a live process's run alone."""
    import socket

    from mlflow.tracking import MlflowClient

    killed, killed_id = _hold_run(store, "killed")
    killed.wait(timeout=60)
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(killed_id).info.status == "RUNNING"
    tags = client.get_run(killed_id).data.tags
    assert tags["host"] == socket.gethostname() and tags["pid"] == str(killed.pid) and tags["pid_start"]
    live, live_id = _hold_run(store, "live")  # the next start on the store (train, sweep, registry use)
    try:
        dead = client.get_run(killed_id)
        assert dead.info.status == "KILLED" and dead.data.tags["state"] == "KILLED"
        assert dead.data.tags["error"].startswith(f"its process {killed.pid} on {socket.gethostname()} died")
        assert tracking.close_dead_runs(store) == []  # here too: the live process's run stays open
        assert client.get_run(live_id).info.status == "RUNNING"
    finally:
        live.kill()
        live.wait()


def test_a_reused_pid_is_not_taken_for_the_runs_process():
    mine = tracking.owner_tags()
    assert tracking.holder_alive(mine)
    assert not tracking.holder_alive(mine | {"pid_start": "1"})  # same pid, another start: the run's process died
    assert tracking.holder_alive({})  # a run that names no process is not judged


def test_logged_models_pin_the_installed_flavor_requirements_without_local_labels():
    import sentence_transformers
    import torch

    reqs = tracking.pinned_requirements()
    assert f"sentence-transformers=={sentence_transformers.__version__}" in reqs
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs and not any("+" in r for r in reqs)
