"""The evaluate entry point: a Hydra app on conf/evaluate.yaml (`--cfg job`, one-line errors, a real run)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import run_module

from contrastive.cli import compose_config
from contrastive.errors import ConfigError, ModelError


def evaluate_cli(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return run_module("contrastive.evaluate", *args, timeout=timeout)


def test_cfg_job_prints_the_composed_config_with_the_checkpoint_key(tmp_path):
    proc = evaluate_cli("checkpoint=runs/x/model", "data=fixture", "eval.split=test", "json=m.json", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checkpoint: runs/x/model" in proc.stdout and "json: m.json" in proc.stdout
    assert "split: test" in proc.stdout and "name_or_path: sentence-transformers/all-MiniLM-L6-v2" in proc.stdout
    assert "trainer:" not in proc.stdout  # only the groups evaluation needs


def test_compose_evaluate_config_and_bad_overrides():
    cfg = compose_config(["checkpoint=x", "data=fixture", "eval.split=test", "eval.n_boot=10"], "evaluate")
    assert cfg.checkpoint == "x" and cfg.eval.split == "test" and cfg.json is None and cfg.device is None
    assert cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match="Could not find 'data/nope'"):
        compose_config(["data=nope"], "evaluate")


def test_missing_checkpoint_is_one_line_exit_2(tmp_path):
    proc = evaluate_cli("data=fixture", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: checkpoint: missing; pass checkpoint=<checkpoint dir or hub id> (see --help)"
    proc = evaluate_cli(f"checkpoint={tmp_path}/no/such/model", "data=fixture", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: checkpoint: ") and "does not exist" in err and "\n" not in err


def test_run_raises_model_error_for_a_missing_dir(tmp_path):
    from contrastive import evaluate

    with pytest.raises(ModelError):
        evaluate.run(compose_config([f"checkpoint={tmp_path}/missing/dir", "data=fixture"], "evaluate"))


@pytest.mark.slow
def test_cli_on_the_fixture(tmp_path):
    from contrastive.model import packaged_model_dir

    out = tmp_path / "m.json"
    proc = evaluate_cli(
        f"checkpoint={packaged_model_dir()}",
        "data=fixture",
        "eval.split=test",
        f"eval.cache_dir={tmp_path / 'cache'}",
        "eval.n_boot=50",
        f"json={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mrr_at_10" in proc.stdout and "fine-tuned" in proc.stdout
    doc = json.loads(out.read_text())
    assert list(doc) == ["split", "objective", "finetuned", "baseline", "delta", "model"]
    assert doc["split"] == "test" and doc["model"] == str(packaged_model_dir())
    assert 0 < doc["finetuned"]["mrr_at_10"] <= 1 and doc["finetuned"] == doc["baseline"]
    assert list((tmp_path / "cache").glob("test-*.npy"))


def test_an_unregistered_checkpoint_uri_names_the_key_the_user_typed(tmp_path):
    proc = evaluate_cli(
        "checkpoint=models:/nothing-here@best", "data=fixture", f"paths.output_root={tmp_path}", timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: checkpoint: cannot fetch models:/nothing-here@best")
