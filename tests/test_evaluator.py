"""The Evaluator: a run beside the cached baseline, the untuned flag, the objective, EvalResult's JSON and table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import train_settings
from evaluation_helpers import FakeModel, eval_config

from contrastive.errors import ConfigError
from contrastive.evaluation import COUNT_KEYS, EvalResult, Evaluator, metric_keys


@pytest.fixture
def cfg(tmp_path):
    """conf/evaluate.yaml on the fixture, its embedding cache in tmp_path, a small bootstrap."""
    return eval_config(tmp_path)


def test_run_shape_and_cache_hit(cfg, fixture_data):
    finetuned, baseline = FakeModel(seed=1), FakeModel(seed=2)
    loads = []

    def loader():
        loads.append(1)
        return baseline

    evaluator = Evaluator(cfg.eval, cfg.model, fixture_data, baseline_loader=loader, show_progress=False)
    first = evaluator.run(finetuned)
    n = first.finetuned["n_corpus"]
    assert loads == [1] and baseline.n_encoded == n and finetuned.n_encoded == n
    assert first.baseline_cache_hit is False and Path(first.baseline_cache).is_file()
    again = Evaluator(cfg.eval, cfg.model, fixture_data, baseline_loader=loader, show_progress=False)
    second = again.run(finetuned)
    assert loads == [1] and baseline.n_encoded == n  # the cache answered: no load, no encode
    assert second.baseline_cache_hit is True
    assert second.baseline == first.baseline and second.delta == first.delta
    assert set(first.embeddings) == set(first.scored) == {"finetuned", "baseline"}
    assert {"encode_finetuned", "score_finetuned", "baseline_embeddings", "bootstrap"} == set(first.seconds)
    cache = Path(cfg.eval.cache_dir)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary files left


def test_to_json_is_what_metrics_json_holds(cfg, fixture_data):
    evaluator = Evaluator(cfg.eval, cfg.model, fixture_data, baseline_loader=lambda: FakeModel(seed=2))
    evaluator.show_progress = False
    result = evaluator.run(FakeModel(seed=1))
    doc = json.loads(json.dumps(result.to_json()))
    assert list(doc) == ["split", "objective", "finetuned", "baseline", "delta"]
    keys = set(metric_keys(10, 100)) | set(COUNT_KEYS)
    assert set(doc["finetuned"]) == keys and set(doc["baseline"]) == keys
    assert set(doc["delta"]) == set(metric_keys(10, 100))
    for name, d in doc["delta"].items():
        assert d["delta"] == pytest.approx(doc["finetuned"][name] - doc["baseline"][name])
        assert d["ci_low"] <= d["ci_high"]
    assert doc["objective"] == {"name": "mrr_at_10", "value": doc["finetuned"]["mrr_at_10"]}
    assert doc["split"] == "val" and doc["finetuned"]["n_queries"] > 0
    extra = result.to_json(training={"steps": 3, "intermediate": [(64, 0.5)]}, wall_time_s=1.5, mlflow_run_id=None)
    assert list(extra)[5:] == ["training", "wall_time_s", "mlflow_run_id"]
    assert extra["training"]["intermediate"] == [[64, 0.5]]  # JSON-safe: tuples become lists
    assert json.loads(json.dumps(extra)) == extra


def test_untuned_model_reuses_its_own_embeddings(cfg, fixture_data):
    model = FakeModel(seed=3)

    def never() -> FakeModel:
        raise AssertionError("the untuned model's own embeddings are the baseline's: no load")

    result = Evaluator(cfg.eval, cfg.model, fixture_data, baseline_loader=never, show_progress=False).run(
        model, untuned=True
    )
    assert model.n_encoded == result.finetuned["n_corpus"]
    assert all(d["delta"] == 0 for d in result.delta.values())
    table = result.table()
    assert "fine-tuned" in table and "[95% CI]" in table and "bootstrap=200" in table and "distractors=0" in table


def test_warm_baseline_fills_the_cache_before_a_run(cfg, fixture_data):
    untuned = FakeModel(seed=5)
    evaluator = Evaluator(cfg.eval, cfg.model, fixture_data, baseline_loader=lambda: 1 / 0, show_progress=False)
    assert evaluator.warm_baseline(untuned) is False and evaluator.warm_baseline(untuned) is True
    result = evaluator.run(FakeModel(seed=6))
    assert result.baseline_cache_hit is True and untuned.n_encoded == result.finetuned["n_corpus"]
    assert evaluator.eval_set() is result.eval_set  # built once, kept by the evaluator


def test_no_baseline_and_objective(cfg, fixture_data):
    cfg.eval.baseline = False
    cfg.eval.objective = "pair_ap"
    cfg.eval.intermediate_max_pairs = None
    model = FakeModel(seed=4)
    evaluator = Evaluator(cfg.eval, cfg.model, fixture_data, show_progress=False)
    result = evaluator.run(model)
    assert isinstance(result, EvalResult) and result.baseline is None and result.delta is None
    assert result.objective["value"] == result.finetuned["pair_ap"]
    assert evaluator.objective(model) == pytest.approx(result.finetuned["pair_ap"])
    cfg.eval.objective = "mrr_at_10"
    assert evaluator.objective(model) == pytest.approx(result.finetuned["mrr_at_10"])
    assert "delta" not in result.table()
    assert set(result.to_json()) == {"split", "objective", "finetuned", "baseline", "delta"}
    assert evaluator.warm_baseline(model) is True  # nothing to warm


def test_load_baseline_uses_the_configured_backend(cfg, fixture_data, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg.model.backend = "onnx"
    cfg.model.onnx_cache_dir = str(tmp_path / "onnx")
    model = Evaluator(cfg.eval, cfg.model, fixture_data).load_baseline()
    assert type(model[0].auto_model).__name__ == "OnnxTransformer"
    assert model[0].auto_model.source.startswith(str(tmp_path / "onnx"))


def test_bad_eval_values_are_one_line_errors(tmp_path):
    for key, value, needle in (
        ("objective", "mrr_at_5", "eval.objective"),
        ("chunk_size", 0, "eval.chunk_size"),
        ("distractors", str(tmp_path / "none.txt"), "eval.distractors"),
        ("max_distractors", -1, "eval.max_distractors"),
    ):
        with pytest.raises(ConfigError, match=needle):
            train_settings(f"eval.{key}={value}")
