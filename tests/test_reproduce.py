"""make reproduce's entry point (contrastive.reproduce, a Hydra app on conf/reproduce.yaml): config checks before
any stage, the command line, and one end-to-end run on the fixture (a 2-trial multi-objective sweep, two ablation
rows, the own-corpus evaluation)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import compose_config, run_module
from omegaconf import OmegaConf

from contrastive import PROJECT_ROOT, reproduce
from contrastive.errors import ConfigError
from contrastive.reproduce.report import END, START


def _cfg(*overrides: str):
    return compose_config("reproduce", 'reproduce.data=["data=fixture"]', *overrides)


def reproduce_cli(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return run_module("contrastive.reproduce", *args, timeout=timeout)


def test_config_composes_with_the_documented_defaults():
    cfg = compose_config("reproduce")
    rp = cfg.reproduce
    assert [r.name for r in rp.ablation] == [
        "mnrl_only",
        "labeled_negatives",
        "mined_negatives",
        "teacher_negatives",
        "aux_joint",
        "distillation",
        "silver_pairs",
        "wise_ft",
    ]
    assert rp.sweep.config == "reproduce" and rp.test.split == "test"
    assert rp.budget_pairs is None or rp.budget_pairs > 4000
    assert str(rp.results_dir).endswith("/results") and str(rp.readme).endswith("README.md")
    sweep = OmegaConf.load(Path(cfg.paths.root_dir) / "sweeps" / "reproduce.yaml")
    assert list(sweep.eval.objective) == ["mrr_at_10", "pair_ap"]
    assert list(sweep.hydra.sweeper.direction) == ["maximize", "maximize"]
    searched = set(sweep.hydra.sweeper.params)
    for row in rp.ablation:  # every lever the ablation takes from the winner is one the sweep searches
        assert set(row.from_best) <= searched, row.name
    promote = sweep.hydra.sweeper.callbacks.report.promote
    assert promote.pick == "mrr_at_10" and promote.floor_metric == "pair_ap" and promote.floor_delta == 0.0


@pytest.mark.parametrize(
    "override, match",
    [
        ("reproduce.budget_pairs=0", r"reproduce.budget_pairs=0: must be null \(all train pairs\) or an integer >= 1"),
        ("reproduce.ablation=[]", r"reproduce.ablation=\[\]: empty"),
        ("reproduce.test.n_boot=0", r"reproduce.test.n_boot=0: must be an integer >= 1"),
        ("reproduce.targets.pair_ap_min_delta=x", r"reproduce.targets.pair_ap_min_delta: Value 'x' .* Float"),
        ("reproduce.test.split=dev", r"reproduce.test.split='dev': choose one of train, val, test"),
    ],
)
def test_bad_values_are_refused_naming_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        reproduce.check_config(_cfg(override))


def test_a_missing_data_file_is_refused_before_any_work(tmp_path):
    cfg = compose_config("reproduce", f'reproduce.data=["data=qqp_local","data.path={tmp_path / "no.parquet"}"]')
    with pytest.raises(ConfigError, match="data.path: .*no.parquet.*file not found"):
        reproduce.check_config(cfg)


def test_check_config_returns_the_typed_settings():
    settings = reproduce.check_config(_cfg("reproduce.budget_pairs=500"))
    rp = settings.reproduce
    assert rp.budget_pairs == 500 and rp.data == ["data=fixture"] and rp.ablation[-1].name == "wise_ft"
    assert rp.targets.mrr_metric == "mrr_at_10" and settings.paths.root_dir == str(PROJECT_ROOT)


def test_check_config_composes_the_stages_config_inside_a_running_hydra_app():
    """Inside `main`, Hydra is initialized: composing the training config sets it aside and puts it back."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    cfg, bad = _cfg(), _cfg('reproduce.data=["data=fixture","data.max_pairs=0"]')
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "sweeps"), version_base="1.3"):
        running = GlobalHydra.instance().hydra
        with pytest.raises(ConfigError, match="data.max_pairs=0"):
            reproduce.check_config(bad)
        assert reproduce.check_config(cfg).reproduce.data == ["data=fixture"]
        assert GlobalHydra.instance().hydra is running


def test_the_command_line_names_make_reproduce_and_the_overrides_given():
    assert reproduce.command_line([]) == "make reproduce"
    assert reproduce.command_line(["reproduce.fresh=true", "reproduce.budget_pairs=20000"]) == (
        'make reproduce ARGS="reproduce.fresh=true reproduce.budget_pairs=20000"'
    )


def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2_before_any_stage(tmp_path):
    proc = reproduce_cli(
        "reproduce.budget_pairs=0", f"reproduce.work_dir={tmp_path / 'work'}", f"paths.output_root={tmp_path / 'o'}"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        "error: reproduce.budget_pairs=0: must be null (all train pairs) or an integer >= 1"
    ]
    assert proc.stdout == "" and not (tmp_path / "work").exists()  # no stage started
    proc = reproduce_cli("reproduce.nope=1", f"paths.output_root={tmp_path / 'o'}")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "reproduce.nope" in proc.stderr


def test_cfg_job_prints_the_composed_config():
    proc = reproduce_cli("reproduce.budget_pairs=500", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "budget_pairs: 500" in proc.stdout and "- name: wise_ft" in proc.stdout
    assert "hydra:" not in proc.stdout and "trainer:" not in proc.stdout


@pytest.mark.slow
def test_reproduce_end_to_end_on_the_fixture(tmp_path):
    """The real stages as subprocesses: sweep (2 trials, 2 objectives), two ablation rows, the final report."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{START}\nold\n{END}\n")
    extra = [
        "trainer.max_steps=3",
        "eval.umap.n_pairs=30",
        "eval.umap.n_neighbors=5",
        "tracking.log_model=false",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    cfg = _cfg(
        "reproduce.sweep.config=fixture_reproduce",
        f"reproduce.work_dir={tmp_path / 'work'}",
        f"reproduce.results_dir={tmp_path / 'results'}",
        f"reproduce.readme={readme}",
        f"reproduce.recipe={tmp_path / 'recipe' / 'best.yaml'}",
        "reproduce.budget_pairs=120",
        "reproduce.test.n_boot=50",
        "reproduce.test.max_distractors=100",
    )
    cfg.reproduce.extra = extra
    cfg.reproduce.ablation = [
        {"name": "mnrl_only", "label": "MNRL only", "set": ["loss.aux_weight=0"], "from_best": []},
        {"name": "unchanged", "label": "a row that changes nothing", "set": ["loss.aux_weight=0"], "from_best": []},
        {
            "name": "final",
            "label": "+ sweep",
            "set": [],
            "from_best": ["loss.aux", "loss.aux_weight", "batch.size", "trainer.lr"],
        },
        {"name": "wise_ft", "label": "+ WiSE-FT", "set": ["model.interpolate=0.8"], "eval_only": True},
    ]
    cfg.reproduce.merge.rows = ["mnrl_only"]  # the soup of the final model and this row's, chosen on val
    results = reproduce.reproduce(cfg, "test")
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    merged = saved["merge"]
    assert merged["ingredients"] == ["final", "mnrl_only"] and 0 in merged["kept"] and merged["method"] == "greedy"
    assert set(merged["test"]) == {"finetuned", "baseline", "delta"} and "pair_ap" in merged["val"]["delta"]
    assert (tmp_path / "work" / "merge" / "model" / "model.safetensors").is_file()
    assert "Merge (greedy soup" in (tmp_path / "results" / "results.md").read_text()
    assert saved["targets"] == results["targets"] and set(saved["targets"]) == {"pair_ap", "mrr_at_10", "both"}
    assert sum(saved["sweep"]["states"].values()) == 2 and saved["sweep"]["promotion"]["why"]
    assert [r["name"] for r in saved["ablation"]] == ["mnrl_only", "unchanged", "final", "wise_ft"]
    assert saved["ablation"][1]["same_as"] == "mnrl_only" and not (tmp_path / "work" / "rows" / "unchanged").exists()
    assert saved["ablation"][1]["metrics"] == saved["ablation"][0]["metrics"]  # its run, not a second training
    # one run trained `final` and `wise_ft`: the unmixed weights (alpha 1.0) are `final`'s row
    unmixed = json.loads((tmp_path / "work" / "rows" / "wise_ft" / "metrics.json").read_text())["interpolate"]["1.0"]
    assert saved["ablation"][2]["metrics"]["finetuned"] == unmixed["finetuned"]
    assert saved["ablation"][2]["shared_run"] == "wise_ft" and saved["ablation"][2]["metrics"]["wall_time_s"] is None
    assert not (tmp_path / "work" / "rows" / "final").exists()
    assert saved["ablation"][3]["overrides"][-1] == "model.interpolate=0.8"
    assert saved["ablation"][2]["overrides"][0] == "loss.aux_weight=" + str(
        saved["sweep"]["best_params"]["loss.aux_weight"]
    )
    final = saved["final"]
    assert final["own_corpus"]["finetuned"]["n_corpus"] < final["distractors"]["finetuned"]["n_corpus"]
    for which in ("own_corpus", "distractors"):
        assert final[which]["delta"]["mrr_at_10"]["ci_low"] is not None
    assert "pareto_front.png" in saved["figures"] and "umap_pairs.png" in saved["figures"]
    assert all((tmp_path / "results" / "figures" / f).is_file() for f in saved["figures"])
    text = readme.read_text()
    assert "old" not in text and "| MRR@10, + train distractors |" in text
    assert "results/figures/pareto_front.png" in text
    assert (tmp_path / "results" / "results.md").read_text().startswith("# Results")
    recipe = (tmp_path / "recipe" / "best.yaml").read_text()  # what `make train` would train: the final row
    assert recipe.startswith("# @package _global_") and "model:\n  interpolate: 0.8" in recipe
    # a rerun reuses the finished rows (same overrides) instead of training them again
    stamp = tmp_path / "work" / "rows" / "wise_ft" / "metrics.json"
    before = stamp.stat().st_mtime
    reproduce.reproduce(cfg, "test")
    assert stamp.stat().st_mtime == before
