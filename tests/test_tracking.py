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
    assert info["metrics"] == {"x.y": 1.5}  # non-finite and non-numeric values skipped
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
