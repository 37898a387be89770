"""make reproduce's report (contrastive.reproduce.report): targets, the trial table, the README section, and the
committed results/ rendered byte for byte from results.json."""

from __future__ import annotations

import json

from contrastive import PROJECT_ROOT
from contrastive.reproduce import report
from contrastive.reproduce.settings import ReproduceTargets


def _delta(d: float, low: float, high: float) -> dict:
    return {"delta": d, "ci_low": low, "ci_high": high}


def test_targets_need_both_the_size_and_a_positive_ci():
    spec = ReproduceTargets(pair_ap_min_delta=0.05, mrr_metric="mrr_at_10")
    met = {"delta": {"pair_ap": _delta(0.06, 0.04, 0.08), "mrr_at_10": _delta(0.01, 0.002, 0.02)}}
    assert report.targets(met, spec)["both"]
    assert report.targets(met, spec)["pair_ap"]["need"] == "delta >= 0.05 and CI low > 0"
    small_ap = {"delta": {"pair_ap": _delta(0.03, 0.01, 0.05), "mrr_at_10": _delta(0.01, 0.002, 0.02)}}
    assert not report.targets(small_ap, spec)["pair_ap"]["met"]
    mrr_ci = {"delta": {"pair_ap": _delta(0.06, 0.04, 0.08), "mrr_at_10": _delta(0.01, -0.001, 0.02)}}
    out = report.targets(mrr_ci, spec)
    assert out["pair_ap"]["met"] and not out["mrr_at_10"]["met"] and not out["both"]
    small_mrr = {"delta": {"pair_ap": _delta(0.06, 0.04, 0.08), "mrr_at_10": _delta(0.006, 0.002, 0.01)}}
    out = report.targets(small_mrr, spec)
    assert not out["mrr_at_10"]["met"] and out["mrr_at_10"]["need"].startswith("delta >= 0.01 and CI low > 0")


def test_a_row_that_shares_its_run_says_so_instead_of_a_time():
    assert report.run_minutes({"metrics": {"wall_time_s": 90.0}}) == "1.5"
    assert report.run_minutes({"metrics": {"wall_time_s": None}, "shared_run": "wise_ft"}) == "in wise_ft's run"
    same = {"metrics": {"wall_time_s": 90.0}, "same_as": "labeled"}
    assert report.run_minutes(same) == "= labeled (same overrides)"


def test_readme_section_is_replaced_between_the_markers_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{report.START}\nold\n{report.END}\n\n## Later\nkept\n")
    report.update_readme(readme, "new table\n")
    text = readme.read_text()
    assert "new table" in text and "old" not in text and text.endswith("## Later\nkept\n")
    assert text.count(report.START) == 1
    bare = tmp_path / "BARE.md"
    bare.write_text("# y\n")
    report.update_readme(bare, "first\n")
    assert bare.read_text().startswith("# y\n\n## Results\n") and "first" in bare.read_text()


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
    assert report.pareto_numbers(trials) == {0, 2, 4}  # 1 is beaten by 0; equal values do not beat each other
    lines = report.trial_table({"trials": trials, "best_trial": 0}, ["mrr_at_10", "pair_ap"], 6000)
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 5 and "6,000 pairs" in lines[1]
    assert rows[0].endswith("| front, promoted |") and rows[1].endswith("|  |") and rows[2].endswith("| front |")
    assert "| pruned | `loss.aux_share=0.3 batch.size=64` | - | - |" in rows[3]
    assert report.trial_table({"trials": []}, [], 6000) == []


def test_the_committed_recipe_is_the_final_rows_overrides_and_make_train_composes_it():
    """conf/recipe/best.yaml (what `make train` trains) is rendered from the committed results.json, and the
    train config composes and checks with it (`+recipe=best`) to the final row's values."""
    from conftest import compose_config
    from omegaconf import OmegaConf

    from contrastive.settings import load_train

    results = json.loads((PROJECT_ROOT / "results" / "results.json").read_text())
    assert (PROJECT_ROOT / "conf" / "recipe" / "best.yaml").read_text() == report.render_recipe(results)
    cfg = compose_config("train", "+recipe=best")
    load_train(cfg)
    for item in results["ablation"][-1]["overrides"]:
        key, _, value = item.partition("=")
        assert OmegaConf.select(cfg, key) == OmegaConf.from_dotlist([f"v={value}"]).v, key


def test_the_committed_results_md_and_readme_section_are_rendered_from_results_json(tmp_path):
    """Byte for byte: the report renders the committed results.json into the committed results.md and README
    section, and write_results writes those same bytes (results.json round-trips)."""
    results_dir = PROJECT_ROOT / "results"
    results = json.loads((results_dir / "results.json").read_text())
    committed_md = (results_dir / "results.md").read_text()
    readme_text = (PROJECT_ROOT / "README.md").read_text()
    section = readme_text.split(report.START, 1)[1].split(report.END, 1)[0]
    assert "# Results\n\n" + report.render_markdown(results, "figures/") == committed_md
    assert section == "\n" + report.render_markdown(results, "results/figures/")

    out = tmp_path / "results"
    out.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(readme_text)
    printed = report.write_results(results, out, readme)
    assert (out / "results.md").read_text() == committed_md and readme.read_text() == readme_text
    assert (out / "results.json").read_text() == (results_dir / "results.json").read_text()
    assert printed == report.render_markdown(results)


def test_collect_figures_copies_the_sweeps_and_the_final_runs_pngs(tmp_path):
    sweep, final = tmp_path / "sweep", tmp_path / "rows" / "final"
    (final / "figures").mkdir(parents=True)
    sweep.mkdir()
    (sweep / "pareto_front.png").write_bytes(b"p")
    (final / "figures" / "umap_pairs.png").write_bytes(b"u")
    names = report.collect_figures(sweep, final, tmp_path / "results" / "figures")
    assert names == ["pareto_front.png", "umap_pairs.png"]
    assert (tmp_path / "results" / "figures" / "umap_pairs.png").read_bytes() == b"u"


def test_the_teacher_line_gives_its_test_ap_the_students_gap_and_the_cold_cache_time():
    results = {
        "teacher": {
            "digest": "abcdef0123456789",
            "teacher": {"pair_ap": 0.85},
            "baseline": {"pair_ap": 0.78},
            "delta": {"pair_ap": _delta(0.07, 0.06, 0.08)},
            "training": {"steps": 1825, "seconds": 1500.0},
        },
        "final": {"distractors": {"finetuned": {"pair_ap": 0.81}}},
        "ablation": [{"metrics": {"wall_time_s": 1200.0}}],
    }
    (line,) = [x for x in report.teacher_lines(results) if x]
    assert "`abcdef012345`" in line and "1825 steps, 25 min" in line and "test pair AP 0.8500 vs 0.7800" in line
    assert "gap of +0.0400" in line and "the teacher's 25 min before the run's own 20 min" in line
    assert report.teacher_lines({"final": results["final"]}) == []  # no teacher lever: no line
