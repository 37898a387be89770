"""make reproduce: config checks, ablation overrides, targets, the generated Results section, and one end-to-end
run on the fixture (a 2-trial multi-objective sweep, two ablation rows, the own-corpus evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from contrastive import reproduce
from contrastive.errors import ConfigError

ROWS = [
    {"name": "a", "label": "A", "set": ["loss.aux_weight=0", "batch.size=32"], "from_best": []},
    {"name": "b", "label": "B", "set": ["batch.sampler=component"], "from_best": ["loss.aux_weight"]},
    {"name": "c", "label": "C", "set": [], "from_best": ["batch.size", "loss.aux"]},
]


def _cfg(*overrides: str):
    return reproduce.compose_config(['reproduce.data=["data=fixture"]', *overrides])


def test_evaluate_stage_gets_the_extra_overrides_evaluate_knows():
    extra = ["paths.cache_dir=/c", "tracking.tracking_uri=sqlite:///x.db", "trainer.device=cpu", "eval.k=5", "+x=1"]
    assert reproduce.evaluate_overrides(extra) == ["paths.cache_dir=/c", "device=cpu", "eval.k=5"]


def test_config_composes_with_the_documented_defaults():
    cfg = reproduce.compose_config([])
    rp = cfg.reproduce
    assert [r.name for r in rp.ablation] == [
        "mnrl_only",
        "hard_negatives",
        "component_sampler",
        "aux_loss",
        "larger_batch",
    ]
    assert rp.sweep.config == "reproduce" and rp.test.split == "test"
    assert rp.budget_pairs is None or rp.budget_pairs > 4000
    assert str(rp.results_dir).endswith("/results") and str(rp.readme).endswith("README.md")
    sweep = OmegaConf.load(Path(cfg.paths.root_dir) / "sweeps" / "reproduce.yaml")
    assert list(sweep.eval.objective) == ["mrr_at_10", "pair_ap"]
    assert list(sweep.hydra.sweeper.direction) == ["maximize", "maximize"]
    promote = sweep.hydra.sweeper.callbacks.report.promote
    assert promote.pick == "pair_ap" and promote.floor_metric == "mrr_at_10"


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
    cfg = reproduce.compose_config([f'reproduce.data=["data=qqp_local","data.path={tmp_path / "no.parquet"}"]'])
    with pytest.raises(ConfigError, match="data.path: .*no.parquet.*file not found"):
        reproduce.check_config(cfg)


def test_ablation_rows_accumulate_and_take_the_sweeps_parameters():
    best = {"loss.aux_weight": 0.25, "batch.size": 128, "loss.aux": "cosent"}
    rows = reproduce.row_overrides(ROWS, best)
    assert rows[0] == ["loss.aux_weight=0", "batch.size=32"]
    assert rows[1] == ["loss.aux_weight=0.25", "batch.size=32", "batch.sampler=component"]
    assert rows[2] == ["loss.aux_weight=0.25", "batch.size=128", "batch.sampler=component", "loss.aux='cosent'"]
    with pytest.raises(ConfigError, match=r"from_best: 'trainer.lr' is not a parameter of the sweep"):
        reproduce.row_overrides([{"name": "x", "from_best": ["trainer.lr"]}], best)
    with pytest.raises(ConfigError, match=r"ablation\[0\].set: 'oops' is not key=value"):
        reproduce.row_overrides([{"name": "x", "set": ["oops"]}], best)


def _delta(d: float, low: float, high: float) -> dict:
    return {"delta": d, "ci_low": low, "ci_high": high}


def test_targets_need_both_the_size_and_a_positive_ci():
    spec = {"pair_ap_min_delta": 0.05, "mrr_metric": "mrr_at_10"}
    met = {"delta": {"pair_ap": _delta(0.06, 0.04, 0.08), "mrr_at_10": _delta(0.01, 0.002, 0.02)}}
    assert reproduce.targets(met, spec)["both"]
    small_ap = {"delta": {"pair_ap": _delta(0.03, 0.01, 0.05), "mrr_at_10": _delta(0.01, 0.002, 0.02)}}
    assert not reproduce.targets(small_ap, spec)["pair_ap"]["met"]
    mrr_ci = {"delta": {"pair_ap": _delta(0.06, 0.04, 0.08), "mrr_at_10": _delta(0.01, -0.001, 0.02)}}
    out = reproduce.targets(mrr_ci, spec)
    assert out["pair_ap"]["met"] and not out["mrr_at_10"]["met"] and not out["both"]


def test_readme_section_is_replaced_between_the_markers_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{reproduce.START}\nold\n{reproduce.END}\n\n## Later\nkept\n")
    reproduce.update_readme(readme, "new table\n")
    text = readme.read_text()
    assert "new table" in text and "old" not in text and text.endswith("## Later\nkept\n")
    assert text.count(reproduce.START) == 1
    bare = tmp_path / "BARE.md"
    bare.write_text("# y\n")
    reproduce.update_readme(bare, "first\n")
    assert bare.read_text().startswith("# y\n\n## Results\n") and "first" in bare.read_text()


@pytest.mark.slow
def test_reproduce_end_to_end_on_the_fixture(tmp_path):
    """The real stages as subprocesses: sweep (2 trials, 2 objectives), two ablation rows, the final report."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{reproduce.START}\nold\n{reproduce.END}\n")
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
        "reproduce.budget_pairs=120",
        "reproduce.test.n_boot=50",
        "reproduce.test.max_distractors=100",
    )
    cfg.reproduce.extra = extra
    cfg.reproduce.ablation = [
        {"name": "mnrl_only", "label": "MNRL only", "set": ["loss.aux_weight=0"], "from_best": []},
        {
            "name": "final",
            "label": "+ sweep",
            "set": [],
            "from_best": ["loss.aux", "loss.aux_weight", "batch.size", "trainer.lr"],
        },
    ]
    results = reproduce.reproduce(cfg, "test")
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["targets"] == results["targets"] and set(saved["targets"]) == {"pair_ap", "mrr_at_10", "both"}
    assert sum(saved["sweep"]["states"].values()) == 2 and saved["sweep"]["promotion"]["why"]
    assert [r["name"] for r in saved["ablation"]] == ["mnrl_only", "final"]
    assert saved["ablation"][1]["overrides"][0] == "loss.aux_weight=" + str(
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
    # a rerun reuses the finished rows (same overrides) instead of training them again
    stamp = tmp_path / "work" / "rows" / "final" / "metrics.json"
    before = stamp.stat().st_mtime
    reproduce.reproduce(cfg, "test")
    assert stamp.stat().st_mtime == before


def test_a_failed_stage_is_reported_by_its_error_line_not_a_progress_bar():
    log = "ok\nTraceback (most recent call last):\n  File x\nRuntimeError: boom\n\r 37%|###| 15/41\n"
    assert reproduce.failure_line(log) == "RuntimeError: boom"
    assert reproduce.failure_line("error: data.path: 'x': file not found\n") == "error: data.path: 'x': file not found"
    assert reproduce.failure_line("just output\n") == "just output"


def test_trial_table_marks_the_pareto_front_and_the_promoted_trial():
    def trial(number, state, values, share, batch):
        return {
            "number": number,
            "state": state,
            "values": values,
            "params": {"loss.aux_share": share, "batch.size": batch},
        }

    trials = [
        trial(0, "COMPLETE", [0.97, 0.79], 0.42, 128),
        trial(1, "COMPLETE", [0.96, 0.78], 0.15, 64),
        trial(2, "COMPLETE", [0.95, 0.82], 0.55, 64),
        trial(3, "PRUNED", None, 0.3, 64),
        trial(4, "COMPLETE", [0.97, 0.79], 0.4, 128),
    ]
    assert reproduce.pareto_numbers(trials) == {0, 2, 4}  # 1 is beaten by 0; equal values do not beat each other
    lines = reproduce.trial_table({"trials": trials, "best_trial": 0}, ["mrr_at_10", "pair_ap"], 6000)
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 5 and "6,000 pairs" in lines[1]
    assert rows[0].endswith("| front, promoted |") and rows[1].endswith("|  |") and rows[2].endswith("| front |")
    assert "| pruned | `loss.aux_share=0.3 batch.size=64` | - | - |" in rows[3]
    assert reproduce.trial_table({"trials": []}, [], 6000) == []


def test_fresh_start_sets_the_last_run_aside(tmp_path):
    work = tmp_path / "reproduce"
    assert reproduce.set_aside(work) is None
    (work / "rows" / "final").mkdir(parents=True)
    (work / "rows" / "final" / "metrics.json").write_text("{}")
    (tmp_path / "reproduce.previous").mkdir()  # an older one is replaced
    previous = reproduce.set_aside(work)
    assert not work.exists() and (previous / "rows" / "final" / "metrics.json").read_text() == "{}"
