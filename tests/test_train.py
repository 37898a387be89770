"""Training: the Hydra entry point end to end on the fixture, determinism, failure handling, samplers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from contrastive import CONF_DIR, PROJECT_ROOT
from contrastive.errors import TrainingDiverged

FAST = [
    "data=fixture",
    "trainer.max_steps=4",
    "batch.size=8",
    "trainer.logging_steps=1",
    "eval.n_boot=50",
    "eval.umap.n_pairs=30",
    "eval.umap.n_neighbors=5",
    "tracking.log_model=false",
]


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *FAST,
                f"paths.output_dir={tmp_path / 'out'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
                *overrides,
            ],
        )


def _run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "contrastive.train",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_train_cli_end_to_end(tmp_path):
    """`python -m contrastive.train` trains, evaluates, saves a reloadable checkpoint and one complete MLflow run."""
    proc = _run_cli(tmp_path, "loss.aux_weight=0.3", "trainer.eval_steps=2", "tracking.log_model=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for side in ("finetuned", "baseline"):
        assert 0.0 <= metrics[side]["mrr_at_10"] <= 1.0
        assert 0.0 <= metrics[side]["pair_ap"] <= 1.0
    assert metrics["objective"]["name"] == "mrr_at_10"
    assert metrics["objective"]["value"] == pytest.approx(metrics["finetuned"]["mrr_at_10"])
    assert {"delta", "ci_low", "ci_high"} <= set(metrics["delta"]["mrr_at_10"])
    assert (run_dir / "config.yaml").is_file()
    assert "baseline" in proc.stdout and "output dir" in proc.stdout

    from contrastive.model import load_model

    model = load_model(str(run_dir / "model"))
    assert model.encode(["How do I learn Python?"]).shape == (1, 384)

    from contrastive import tracking

    tracking.configure(f"sqlite:///{tmp_path / 'mlruns.db'}", "contrastive")
    info = tracking.run_info(metrics["mlflow_run_id"])
    assert info["status"] == "FINISHED"
    assert info["params"]["loss.aux_weight"] == "0.3"
    assert info["params"]["batch.size"] == "8"
    cfg = _cfg(tmp_path, "loss.aux_weight=0.3", "trainer.eval_steps=2", "tracking.log_model=true")
    expected = {k for k in tracking.config_params(cfg) if not k.startswith("paths.") and not k.startswith("tracking.")}
    assert expected <= set(info["params"])  # every resolved config value
    assert {"finetuned.mrr_at_10", "baseline.mrr_at_10", "delta.mrr_at_10.delta", "train/loss"} <= set(info["metrics"])
    assert len(tracking.metric_history(metrics["mlflow_run_id"], "train/loss")) >= 4
    assert len(tracking.metric_history(metrics["mlflow_run_id"], "intermediate/objective")) >= 1
    assert info["tags"]["data_fingerprint"] and info["tags"]["git_commit"] is not None
    arts = info["artifacts"]
    assert "config.yaml" in arts and "metrics.json" in arts and "data_summary.json" in arts
    assert any(a.startswith("figures/") and a.endswith(".png") for a in arts)
    assert any(a.startswith("model/") and a.endswith("model.safetensors") for a in arts)


@pytest.mark.slow
def test_bad_config_fails_before_training(tmp_path):
    for override, key in [
        ("batch.size=1", "batch.size"),
        ("trainer.lr=0", "trainer.lr"),
        ("batch.sampler=fancy", "batch.sampler"),
        ("loss.aux=mse", "loss.aux"),
    ]:
        proc = _run_cli(tmp_path, override)
        assert proc.returncode == 2, override
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert lines[-1].startswith("error: " + key), proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run" / "model").exists()


def _losses(tmp_path: Path, name: str) -> list[float]:
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator
    from contrastive.model import load_model
    from contrastive.train import fit

    cfg = _cfg(tmp_path / name, "tracking.enabled=false", "trainer.max_steps=3")
    data = prepare(cfg.data)
    model = load_model(cfg.model.name_or_path, cfg.model.max_seq_length)
    objective = Evaluator(cfg.eval, cfg.model, data).objective
    return [entry["loss"] for entry in fit(model, cfg, data, tmp_path / name, lambda: objective(model))["history"]]


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    first, second = _losses(tmp_path, "a"), _losses(tmp_path, "b")
    assert len(first) == 3
    assert first == second


@pytest.mark.slow
def test_diverging_loss_fails_the_run(tmp_path):
    from contrastive import tracking
    from contrastive.train import run

    cfg = _cfg(tmp_path, "trainer.lr=1.0e+12", "trainer.warmup_ratio=0.0", "trainer.max_steps=6", "run_name=diverge")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        run(cfg)
    tracking.configure(cfg.tracking.tracking_uri, cfg.tracking.experiment)
    import mlflow

    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert runs and runs[0].info.status == "FAILED"
    assert "TrainingDiverged" in runs[0].data.tags["error"]
    assert not (tmp_path / "out" / "model").exists()


def test_eval_due_by_steps_or_examples():
    from contrastive.train import eval_due

    assert [s for s in range(1, 9) if eval_due(s, 64, 3, 0)] == [3, 6]
    # every 100 examples at batch 64: crossings of 100, 200, 300 happen at steps 2, 4, 5
    assert [s for s in range(1, 6) if eval_due(s, 64, 0, 100)] == [2, 4, 5]
    assert not any(eval_due(s, 64, 0, 0) for s in range(1, 20))


def test_aux_share_sets_the_aux_datasets_size(tmp_path, fixture_data):
    from contrastive.train import training_datasets

    full = training_datasets(fixture_data, _cfg(tmp_path))[1]
    part = training_datasets(fixture_data, _cfg(tmp_path, "loss.aux_share=0.5"))[1]
    assert abs(part["examples_aux_pairs"] - full["examples_aux_pairs"] / 2) <= 1  # rounded per label
    assert {k: v for k, v in part.items() if k != "examples_aux_pairs"} == {
        k: v for k, v in full.items() if k != "examples_aux_pairs"
    }
