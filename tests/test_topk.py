"""contrastive.topk: the exact blocked kernels against a full (score, row) sort and brute force, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import unit
from evaluation_helpers import clustered_embeddings, random_split

from contrastive.evaluation import build_eval_set
from contrastive.topk import GROUP, blocked_top_k, exact_top_k, pairs_at_least, score_blocks


def reference(queries: np.ndarray, corpus: np.ndarray, own: np.ndarray | None, k: int) -> tuple[list, list]:
    """Per query: a full stable sort by (-score, row) of every corpus row, its own row left out."""
    idx, vals = [], []
    for n, q in enumerate(queries):
        full = (corpus @ q).astype(np.float32)
        rows = np.arange(len(corpus))
        if own is not None:
            full, rows = np.delete(full, own[n]), np.delete(rows, own[n])
        order = np.lexsort((rows, -full))[:k]
        idx.append(rows[order].tolist())
        vals.append(full[order].tolist())
    return idx, vals


def test_exact_top_k_breaks_ties_by_the_lower_row():
    values = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]], dtype=np.float32)
    rows = np.array([[7, 3, 2, 9, 1]])
    v, r = exact_top_k(values, rows, 3)
    assert r.tolist() == [[3, 2, 7]] and v[0].tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_top_k_orders_by_score_then_corpus_row_and_skips_self():
    corpus = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5], [1, 0]], dtype=np.float32)
    idx, scores = blocked_top_k(corpus[[0, 3]], corpus, np.array([0, 3]), k=4, chunk_size=2)
    assert idx[0].tolist() == [2, 4, 3, 1]  # rows 2 and 4 tie at 1.0: the lower row first; row 0 is the query
    assert scores[0].tolist() == [1.0, 1.0, 0.5, 0.0]
    assert idx[1].tolist() == [0, 1, 2, 4]  # all four tie at 0.5; the query's own row 3 is skipped


@pytest.mark.parametrize("own, k, expected", [(True, 10, 2), (False, 10, 3), (True, 0, 0), (False, 2, 2)])
def test_top_k_caps_k_at_the_rows_left(own, k, expected):
    corpus = np.eye(3, dtype=np.float32)
    idx, scores = blocked_top_k(corpus, corpus, np.arange(3) if own else None, k=k, chunk_size=1)
    assert idx.shape == scores.shape == (3, expected)
    if own:
        assert all(q not in row for q, row in enumerate(idx.tolist()))
    elif expected:
        assert idx[:, 0].tolist() == [0, 1, 2]  # without exclusion each row finds itself first


@pytest.mark.parametrize("chunk, query_chunk", [(1, 1), (3, 5), (17, 64), (64, 7), (10_000, 10_000)])
@pytest.mark.parametrize("k", [1, 20, 100])
def test_blocks_equal_the_full_sort_with_many_exact_ties(chunk, query_chunk, k):
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 3, size=(150, 6)).astype(np.float32) / 2  # exact dot products, many ties
    queries = np.arange(0, 150, 4)
    idx, scores = blocked_top_k(corpus[queries], corpus, queries, k=k, chunk_size=chunk, query_chunk=query_chunk)
    ref_idx, ref_vals = reference(corpus[queries], corpus, queries, k)
    assert idx.tolist() == ref_idx
    assert scores.tolist() == ref_vals


@pytest.mark.parametrize("k", [5, 40])
def test_group_screening_keeps_ties_exact(k):
    """Wide blocks (a multiple of topk.GROUP columns) take the group-maximum screen; ties at the floor abound."""
    rng = np.random.default_rng(4)
    corpus = rng.integers(0, 3, size=(3000, 8)).astype(np.float32) / 2
    queries = np.arange(0, 3000, 97)
    idx, scores = blocked_top_k(corpus[queries], corpus, queries, k=k, chunk_size=GROUP * 16, query_chunk=16)
    ref_idx, ref_vals = reference(corpus[queries], corpus, queries, k)
    assert idx.tolist() == ref_idx and scores.tolist() == ref_vals


def test_block_sizes_do_not_change_the_result_on_clustered_unit_vectors():
    """Real-valued scores: every block shape gives the same rows, and their scores match a float64 full sort's
    (a last-bit rounding difference between matmul shapes may swap two rows whose scores differ by one ulp)."""
    emb = clustered_embeddings(build_eval_set(random_split(300, 1), "val"), 16, 0.9, 1)
    queries = np.arange(0, len(emb), 3)
    results = [
        blocked_top_k(emb[queries], emb, queries, 100, chunk, qc) for chunk, qc in [(13, 37), (200, 5), (5000, 500)]
    ]
    for idx, scores in results[1:]:
        assert np.array_equal(idx, results[0][0]) and np.array_equal(scores, results[0][1])
    exact = emb[queries].astype(np.float64) @ emb.astype(np.float64).T
    exact[np.arange(len(queries)), queries] = -np.inf
    np.testing.assert_allclose(results[0][1], -np.sort(-exact, axis=1)[:, :100], atol=1e-6)


def test_search_without_exclusion_finds_each_query_first():
    rng = np.random.default_rng(1)
    emb = unit(rng.normal(size=(500, 32)))
    idx, scores = blocked_top_k(emb[[5, 17, 499]], emb, None, 4, chunk_size=64)
    assert idx[:, 0].tolist() == [5, 17, 499]
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_score_blocks_cover_the_corpus_from_start():
    rng = np.random.default_rng(2)
    q, c = rng.normal(size=(3, 4)), rng.normal(size=(10, 4))
    seen = {c0: block.copy() for c0, block in score_blocks(q, c, 4, start=2)}
    assert sorted(seen) == [2, 6]
    np.testing.assert_allclose(np.hstack([seen[2], seen[6]]), (q @ c[2:].T), rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_pairs_at_least_match_brute_force(chunk):
    rng = np.random.default_rng(3)
    emb = unit(rng.normal(size=(40, 4)))
    sims = emb @ emb.T
    expected = [(i, j) for i in range(40) for j in range(i + 1, 40) if sims[i, j] >= 0.8]
    found = list(pairs_at_least(emb, 0.8, chunk_size=chunk))
    assert [(i, j) for i, j, _ in found] == expected  # ascending by (i, j)
    assert all(abs(s - sims[i, j]) < 1e-5 for i, j, s in found)
