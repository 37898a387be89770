"""contrastive/bench/eval_cost.py: the synthetic evaluation data the cost rows score."""

from __future__ import annotations

import numpy as np

from contrastive.bench.common import unit_vectors
from contrastive.bench.eval_cost import synthetic_eval_set
from contrastive.evaluation import score_embeddings


def test_synthetic_eval_set_follows_the_protocol():
    es = synthetic_eval_set(1000, query_share=0.34, pairs_per_question=0.6, seed=0)
    sizes = np.bincount(es.comp)
    assert len(es.keys) == len(es.texts) == es.n_split == 1000
    assert abs(len(es.queries) / 1000 - 0.34) < 0.01
    assert (sizes[es.comp[es.queries]] >= 2).all()
    assert np.array_equal(es.n_relevant, sizes[es.comp[es.queries]] - 1)
    same = es.comp[es.pair_rows[:, 0]] == es.comp[es.pair_rows[:, 1]]
    assert np.array_equal(same, es.pair_labels == 1)
    assert (es.pair_rows[:, 0] != es.pair_rows[:, 1]).all()
    emb = unit_vectors(1000, 16, 0)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    scored = score_embeddings(emb, es, k=10, map_k=100, chunk_size=256, query_chunk=128)
    assert scored.metrics["n_queries"] == len(es.queries)
