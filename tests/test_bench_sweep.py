"""contrastive/bench/sweep.py: the trial set-up child (the job's own set-up, twice in one process) and the sweep
rows on the fixture (no timing is asserted); utils.freeze_heap_once."""

from __future__ import annotations

import gc

from conftest import compose_config

from contrastive import utils
from contrastive.bench.common import load_inputs
from contrastive.bench.settings import load_bench
from contrastive.bench.sweep import section, trial_setup_child


def test_trial_setup_child_runs_the_jobs_setup_twice_on_the_fixture():
    out = trial_setup_child(["data=fixture"])
    assert set(out) == {"imports_s", "first_s", "later_s"}
    assert all(v > 0 for v in out.values())


def test_the_sweep_rows_on_the_fixture(tmp_path):
    """Every sweep runs the same seeded trials; the pruned one trains fewer steps; a completed trial's value is
    scored on the final set (larger than the intermediate one), and the best's CI on it."""
    settings = load_bench(
        compose_config(
            "bench",
            "data=fixture",
            f"paths.cache_dir={tmp_path}",
            "bench.sweep.trials=3",
            "bench.sweep.steps=3",
            "bench.sweep.eval_every=1",
            "bench.sweep.batch_size=4",
            "bench.sweep.val_pairs=10",
            "bench.sweep.final_pairs=30",
            "bench.sweep.pruners=[median]",
            "bench.sweep.n_startup_trials=1",
        )
    )
    inp = load_inputs(settings)
    record: dict = {}
    rows = section(inp, record)
    assert [r["row"] for r in rows] == ["6a", "6b"]
    sweep = record["sweep"]
    assert sweep["final_questions"] > sweep["eval_questions"] and sweep["final_pairs"] >= 30
    none, median = sweep["none"], sweep["median"]
    assert none["params"] == median["params"] and none["states"] == ["COMPLETE"] * 3
    assert median["states"][0] == "COMPLETE" and sum(median["steps_trained"]) <= sum(none["steps_trained"])
    assert none["best_ci"][0] <= none["best_value"] <= none["best_ci"][1]
    assert f"a completed trial's on {sweep['final_questions']}:" in rows[0]["what"]
    assert f"on {sweep['final_questions']} val questions" in rows[0]["quality"]
    assert gc.get_freeze_count() > 0  # the set-up was frozen out of the collector, as a train job's is


def test_the_hyperband_row_on_the_fixture(tmp_path):
    """Hyperband beside the unpruned sweep, its rungs in examples seen: the first at the first report, the last at
    the end of a trial; the same seeded trials, never more steps trained than unpruned."""
    settings = load_bench(
        compose_config(
            "bench",
            "data=fixture",
            f"paths.cache_dir={tmp_path}",
            "bench.sweep.trials=4",
            "bench.sweep.steps=4",
            "bench.sweep.eval_every=1",
            "bench.sweep.batch_size=4",
            "bench.sweep.val_pairs=10",
            "bench.sweep.final_pairs=30",
            "bench.sweep.pruners=[hyperband]",
        )
    )
    inp = load_inputs(settings)
    record: dict = {}
    rows = section(inp, record)
    assert rows[0]["row"] == "6a" and "hyperband pruner vs none" in rows[0]["what"]
    sweep = record["sweep"]
    spec = sweep["pruners"]["hyperband"]
    assert spec["min_resource"] == 4 and spec["max_resource"] == 16  # examples: 1 and 4 steps of 4
    none, hyperband = sweep["none"], sweep["hyperband"]
    assert none["params"] == hyperband["params"] and none["states"] == ["COMPLETE"] * 4
    assert sum(hyperband["steps_trained"]) <= sum(none["steps_trained"])
    print(rows[0])


def test_freeze_heap_once_freezes_once_per_process():
    utils.freeze_heap_once()
    assert gc.get_freeze_count() > 0 and utils.freeze_heap_once() is False
