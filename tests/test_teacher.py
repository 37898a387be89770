"""The teacher (contrastive/teacher.py): its training pairs, its cache key, and end to end on the fixture: trained
once, cached, scored beside the untuned bi-encoder, its entry point, and a training run that distils it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, run_module

from contrastive.data import question_key
from contrastive.settings import load_teacher
from contrastive.teacher import cache_key, evaluate, load_or_train, teacher_pairs


def _settings(tmp_path, *overrides):
    cfg = compose_config(
        "teacher", "data=fixture", f"paths.cache_dir={tmp_path}/cache", f"paths.output_root={tmp_path}/out", *overrides
    )
    return load_teacher(cfg)


def test_training_pairs_come_from_the_train_split_in_the_orders_asked(tmp_path, fixture_data):
    train = fixture_data.splits["train"]
    given = teacher_pairs(train, _settings(tmp_path, "teacher.orders=given").teacher)
    both = teacher_pairs(train, _settings(tmp_path, "teacher.orders=both").teacher)
    rand = teacher_pairs(train, _settings(tmp_path, "teacher.orders=random").teacher)
    assert len(given) == len(train) == len(rand) and len(both) == 2 * len(train)
    unordered = lambda f: sorted(map(frozenset, zip(f["sentence1"], f["sentence2"])), key=sorted)  # noqa: E731
    assert unordered(rand) == unordered(given) and 0 < (rand["sentence1"] != given["sentence1"]).sum() < len(given)
    assert list(both["label"]) == list(given["label"]) * 2 and set(given["label"]) == {0.0, 1.0}
    held_out = {k for s in ("val", "test") for k in (*fixture_data.splits[s]["key1"], *fixture_data.splits[s]["key2"])}
    assert not {question_key(t) for t in (*both["sentence1"], *both["sentence2"])} & held_out
    capped = teacher_pairs(train, _settings(tmp_path, "teacher.max_pairs=40", "teacher.orders=given").teacher)
    assert len(capped) <= 40


def test_the_cache_key_follows_what_changes_the_model(tmp_path, fixture_data):
    train = fixture_data.splits["train"]
    key = cache_key(_settings(tmp_path).teacher, train)
    assert key == cache_key(_settings(tmp_path, "teacher.score_batch_size=7").teacher, train)  # scoring only
    assert key != cache_key(_settings(tmp_path, "teacher.lr=1e-4").teacher, train)
    assert key != cache_key(_settings(tmp_path).teacher, train.iloc[1:])


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("teacher.orders=sideways", "teacher.orders='sideways'"),
        ("teacher.epochs=0", "teacher.epochs=0"),
        ("teacher.lr=2", "teacher.lr=2"),
        ("teacher.max_length=4", "teacher.max_length=4"),
    ],
)
def test_bad_teacher_settings_are_one_line(tmp_path, override, shown):
    from contrastive.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, override)
    assert str(err.value).startswith(shown) and "\n" not in str(err.value)


TINY = ("teacher.max_pairs=60", "teacher.batch_size=8", "teacher.orders=given")


@pytest.mark.slow
def test_the_teacher_trains_once_is_cached_and_scored_beside_the_bi_encoder(tmp_path, fixture_data):
    from contrastive.evaluation import Evaluator

    settings = _settings(tmp_path, *TINY, "eval.n_boot=50")
    teacher = load_or_train(settings.teacher, fixture_data.splits["train"])
    assert not teacher.cache_hit and teacher.info["training"]["steps"] > 0
    assert not (teacher.path / "trainer").exists() and (teacher.path / "model.safetensors").is_file()
    again = load_or_train(settings.teacher, fixture_data.splits["train"])
    assert again.cache_hit and again.path == teacher.path
    a, b = ["How do I learn Python?", "What is 2+2?"], ["What is the best way to learn Python?", "Who is Kant?"]
    first = teacher.score(a, b)
    np.testing.assert_allclose(again.score(a, b), first, atol=1e-6)  # the scores cache
    assert ((first >= 0) & (first <= 1)).all()
    flipped = dataclasses.replace(settings.teacher, symmetric=True)
    assert again.cfg.symmetric == flipped.symmetric
    entry = evaluate(again, Evaluator(settings.eval, settings.model, fixture_data))
    assert entry["split"] == "val" and entry["n_pairs"] == len(fixture_data.splits["val"])
    d = entry["delta"]["pair_ap"]
    assert d["delta"] == pytest.approx(entry["teacher"]["pair_ap"] - entry["baseline"]["pair_ap"])
    assert d["ci_low"] <= d["delta"] <= d["ci_high"]


@pytest.mark.slow
def test_the_teacher_entry_point_prints_its_table_and_logs_a_run(tmp_path):
    args = (
        "data=fixture",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.output_root={tmp_path}/out",
        *TINY,
        "eval.n_boot=50",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns.db",
    )
    done = run_module("contrastive.teacher", *args, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "teacher vs untuned bi-encoder, val split" in done.stdout and "(trained)" in done.stdout
    info = json.loads(next((tmp_path / "cache" / "teacher").glob("teacher-*/teacher.json")).read_text())
    assert "val" in info["metrics"] and info["key"]["pairs"]
    card = next((tmp_path / "cache" / "teacher").glob("teacher-*/README.md")).read_text()
    assert "Scored by contrastive" in card and "pair_ap" in card
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("contrastive").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["kind"] == "teacher" and "teacher/pair_ap" in runs[0].data.metrics
    again = run_module("contrastive.teacher", *args, "eval.split=test", f"json={tmp_path}/t.json", timeout=600)
    assert again.returncode == 0 and "(cache hit)" in again.stdout
    scored = json.loads((tmp_path / "t.json").read_text())  # what make reproduce's teacher stage reads
    assert scored["split"] == "test" and scored["n_pairs"] > 0
    assert {"pair_ap", "pair_best_f1"} <= set(scored["teacher"]) and scored["training"]["steps"] > 0
    assert scored["delta"]["pair_ap"]["ci_low"] is not None and Path(scored["path"]).name.endswith(scored["digest"])


@pytest.mark.slow
def test_a_training_run_distils_the_teacher_and_denoises_its_negatives(tmp_path):
    args = (
        "data=fixture",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.output_root={tmp_path}/out",
        *TINY,
        "loss.aux=margin_mse",
        "loss.aux_labels=teacher",
        "loss.mining.teacher_max=0.9",
        "batch.size=8",
        "trainer.max_steps=3",
        "eval.n_boot=20",
        "eval.umap.enabled=false",
        "tracking.enabled=false",
        "save_model=false",
    )
    done = run_module("contrastive.train", *args, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("training examples:"))
    assert "mining_removed_teacher=" in line and "teacher_cache_hit=0" in line
    metrics = json.loads(next((tmp_path / "out").rglob("metrics.json")).read_text())
    assert metrics["training"]["steps"] == 3 and metrics["training"]["sizes"]["teacher_cache_hit"] == 0
    assert "'loss_aux_margin_mse'" in done.stdout and "'loss_mnrl'" in done.stdout  # the Trainer's logged terms


class CountingModel:
    """A CrossEncoder's predict() stand-in: a score per pair from its text, recording every pair it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def predict(self, pairs, batch_size, show_progress_bar):
        self.asked.extend(pairs)
        return np.array([(len(a) * 7 + len(b)) % 100 / 100 for a, b in pairs], dtype=np.float32)


def test_the_pair_store_scores_each_pair_once_whatever_list_it_comes_in(tmp_path):
    from types import SimpleNamespace

    from contrastive.teacher import Teacher

    cfg = SimpleNamespace(symmetric=True, score_batch_size=4)
    model = CountingModel()
    teacher = Teacher(model, cfg, tmp_path / "teacher-abc")
    first = teacher.score(["a", "bb", "a"], ["ccc", "d", "ccc"])  # the repeated pair is scored once
    assert len(model.asked) == 2 * 2  # two unique pairs, both orders
    np.testing.assert_allclose(first[0], ((7 + 3) + (21 + 1)) / 200, atol=1e-6)
    assert first[0] == first[2]
    again = Teacher(CountingModel(), cfg, tmp_path / "teacher-abc")  # a new process: reads the store
    second = again.score(["bb", "eeee"], ["d", "a"])
    assert again.model.asked == [("eeee", "a"), ("a", "eeee")]  # only the new pair
    assert second[0] == first[1]
    one_order = Teacher(CountingModel(), SimpleNamespace(symmetric=False, score_batch_size=4), tmp_path / "teacher-abc")
    one_order.score(["a"], ["ccc"])  # another scoring mode: its own store
    assert one_order.model.asked == [("a", "ccc")] and teacher.store != one_order.store
    assert len(teacher.score([], [])) == 0
