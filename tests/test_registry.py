"""The registered model loads through MLflow and wherever a checkpoint is named (models:/NAME@best)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf

from contrastive import tracking


@pytest.mark.slow
def test_registered_model_loads_from_models_uri(tmp_path, monkeypatch):
    from contrastive.app.checkpoints import find_checkpoint, load_thresholds
    from contrastive.model import fingerprint, load_model, resolve_model

    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # where models:/ URIs resolve
    tcfg = OmegaConf.create({"enabled": True, "tracking_uri": store, "experiment": "t", "registered_model": "tiny"})
    model = load_model("all-MiniLM-L6-v2")
    texts = ["How do I learn Python?"]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"finetuned": {"pair_threshold": 0.7}, "baseline": {"pair_threshold": 0.8}}))
    with tracking.run(tcfg, "tiny", {"data_fingerprint": "fp", "eval_protocol": "p"}) as run_id:
        uri = tracking.log_model(model, texts)
        tracking.log_artifact(metrics)
    got = tracking.register_best(tcfg, run_id, tmp_path, "mrr_at_10", 0.5)
    assert got["alias"] == "best" and got["source"] == uri

    loaded = mlflow.sentence_transformers.load_model("models:/tiny@best")
    expected = model.encode(texts)
    assert np.allclose(loaded.encode(texts), expected, atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny@best")
    assert np.allclose(pyfunc.predict(texts), expected, atol=1e-5)
    assert pyfunc.metadata.signature is not None and pyfunc.metadata.get_input_schema() is not None

    local = resolve_model("models:/tiny@best")  # one place: evaluate, app, train's model.name_or_path
    assert resolve_model(f"runs:/{run_id}/model") != local  # a run URI works too (its own cache entry)
    assert fingerprint("models:/tiny@best") == fingerprint(local)
    assert np.allclose(load_model("models:/tiny@best").encode(texts), expected, atol=1e-5)

    served = find_checkpoint(None, tmp_path / "outputs", "tiny")  # no checkpoint=: the registry's champion
    assert (served.source, served.note, served.path) == ("registry champion", "models:/tiny@best", local)
    assert load_thresholds(served.path, 0.5).finetuned == pytest.approx(0.7)  # the run's metrics.json came along
    assert find_checkpoint(None, tmp_path / "outputs", "no-such-model").source == "none"
