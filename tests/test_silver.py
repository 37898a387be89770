"""Silver pairs (contrastive/silver.py): candidates among train questions only, thresholds, merged components."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from conftest import fixture_data_settings

from contrastive.data import COLUMNS, split_pairs, validate
from contrastive.mining import Corpus
from contrastive.silver import build_silver, candidate_pairs, label_pairs, merge_components, sample


def _pool() -> pd.DataFrame:
    """Two duplicate chains and one labeled non-duplicate, all in one train split; questions 'x' and 'y' unlabeled."""
    rows = [
        ("alpha one?", "alpha two?", 1),
        ("beta one?", "beta two?", 1),
        ("alpha one?", "beta one?", 0),
        ("gamma one?", "delta one?", 0),
    ]
    frame = validate(pd.DataFrame(rows, columns=list(COLUMNS)), fixture_data_settings())[0]
    return split_pairs(frame, {"train": 1.0}, seed=0)[0]["train"]


def _cfg(**changes) -> SimpleNamespace:
    base = {
        "neighbours": 3,
        "positive_min": 0.9,
        "negative_max": 0.1,
        "share": 1.0,
        "max_candidates": None,
        "seed": 0,
        "sample_rows": 10,
    }
    return SimpleNamespace(**{**base, **changes})


def _embeddings(corpus: Corpus) -> np.ndarray:
    """Questions of one word family point the same way: every pair of the corpus is some question's neighbour."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(corpus.texts), 8)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_candidates_skip_members_of_one_component_and_labeled_pairs_and_come_once():
    pool = _pool()
    corpus = Corpus.of(pool)
    rows = candidate_pairs(_embeddings(corpus), corpus, pool, neighbours=5)
    pairs = {(corpus.keys[a], corpus.keys[b]) for a, b in rows}
    assert len(pairs) == len(rows) and all(a < b for a, b in rows.tolist())  # unordered, once, lower row first
    labeled = {tuple(sorted(p)) for p in zip(pool["key1"], pool["key2"])}
    assert not pairs & labeled
    assert all(corpus.comp[a] != corpus.comp[b] for a, b in rows)
    n = len(corpus.keys)  # 6 questions, 2 components of 2: 15 pairs - 2 in-component - 2 labeled non-dup = 11
    assert n == 6 and len(rows) == 11


def test_thresholds_label_positives_negatives_and_leave_the_middle_out():
    scores = np.array([0.95, 0.9, 0.5, 0.1, 0.02], dtype=np.float32)
    assert label_pairs(scores, _cfg()).tolist() == [1, 1, -1, 0, 0]
    assert label_pairs(scores, _cfg(negative_max=None)).tolist() == [1, 1, -1, -1, -1]


def test_a_silver_positive_merges_the_components_of_its_questions():
    frame = pd.DataFrame(
        {"comp1": [0, 1, 2, 0], "comp2": [0, 1, 2, 1], "label": [1, 1, 1, 1]},  # the last row links 0 and 1
    )
    merged = merge_components(frame)
    assert merged["comp1"].tolist() == [0, 0, 2, 0] and merged["comp2"].tolist() == [0, 0, 2, 0]
    negative = frame.assign(label=[1, 1, 1, 0])
    assert merge_components(negative)["comp2"].tolist() == [0, 1, 2, 1]  # label 0 merges nothing


def test_build_silver_counts_add_up_and_the_share_is_a_seeded_subset():
    pool = _pool()

    def score(a, b):
        return np.array([0.95 if x.split()[0] == y.split()[0] else 0.05 for x, y in zip(a, b)], dtype=np.float32)

    calls = []

    def counted(a, b):
        calls.append(len(a))
        return score(a, b)

    frame, stats = build_silver(pool, _cfg(neighbours=5), counted, _embeddings)
    assert calls == [stats["silver_scored"]] and stats["silver_scored"] == stats["silver_candidates"] == 11
    assert stats["silver_positive"] + stats["silver_negative"] + stats["silver_left_out"] == 11
    assert stats["silver_used"] == len(frame) == stats["silver_positive"] + stats["silver_negative"]
    assert set(frame["label"]) <= {0, 1} and frame["silver"].all()
    assert ((frame["label"] == 1) == (frame["teacher_score"] >= 0.9)).all()
    half, half_stats = build_silver(pool, _cfg(neighbours=5, share=0.5), score, _embeddings)
    assert half_stats["silver_used"] == round(len(frame) * 0.5)
    assert set(zip(half["key1"], half["key2"])) <= set(zip(frame["key1"], frame["key2"]))
    capped, capped_stats = build_silver(pool, _cfg(neighbours=5, max_candidates=4), score, _embeddings)
    assert capped_stats["silver_scored"] == 4 and capped_stats["silver_candidates"] == 11
    shown = sample(frame, 3, 0)
    assert list(shown.columns) == ["question1", "question2", "teacher_score", "label"] and len(shown) == 3


def test_silver_pairs_never_hold_a_val_or_test_question(fixture_data):
    """The candidates are the TRAIN split's questions only: nothing of val or test reaches the teacher."""
    train = fixture_data.splits["train"]
    seen: list[tuple[str, str]] = []

    def score(a, b):
        seen.extend(zip(a, b))
        return np.full(len(a), 0.95, dtype=np.float32)

    frame, stats = build_silver(train, _cfg(neighbours=4), score, _embeddings)
    assert stats["silver_used"] > 0
    held_out = {k for s in ("val", "test") for k in (*fixture_data.splits[s]["key1"], *fixture_data.splits[s]["key2"])}
    train_keys = set(train["key1"]) | set(train["key2"])
    assert set(frame["key1"]) | set(frame["key2"]) <= train_keys
    assert not (set(frame["key1"]) | set(frame["key2"])) & held_out
    from contrastive.data import question_key

    assert not {question_key(t) for pair in seen for t in pair} & held_out
