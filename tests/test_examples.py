"""The training-examples stage (contrastive/examples.py) on the fixture, with a stub teacher: each lever's datasets,
the sampler's merged components, and that no val or test question ever reaches the teacher or a dataset."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import train_settings

from contrastive import examples
from contrastive.data import question_key
from contrastive.utils import seeded_hash


class StubTeacher:
    """A seeded P(duplicate) per pair (most pairs low, some high), recording every pair it scores."""

    digest, cache_hit = "stub", True

    def __init__(self) -> None:
        self.info: dict = {"metrics": {"val": {"teacher": {"pair_ap": 0.9}}}}
        self.seen: list[tuple[str, str]] = []

    def score(self, first, second) -> np.ndarray:
        self.seen.extend(zip(first, second))
        return np.array([(seeded_hash(a + "\x1f" + b, 1) % 1000) / 1000 for a, b in zip(first, second)], np.float32)


@pytest.fixture
def stub_teacher(monkeypatch):
    teacher = StubTeacher()
    monkeypatch.setattr(examples, "teacher_for", lambda settings, pool: teacher if settings.uses_teacher else None)
    return teacher


def _settings(tmp_path, *overrides):
    return train_settings("data=fixture", f"paths.cache_dir={tmp_path}", "batch.size=8", *overrides)


def _held_out(data) -> set[str]:
    return {k for s in ("val", "test") for k in (*data.splits[s]["key1"], *data.splits[s]["key2"])}


def test_without_a_teacher_lever_no_teacher_is_asked_for(tmp_path, fixture_data, minilm, stub_teacher):
    built = examples.build(fixture_data, _settings(tmp_path), minilm)
    assert built.teacher is None and stub_teacher.seen == []
    assert "teacher" not in built.sizes and "mining" in built.samples


def test_teacher_max_denoises_the_mined_negatives(tmp_path, fixture_data, minilm, stub_teacher):
    plain = examples.build(fixture_data, _settings(tmp_path), minilm)
    built = examples.build(fixture_data, _settings(tmp_path, "loss.mining.teacher_max=0.5"), minilm)
    assert built.sizes["mining_removed_teacher"] > 0 and built.sizes["teacher"] == "stub"
    assert built.sizes["teacher_val_pair_ap"] == 0.9
    sample = built.samples["mining"]
    assert (sample["teacher_score"] <= 0.5).all() and "teacher_score" not in plain.samples["mining"]
    rows = built.frames["mnrl_mined"]
    scores = stub_teacher.score(rows["anchor"].tolist(), rows["negative_1"].tolist())
    assert (scores <= 0.5).all()


def test_silver_pairs_join_the_training_pairs_and_merge_components(tmp_path, fixture_data, minilm, stub_teacher):
    overrides = (
        "data.silver.enabled=true",
        "data.silver.neighbours=3",
        "data.silver.positive_min=0.7",
        "data.silver.negative_max=0.2",
    )
    plain = examples.build(fixture_data, _settings(tmp_path), minilm)
    built = examples.build(fixture_data, _settings(tmp_path, *overrides), minilm)
    s = built.sizes
    assert s["silver_used"] == s["silver_positive"] + s["silver_negative"] > 0 and "silver" in built.samples
    assert s["train_pairs_used"] == plain.sizes["train_pairs_used"]
    assert s["examples_aux_pairs" if "examples_aux_pairs" in s else "joint_aux_pairs"] > plain.sizes.get(
        "examples_aux_pairs", plain.sizes.get("joint_aux_pairs")
    )
    assert len(set(built.lookup.values())) < len(set(plain.lookup.values()))  # silver positives merged components
    silver = built.samples["silver"]
    positives = silver[silver["label"] == 1]
    assert all(
        built.lookup[question_key(a)] == built.lookup[question_key(b)]
        for a, b in zip(positives["question1"], positives["question2"])
    )


def test_a_capped_run_keeps_the_silver_to_gold_ratio_of_the_whole_split(tmp_path, fixture_data, minilm, stub_teacher):
    overrides = ("data.silver.enabled=true", "data.silver.neighbours=3", "data.silver.negative_max=0.5")
    whole = examples.build(fixture_data, _settings(tmp_path, *overrides), minilm).sizes
    half = whole["train_pairs_used"] // 2
    capped_run = (*overrides, f"data.max_pairs={half}", "loss.mining.pool_pairs=null")  # silver from the whole split
    capped = examples.build(fixture_data, _settings(tmp_path, *capped_run), minilm).sizes
    assert capped["silver_positive"] + capped["silver_negative"] == whole["silver_used"]  # the same silver scored
    ratio = capped["train_pairs_used"] / whole["train_pairs_used"]
    assert capped["silver_used"] == round(whole["silver_used"] * ratio) < whole["silver_used"]


def test_teacher_labels_replace_the_gold_ones_on_the_auxiliary_pairs(tmp_path, fixture_data, minilm, stub_teacher):
    built = examples.build(fixture_data, _settings(tmp_path, "loss.aux_labels=teacher", "loss.aux=cosent"), minilm)
    rows = built.frames["mnrl_mined"]
    labels = rows["label"].to_numpy()
    assert not set(np.unique(labels)) <= {0.0, 1.0}  # soft labels
    expected = stub_teacher.score(rows["aux_sentence1"].tolist(), rows["aux_sentence2"].tolist())
    np.testing.assert_allclose(labels, expected, atol=1e-6)


def test_margin_mse_rows_carry_the_teachers_positive_and_negative_scores(tmp_path, fixture_data, minilm, stub_teacher):
    overrides = ("loss.aux=margin_mse", "loss.mining.num_negatives=2")  # its targets: always the teacher's
    built = examples.build(fixture_data, _settings(tmp_path, *overrides), minilm)
    assert "aux_pairs" not in built.frames and "joint_rows" not in built.sizes  # no auxiliary pairs zipped
    rows = built.frames["mnrl_mined"]
    assert list(rows.columns) == ["anchor", "positive", "negative_1", "negative_2", "label"]
    first = rows.iloc[0]
    want = [stub_teacher.score([first["anchor"]], [first[c]])[0] for c in ("positive", "negative_1", "negative_2")]
    np.testing.assert_allclose(first["label"], want, atol=1e-6)
    assert "label" not in built.frames.get("mnrl_pairs", rows.iloc[:0][["anchor", "positive"]]).columns


def test_no_val_or_test_question_reaches_the_teacher_or_a_dataset(tmp_path, fixture_data, minilm, stub_teacher):
    overrides = (
        "data.silver.enabled=true",
        "data.silver.neighbours=3",
        "loss.mining.teacher_max=0.6",
        "loss.aux_labels=teacher",
        "loss.negatives=both",
    )
    built = examples.build(fixture_data, _settings(tmp_path, *overrides), minilm)
    held_out = _held_out(fixture_data)
    scored = {question_key(t) for pair in stub_teacher.seen for t in pair}
    assert scored and not scored & held_out
    for name, frame in built.frames.items():
        texts = {question_key(t) for c in frame.columns for t in frame[c] if isinstance(t, str)}
        assert texts and not texts & held_out, name
