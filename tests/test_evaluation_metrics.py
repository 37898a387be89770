"""Metric kernels: blocked exact top-k, ranking and pair metrics, hand-computed and against ranx / scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_embeddings, eval_config, random_split, ranx_scores

from contrastive.evaluation import build_eval_set, eval_set_for, split_questions
from contrastive.evaluation.metrics import (
    pair_metrics,
    ranking_per_query,
    retrieval_per_query,
)
from contrastive.model import encode


# ---------------------------------------------------------------- ranking metrics by hand
def test_ranking_metrics_hand_computed():
    hits = np.zeros((3, 100), dtype=bool)
    hits[0, [1, 3]] = True  # relevant at ranks 2 and 4, two relevant
    hits[1, 11] = True  # one relevant, at rank 12: nothing in the top 10
    hits[2, 0] = True  # one of two relevant at rank 1, the other never retrieved
    m = ranking_per_query(hits, np.array([2, 1, 2]), k=10, map_k=100)
    assert m["mrr_at_10"].tolist() == pytest.approx([1 / 2, 0.0, 1.0])
    ideal2 = 1 + 1 / math.log2(3)
    assert m["ndcg_at_10"].tolist() == pytest.approx([(1 / math.log2(3) + 1 / math.log2(5)) / ideal2, 0.0, 1 / ideal2])
    assert m["recall_at_1"].tolist() == pytest.approx([0.0, 0.0, 0.5])
    assert m["recall_at_10"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert m["map_at_100"].tolist() == pytest.approx([(1 / 2 + 2 / 4) / 2, 1 / 12, 1 / 2])
    assert list(m) == ["mrr_at_10", "ndcg_at_10", "recall_at_1", "recall_at_10", "map_at_100"]


def test_retrieval_on_a_hand_made_split_with_a_distractor():
    # component 0 = {a, b, c} (a~b, b~c); d and e are singletons, labeled non-duplicates of a and c
    frame = pd.DataFrame(
        {
            "question1": ["a", "b", "a", "c"],
            "question2": ["b", "c", "d", "e"],
            "label": [1, 1, 0, 0],
            "key1": ["a", "b", "a", "c"],
            "key2": ["b", "c", "d", "e"],
            "comp1": [0, 0, 0, 0],
            "comp2": [0, 0, 1, 2],
        }
    )
    extra = pd.DataFrame({"key": ["z", "b"], "text": ["Z", "B"]})  # b is in the split: dropped as distractor
    es = build_eval_set(frame, "val", extra)
    assert es.keys == ["a", "b", "c", "d", "e", "z"] and es.n_split == 5
    assert es.queries.tolist() == [0, 1, 2] and es.n_relevant.tolist() == [2, 2, 2]
    assert es.comp[-1] == -1
    angle = {"a": 0.0, "b": 0.1, "c": 1.2, "d": 0.5, "e": 2.5, "z": 0.05}
    emb = np.array([[math.cos(angle[k]), math.sin(angle[k])] for k in es.keys], dtype=np.float32)
    m = retrieval_per_query(emb, es, k=10, map_k=100, chunk_size=2)
    # a: z(0.05) b(0.1) d(0.5) c(1.2) -> relevant at 2, 4 ; b: z a d c ; c: d b z a
    assert m["mrr_at_10"].tolist() == pytest.approx([1 / 2, 1 / 2, 1 / 2])
    assert m["recall_at_1"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert m["map_at_100"].tolist() == pytest.approx([(1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2])
    assert es.pair_rows.tolist() == [[0, 1], [1, 2], [0, 3], [2, 4]]


# ---------------------------------------------------------------- against ranx
RANX_METRICS = ["mrr@10", "ndcg@10", "recall@1", "recall@10", "map@100"]
OURS = ["mrr_at_10", "ndcg_at_10", "recall_at_1", "recall_at_10", "map_at_100"]


def test_metrics_match_ranx_on_random_embeddings():
    es = build_eval_set(random_split(80, 3), "val")
    emb = clustered_embeddings(es, dim=12, noise=1.6, seed=3)
    ours = retrieval_per_query(emb, es, 10, 100, chunk_size=37)
    theirs = ranx_scores(emb, es, RANX_METRICS)
    assert 0.05 < theirs["mrr@10"] < 0.95  # a case with misses and partial credit
    for mine, ref in zip(OURS, RANX_METRICS):
        assert ours[mine].mean() == pytest.approx(theirs[ref], abs=1e-9), mine


def test_metrics_match_ranx_on_real_model_embeddings(minilm, fixture_data, tmp_path):
    ev = eval_config(tmp_path, "eval.distractors=train").eval  # the val split plus the train questions
    es = eval_set_for(ev, fixture_data, "val")
    assert len(es.keys) == es.n_split + len(split_questions(fixture_data.splits["train"]))
    emb = encode(minilm, es.texts, batch_size=64, show_progress=False)
    ours = retrieval_per_query(emb, es, 10, 100, chunk_size=50)
    theirs = ranx_scores(emb, es, RANX_METRICS)
    for mine, ref in zip(OURS, RANX_METRICS):
        assert ours[mine].mean() == pytest.approx(theirs[ref], abs=1e-9), mine


# ---------------------------------------------------------------- pair classification
def test_pair_metrics_hand_computed():
    m = pair_metrics(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    assert m["pair_ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["pair_best_f1"] == pytest.approx(0.8)  # threshold 0.7: P = 2/3, R = 1
    assert m["pair_threshold"] == pytest.approx(0.7)
    assert m["pair_accuracy"] == pytest.approx(3 / 4)


def test_pair_metrics_match_sklearn_and_brute_force_with_ties():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 400)
    scores = np.round(labels * 0.3 + rng.normal(size=400), 1)  # rounded: many tied scores
    m = pair_metrics(scores, labels)
    assert m["pair_ap"] == pytest.approx(average_precision_score(labels, scores))
    f1s = {t: f1_score(labels, scores >= t) for t in np.unique(scores)}
    best = max(f1s.values())
    assert m["pair_best_f1"] == pytest.approx(best)
    assert f1s[m["pair_threshold"]] == pytest.approx(best)
    assert m["pair_accuracy"] == pytest.approx(((scores >= m["pair_threshold"]) == labels).mean())


def test_pair_metrics_are_undefined_when_every_pair_has_one_label(caplog):
    import math

    from contrastive.evaluation.metrics import pair_metrics as metrics_of

    scores = np.array([0.9, 0.8, 0.2])
    for label in (0, 1):
        out = metrics_of(scores, np.full(3, label))
        assert all(math.isnan(v) for v in out.values())
    assert "pair metrics undefined" in caplog.text
