"""Which checkpoint the app serves (checkpoint key, newest sweep best, newest run, none) and its thresholds."""

from __future__ import annotations

import json
import os
import time

import pytest
from app_helpers import fake_metrics, model_dir

from contrastive.app.checkpoints import Checkpoint, find_checkpoint, find_metrics, load_thresholds
from contrastive.errors import ConfigError

# ---------------------------------------------------------------- checkpoint discovery


def test_find_checkpoint_prefers_the_checkpoint_key(tmp_path):
    run = model_dir(tmp_path / "elsewhere" / "model")
    model_dir(tmp_path / "out" / "sweeps" / "s1" / "best")
    found = find_checkpoint(str(run), tmp_path / "out")
    assert found == Checkpoint(str(run.resolve()), "checkpoint")
    # a run directory (metrics.json + model/) is accepted too
    assert find_checkpoint(str(run.parent), tmp_path / "out").path == str(run.resolve())


def test_find_checkpoint_rejects_a_bad_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint='/nope/x'.*does not exist"):
        find_checkpoint("/nope/x", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a SentenceTransformer directory"):
        find_checkpoint(str(tmp_path / "empty"), tmp_path)


def test_find_checkpoint_newest_sweep_best_then_newest_run(tmp_path):
    now = time.time()
    out = tmp_path / "outputs"
    old_run = model_dir(out / "runs" / "2025-01-01" / "10-00-00" / "model", now - 300)
    new_run = model_dir(out / "runs" / "2025-01-02" / "09-00-00" / "model", now - 100)
    assert find_checkpoint(None, out) == Checkpoint(str(new_run), "newest training run")
    os.utime(old_run, (now, now))
    assert find_checkpoint(None, out).path == str(old_run)

    (out / "sweeps" / "s0" / "best").mkdir(parents=True)  # a best/ that holds no model is skipped
    older = model_dir(out / "sweeps" / "s1" / "best" / "model", now - 200)  # best/ may hold model/
    newer = model_dir(out / "sweeps" / "s2" / "best", now - 50)
    found = find_checkpoint(None, out)
    assert found == Checkpoint(str(newer), "latest promoted sweep best")
    os.utime(older, (now, now))
    assert find_checkpoint(None, out).path == str(older)


def test_find_checkpoint_none(tmp_path):
    found = find_checkpoint(None, tmp_path / "outputs")
    assert found.path is None and found.source == "none" and "runs/**/model" in found.note
    assert find_checkpoint("", tmp_path / "outputs").path is None


# ---------------------------------------------------------------- thresholds


def test_thresholds_from_the_model_dir_then_its_parent(tmp_path):
    model = model_dir(tmp_path / "run" / "model")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(fake_metrics(0.83, 0.77)))
    found = load_thresholds(model, 0.5)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.83, 0.77, True)
    assert found.source == str(tmp_path / "run" / "metrics.json")
    (model / "metrics.json").write_text(json.dumps(fake_metrics(0.9, 0.7)))  # a promoted copy wins
    assert find_metrics(model) == model / "metrics.json"
    assert (load_thresholds(model, 0.5).finetuned, load_thresholds(model, 0.5).baseline) == (0.9, 0.7)


def test_thresholds_fall_back_uncalibrated(tmp_path):
    model = model_dir(tmp_path / "run" / "model")
    found = load_thresholds(model, 0.75)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.75, 0.75, False)
    assert "no metrics.json" in found.note
    assert not load_thresholds(None, 0.75).calibrated
    (model / "metrics.json").write_text("{not json")
    assert "unreadable" in load_thresholds(model, 0.75).note
    (model / "metrics.json").write_text(json.dumps({"finetuned": {"pair_threshold": None}, "baseline": {}}))
    found = load_thresholds(model, 0.75)
    assert not found.calibrated and "no finetuned.pair_threshold" in found.note
    (model / "metrics.json").write_text(json.dumps({"finetuned": {"pair_threshold": 0.8}}))
    found = load_thresholds(model, 0.75)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.8, 0.75, True)
    assert "no baseline.pair_threshold" in found.note


def test_registry_best_skips_a_store_that_does_not_exist(tmp_path, monkeypatch):
    from contrastive.app.checkpoints import registry_best

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert registry_best("contrastive-qqp") is None and not (tmp_path / "none.db").exists()
    assert registry_best(None) is None
