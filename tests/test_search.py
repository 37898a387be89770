"""contrastive.search without a model: ranking, duplicate groups, question lists and their limits, corpus
fingerprints (the app's search and dedup kernels)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from app_helpers import LIMITS, bag_of_words, unit

from contrastive.errors import DataError
from contrastive.search import (
    CorpusIndex,
    check_question,
    check_questions,
    corpus_fingerprint,
    duplicate_groups,
    groups_table,
    read_questions_file,
    unique_questions,
)


# ---------------------------------------------------------------- ranking
def test_corpus_index_finds_each_row_first():
    rng = np.random.default_rng(1)
    emb = unit(rng.normal(size=(300, 32)))
    index = CorpusIndex([f"q{i}" for i in range(300)], emb)
    hits = index.search(emb[[5, 17, 299]], k=4)
    assert [h[0][0] for h in hits] == [5, 17, 299]
    assert all(abs(h[0][1] - 1.0) < 1e-5 and len(h) == 4 for h in hits)
    assert all(h[i][1] >= h[i + 1][1] for h in hits for i in range(3))


def test_corpus_index_rejects_misaligned_embeddings():
    with pytest.raises(ValueError, match="do not match"):
        CorpusIndex(["a", "b"], np.zeros((3, 4), np.float32))


# ---------------------------------------------------------------- duplicate groups
def test_duplicate_groups_are_connected_components():
    """A~B and B~C link A and C even though cos(A, C) is below the threshold; D stays alone."""
    angles = np.radians([0.0, 30.0, 60.0, 150.0])
    emb = unit(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    assert emb[0] @ emb[2] < 0.8 < emb[0] @ emb[1]
    assert duplicate_groups(emb, 0.8) == [[0, 1, 2], [3]]
    assert duplicate_groups(emb, 0.99) == [[0], [1], [2], [3]]
    assert duplicate_groups(emb, -1.0) == [[0, 1, 2, 3]]


def test_duplicate_groups_threshold_is_inclusive():
    emb = unit(np.array([[1.0, 0.0], [0.6, 0.8]]))  # cosine exactly 0.6
    assert duplicate_groups(emb, float(emb[0] @ emb[1])) == [[0, 1]]


def test_groups_table_lists_every_question_once():
    texts = ["a b", "a b c", "x y", "a b"]
    emb = bag_of_words(texts)
    groups = duplicate_groups(emb, 0.7)
    table = groups_table(texts, groups, emb)
    assert sorted(table["question"]) == sorted(texts)
    assert list(table.columns) == ["group", "size", "question", "cosine_to_first", "representative"]
    big = table[table["group"] == 1]
    assert set(big["question"]) == {"a b", "a b c"} and len(big) == 3 and set(big["size"]) == {3}
    assert big["cosine_to_first"].iloc[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- question lists and limits
def test_check_question_limits():
    assert check_question("  What is AI?  ", LIMITS) == "What is AI?"
    with pytest.raises(DataError, match="query: empty"):
        check_question("   ", LIMITS, "query")
    with pytest.raises(DataError, match="201 characters, the limit is 200"):
        check_question("x" * 201, LIMITS)


def test_check_questions_limits():
    assert check_questions(["a", "", "  b "], LIMITS, "list") == ["a", "b"]
    with pytest.raises(DataError, match="more than 50 questions"):
        check_questions([f"q{i}" for i in range(51)], LIMITS, "list")
    with pytest.raises(DataError, match="item 2 has 300 characters"):
        check_questions(["ok", "y" * 300], LIMITS, "list")
    with pytest.raises(DataError, match="no questions found"):
        check_questions(["", " "], LIMITS, "list")


def test_unique_questions_uses_question_keys():
    assert unique_questions(["How?", "how? ", "Why?", "HOW?"]) == ["How?", "Why?"]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("q.txt", "First?\n\nSecond?\n", ["First?", "Second?"]),
        ("q.csv", "id,Question\n1,First?\n2,Second?\n", ["First?", "Second?"]),
        ("q.csv", "question1,question2,label\nA?,B?,1\nC?,D?,0\n", ["A?", "C?", "B?", "D?"]),
        ("q.csv", "Only one column?\nAnother?\n", ["Only one column?", "Another?"]),
    ],
)
def test_read_questions_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert read_questions_file(path, LIMITS) == expected


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("q.json", "[]", "unsupported file type '.json'"),
        ("q.csv", "a,b\n1,2\n", "name one column 'question'"),
        ("q.txt", "x" * 20_000, "MB, the limit is 0.0 MB"),
        ("q.txt", "\n\n", "no questions found"),
        ("q.csv", "", "is empty"),
    ],
)
def test_read_questions_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_questions_file(path, LIMITS)


def test_read_questions_file_rejects_non_utf8(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"caf\xe9?\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_questions_file(path, LIMITS)


# ---------------------------------------------------------------- corpus fingerprints
def test_corpus_fingerprint_depends_on_content_and_order():
    assert corpus_fingerprint(["a", "b"]) == corpus_fingerprint(["a", "b"])
    assert corpus_fingerprint(["a", "b"]) != corpus_fingerprint(["b", "a"])
    assert corpus_fingerprint(["ab"]) != corpus_fingerprint(["a", "b"])
