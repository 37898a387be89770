"""make reproduce's stages (contrastive.reproduce.stages): ablation overrides, each stage's arguments, failure
lines, the fresh start."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config

from contrastive.errors import ConfigError
from contrastive.reproduce import stages
from contrastive.reproduce.settings import AblationRow, load_reproduce

ROWS = [
    AblationRow(name="a", label="A", set=["loss.aux_weight=0", "batch.size=32"], from_best=[]),
    AblationRow(name="b", label="B", set=["batch.sampler=component"], from_best=["loss.aux_weight"]),
    AblationRow(name="c", label="C", set=[], from_best=["batch.size", "loss.aux"]),
]


def test_evaluate_stage_gets_the_extra_overrides_evaluate_knows():
    extra = ["paths.cache_dir=/c", "tracking.tracking_uri=sqlite:///x.db", "trainer.device=cpu", "eval.k=5", "+x=1"]
    assert stages.evaluate_overrides(extra) == ["paths.cache_dir=/c", "device=cpu", "eval.k=5"]


def test_ablation_rows_accumulate_and_take_the_sweeps_parameters():
    best = {"loss.aux_weight": 0.25, "batch.size": 128, "loss.aux": "cosent"}
    rows = stages.row_overrides(ROWS, best)
    assert rows[0] == ["loss.aux_weight=0", "batch.size=32"]
    assert rows[1] == ["loss.aux_weight=0.25", "batch.size=32", "batch.sampler=component"]
    assert rows[2] == ["loss.aux_weight=0.25", "batch.size=128", "batch.sampler=component", "loss.aux='cosent'"]
    with pytest.raises(ConfigError, match=r"from_best: 'trainer.lr' is not a parameter of the sweep"):
        stages.row_overrides([AblationRow(name="x", label="X", from_best=["trainer.lr"])], best)
    with pytest.raises(ConfigError, match=r"ablation\[0\].set: 'oops' is not key=value"):
        stages.row_overrides([AblationRow(name="x", label="X", set=["oops"])], best)


def test_an_eval_only_row_may_add_only_model_interpolate():
    rows = [*ROWS, AblationRow(name="d", label="D", from_best=["model.interpolate"], eval_only=True)]
    best = {"loss.aux_weight": 0.25, "batch.size": 128, "loss.aux": "cosent", "model.interpolate": 0.8}
    stages.check_eval_only(rows, stages.row_overrides(rows, best))
    bad = [*ROWS, AblationRow(name="d", label="D", set=["trainer.lr=1e-5"], eval_only=True)]
    only = r"ablation\[3\].eval_only: .* only model.interpolate .* changes \['trainer.lr=1e-5'\]"
    with pytest.raises(ConfigError, match=only):
        stages.check_eval_only(bad, stages.row_overrides(bad, best))
    with pytest.raises(ConfigError, match=r"ablation\[0\].eval_only=True: needs a trained row just above it"):
        load_reproduce(compose_config("reproduce", "reproduce.ablation=[{name: x, label: X, eval_only: true}]"))


def test_rows_that_compose_the_same_training_are_one_run():
    rp = load_reproduce(compose_config("reproduce", 'reproduce.data=["data=fixture"]')).reproduce
    labeled = ["loss.hard_negatives=true", "loss.negatives=labeled"]
    promoted = [*labeled, "loss.negatives='labeled'", "loss.directions='query_to_doc'"]  # the defaults, quoted
    assert stages.same_training(rp, labeled, promoted)
    assert not stages.same_training(rp, labeled, [*labeled, "loss.directions='query_to_doc+doc_to_query'"])


def test_the_row_above_an_eval_only_row_is_its_runs_unmixed_weights():
    mixed = {
        "finetuned": {"pair_ap": 0.8},
        "delta": {"pair_ap": {"delta": 0.02}},
        "baseline": {"pair_ap": 0.78},
        "wall_time_s": 600.0,
        "interpolate": {"1.0": {"finetuned": {"pair_ap": 0.83}, "delta": {"pair_ap": {"delta": 0.05}}}},
    }
    above = stages.unmixed_metrics(mixed, "wise_ft")
    assert above["finetuned"] == {"pair_ap": 0.83} and above["delta"]["pair_ap"]["delta"] == 0.05
    assert above["baseline"] == mixed["baseline"] and above["wall_time_s"] is None
    with pytest.raises(stages.StageFailed, match=r"row wise_ft: metrics.json has no interpolate\[1.0\]"):
        stages.unmixed_metrics({"interpolate": {}}, "wise_ft")


def test_a_rows_training_overrides_are_the_stamp_a_rerun_compares():
    rp = load_reproduce(
        compose_config("reproduce", 'reproduce.data=["data=fixture"]', 'reproduce.extra=["trainer.max_steps=3"]')
    ).reproduce
    args = stages.row_args(rp, Path("/w/rows/final"), "final", ["batch.size=64"])
    assert args == [
        "data=fixture",
        "trainer.max_steps=3",
        "data.max_pairs=null",
        "loss.mining.pool_pairs=null",
        "eval.max_pairs=null",
        "batch.size=64",
        "eval.split=test",
        "eval.distractors=train",
        "eval.max_distractors=null",
        "eval.n_boot=1000",
        "hydra.run.dir=/w/rows/final",
        "run_name=reproduce-final",
    ]


def test_a_failed_stage_is_reported_by_its_error_line_not_a_progress_bar():
    log = "ok\nTraceback (most recent call last):\n  File x\nRuntimeError: boom\n\r 37%|###| 15/41\n"
    assert stages.failure_line(log) == "RuntimeError: boom"
    assert stages.failure_line("error: data.path: 'x': file not found\n") == "error: data.path: 'x': file not found"
    assert stages.failure_line("just output\n") == "just output"


def test_fresh_start_sets_the_last_run_aside(tmp_path):
    work = tmp_path / "reproduce"
    assert stages.set_aside(work) is None
    (work / "rows" / "final").mkdir(parents=True)
    (work / "rows" / "final" / "metrics.json").write_text("{}")
    (tmp_path / "reproduce.previous").mkdir()  # an older one is replaced
    previous = stages.set_aside(work)
    assert not work.exists() and (previous / "rows" / "final" / "metrics.json").read_text() == "{}"


def test_merge_rows_must_name_rows_with_a_model_of_their_own():
    from contrastive.cli import compose_config as compose
    from contrastive.reproduce.settings import load_reproduce

    cfg = compose(["reproduce.merge.rows=[labeled_negatives,aux_joint]"], "reproduce")
    assert list(load_reproduce(cfg).reproduce.merge.rows) == ["labeled_negatives", "aux_joint"]
    for bad in ("wise_ft", "silver_pairs", "nope"):  # the final row; the row above an eval_only row; unknown
        with pytest.raises(ConfigError) as err:
            load_reproduce(compose([f"reproduce.merge.rows=[{bad}]"], "reproduce"))
        assert str(err.value).startswith(f"reproduce.merge.rows[0]='{bad}'") and "\n" not in str(err.value)


def test_the_teacher_stage_runs_only_for_a_final_row_that_uses_the_teacher():
    rp = load_reproduce(compose_config("reproduce", 'reproduce.data=["data=fixture"]')).reproduce
    assert not stages.uses_teacher(rp, ["loss.negatives=mined"])
    assert not stages.uses_teacher(rp, ["loss.mining.teacher_max=1.0"])  # a filter of 1 drops nothing: no teacher
    assert stages.uses_teacher(rp, ["loss.mining.teacher_max=0.6"])
    assert stages.uses_teacher(rp, ["data.silver.enabled=true"])
    assert stages.uses_teacher(rp, ["loss.combine=joint", "loss.aux=margin_mse"])
    extra = [
        "trainer.device=cpu",
        "paths.cache_dir=/c",
        "trainer.lr=1e-5",
        "teacher.epochs=2",
        "tracking.tracking_uri=x",
    ]
    assert stages.teacher_overrides(extra) == [
        "teacher.device=cpu",
        "paths.cache_dir=/c",
        "teacher.epochs=2",
        "tracking.tracking_uri=x",
    ]
