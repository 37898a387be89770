"""The app's Engine without a browser or a model: compare, search and dedup through a bag-of-words encoder."""

from __future__ import annotations

import pytest
from app_helpers import bag_of_words, engine

from contrastive.app.ui import render_compare
from contrastive.errors import DataError


# ---------------------------------------------------------------- the engine
def test_compare_gives_each_model_its_own_verdict():
    rows = engine(ft=0.6, base=0.95).compare("How do I learn Python fast?", "How do I learn Python?")
    cosine = float(bag_of_words(["How do I learn Python fast?"])[0] @ bag_of_words(["How do I learn Python?"])[0])
    assert 0.6 <= cosine < 0.95
    assert [(r["model"], r["duplicate"], r["threshold"]) for r in rows] == [
        ("finetuned", True, 0.6),
        ("baseline", False, 0.95),
    ]
    assert rows[0]["cosine"] == pytest.approx(cosine, abs=1e-6)
    html = render_compare(rows, engine().thresholds)
    assert 'id="cmp-finetuned"' in html and 'data-verdict="not duplicate"' in html


def test_compare_without_a_checkpoint_shows_one_model():
    rows = engine(with_baseline=False).compare("a b", "a b")
    assert [r["model"] for r in rows] == ["finetuned"] and rows[0]["duplicate"]


def test_compare_rejects_bad_input():
    with pytest.raises(DataError, match="question 2: empty"):
        engine().compare("What?", "")
    with pytest.raises(DataError, match="question 1: 201 characters"):
        engine().compare("x" * 201, "What?")


def test_search_default_and_uploaded_corpus(tmp_path):
    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    eng = engine(corpus)
    table, timing = eng.search("lose weight quickly", 2)
    assert table["question"][0] == "How can I lose weight?"
    assert list(table["rank"]) == [1, 2] and table["cosine"].is_monotonic_decreasing
    assert timing["corpus"] == 3 and timing["total_ms"] >= timing["search_ms"] >= 0
    upload = tmp_path / "mine.txt"
    upload.write_text("Best pizza in Rome?\nbest pizza in rome?\nWhere to eat pizza in Naples?\n")
    mine = eng.index_upload(upload)
    assert len(mine) == 2 and mine.description == "upload mine.txt"  # repeats removed
    table, timing = eng.search("pizza in Rome", 5, mine)
    assert table["question"][0] == "Best pizza in Rome?" and len(table) == 2 and timing["corpus"] == 2
    with pytest.raises(DataError, match="choose a whole number from 1 to 50"):
        eng.search("x", 51)


def test_dedup_groups_at_the_threshold():
    texts = ["How do I learn Python?", "how do i learn python?", "How do I learn Python fast?", "What is love?"]
    eng = engine(ft=0.95)
    table, groups = eng.dedup(texts)  # default: the calibrated threshold
    assert groups == [[0, 1], [2], [3]]
    _, groups = eng.dedup(texts, 0.6)
    assert groups == [[0, 1, 2], [3]]
    assert len(table) == 4
    with pytest.raises(DataError, match="not a cosine"):
        eng.dedup(texts, 1.5)


def test_questions_from_prefers_the_upload(tmp_path):
    upload = tmp_path / "list.csv"
    upload.write_text("question\nA?\nB?\n")
    eng = engine()
    assert eng.questions_from("X?\nY?", str(upload)) == (["A?", "B?"], "upload list.csv")
    assert eng.questions_from("X?\n\nY?", None) == (["X?", "Y?"], "pasted list")


def test_search_and_dedup_score_the_baseline_beside():
    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    skewed = lambda texts: bag_of_words([t.replace("weight", "") for t in texts])  # noqa: E731 - another model
    eng = engine(corpus, ft=0.5, base=0.99)
    eng.embed_baseline = skewed
    table, _ = eng.search("How can I lose weight?", 3)
    assert list(table.columns) == ["rank", "cosine", "question", "duplicate", "baseline_cosine", "baseline_duplicate"]
    assert table["question"][0] == "How can I lose weight?" and table["duplicate"][0]
    want = float(skewed(["How can I lose weight?"])[0] @ skewed(["How can I lose weight?"])[0])
    assert table["baseline_cosine"][0] == pytest.approx(want, abs=1e-4)
    assert list(table["baseline_duplicate"]) == list(table["baseline_cosine"] >= 0.99)
    texts = ["How do I learn Python?", "how do i learn python?", "How do I learn Python fast?", "What is love?"]
    table, groups = engine(ft=0.6, base=0.95).dedup(texts)
    assert groups == [[0, 1, 2], [3]]
    assert list(table["baseline_group"]) == [1, 1, 2, 3]  # at 0.95 the baseline links only the exact rewording
    assert list(table["baseline_cosine_to_first"]) == list(table["cosine_to_first"])  # the same encoder here
    table, _ = engine(with_baseline=False).dedup(texts)
    assert "baseline_group" not in table


def test_a_dedup_list_over_the_baseline_limit_is_encoded_once():
    """Above `baseline_max_questions` the baseline encoder is not called (its columns would double the time)."""
    calls = []
    eng = engine(ft=0.6, baseline_max_questions=3)
    eng.embed_baseline = lambda texts, progress=None: calls.append(len(texts)) or bag_of_words(texts)
    texts = ["How do I learn Python?", "how do i learn python?", "What is love?", "Why is the sky blue?"]
    table, groups = eng.dedup(texts)
    assert calls == [] and "baseline_group" not in table and groups[0] == [0, 1]
    table, _ = eng.dedup(texts[:3])
    assert calls == [3] and "baseline_group" in table


@pytest.mark.parametrize("k", [float("nan"), float("inf"), 2.5, "x", 0, 51])
def test_search_refuses_a_bad_k_in_one_line(k):
    with pytest.raises(DataError, match=r"^k: .* results asked for, choose a whole number from 1 to 50$"):
        engine().search("How do I learn Python?", k)


def test_text_that_is_not_valid_unicode_is_an_input_error():
    """A lone surrogate (a broken client) cannot be tokenized: a one-line input error, not internal error text."""
    with pytest.raises(DataError, match=r"^query: invalid character at position 4 \(not valid Unicode text\)$"):
        engine().search("How\ud800 do I learn Python?", 3)
    with pytest.raises(DataError, match=r"^pasted list: item 2: invalid character at position 1"):
        e = engine()
        e.dedup(e.questions_from("How do I learn Python?\n\udfff", None)[0])
    assert len(engine().search("How do I learn Python?", 3.0)[0]) == 2  # a whole float is fine (the UI's Number)
