"""The bench's config (conf/bench.yaml), its typed schema (bench.settings.BenchSettings) and its entry point. The
sections' helpers are tested in tests/test_bench_<section>.py; no timings are asserted anywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import compose_config

from contrastive import CONF_DIR, PROJECT_ROOT, bench
from contrastive.bench.settings import BENCH_SECTIONS, BenchSettings, load_bench
from contrastive.errors import ConfigError
from contrastive.settings import as_dict


def test_bench_config_composes_and_resolves():
    cfg = compose_config("bench", "bench.train.reps=1")
    settings = load_bench(cfg)
    assert isinstance(settings, BenchSettings)
    bench_cfg = as_dict(settings.bench)
    assert bench_cfg["train"]["reps"] == 1
    assert set(bench_cfg["sections"]) <= {"peak", *bench.SECTIONS}
    assert bench_cfg["train"]["threads"] == cfg.batch.num_threads
    assert str(settings.model.onnx_cache_dir).startswith(str(cfg.paths.cache_dir))
    for name in bench_cfg["sweep"]["pruners"]:
        assert (CONF_DIR / "hydra" / "sweeper" / "pruner" / f"{name}.yaml").is_file()


def test_every_section_has_a_module_with_a_section_function():
    import importlib

    assert set(BENCH_SECTIONS) == {"peak", *bench.SECTIONS}
    for name in bench.SECTIONS:
        assert callable(importlib.import_module(f"contrastive.bench.{name}").section)


def test_bench_training_settings_are_a_checked_training_run():
    settings = load_bench(compose_config("bench", "data=fixture"))
    run = settings.training()
    assert run.batch is settings.batch and run.trainer is settings.trainer and not run.save_model


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("bench.sections=[peak,bogus]", "bench.sections"),
        ("bench.sections=[train,train]", "bench.sections"),
        ("bench.peak.size=0", "bench.peak.size"),
        ("bench.train.batch_size=1", "bench.train.batch_size"),
        ("bench.train.steps=1", "bench.train.steps"),
        ("bench.train.max_timed_s=0", "bench.train.max_timed_s"),
        ("bench.train.threads=many", "bench.train.threads"),
        ("bench.encode.max_mrr_drop=-0.1", "bench.encode.max_mrr_drop"),
        ("bench.eval_cost.sizes=[1000,0]", "bench.eval_cost.sizes[1]"),
        ("bench.eval_cost.query_share=1.5", "bench.eval_cost.query_share"),
        ("bench.search.k=200001", "bench.search.k"),
        ("bench.sweep.lr_high=1e-9", "bench.sweep.lr_high"),
        ("bench.sweep.pruners=[median,nope]", "bench.sweep.pruners"),
        ("bench.sweep.pruners=[none]", "bench.sweep.pruners"),
        ("bench.sweep.objective=mrr", "bench.sweep.objective"),
        ("bench.sweep.threads=0", "bench.sweep.threads"),
        ("bench.sweep.final_pairs=10", "bench.sweep.final_pairs"),
        ("bench.train.reps=abc", "bench.train.reps"),
        ("+bench.train.typo=1", "bench.train.typo"),
    ],
)
def test_the_bench_schema_refuses_a_bad_value_in_one_line(override, key):
    with pytest.raises(ConfigError) as info:
        load_bench(compose_config("bench", override))
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message


def test_python_m_contrastive_bench_refuses_a_bad_value_before_any_work():
    done = subprocess.run(
        [sys.executable, "-m", "contrastive.bench", "bench.peak.reps=0"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: bench.peak.reps=0: must be an integer >= 1"
    assert done.stdout == ""
