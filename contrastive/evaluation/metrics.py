"""Pure numeric kernels: metric names, retrieval through the exact top-k kernel (contrastive.topk), ranking and
pair-classification metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastive.settings import PAIR_METRICS, ranking_metric_names
from contrastive.topk import blocked_top_k

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from contrastive.evaluation.eval_sets import EvalSet

PAIR_KEYS = PAIR_METRICS  # the names are the settings' (eval.objective is checked against them at startup)
COUNT_KEYS = ("n_queries", "n_corpus", "n_pairs")
ranking_keys = ranking_metric_names


def metric_keys(k: int, map_k: int) -> tuple[str, ...]:
    """Every metric that gets a delta: ranking metrics then pair metrics."""
    return ranking_keys(k, map_k) + PAIR_KEYS


# ---------------------------------------------------------------- retrieval
def ranking_per_query(hits: np.ndarray, n_relevant: np.ndarray, k: int, map_k: int) -> dict[str, np.ndarray]:
    """Per-query MRR@k, nDCG@k (binary gains), Recall@1, Recall@k, MAP@map_k from ranked hit flags."""
    hits = hits.astype(np.float64)
    n_rel = n_relevant.astype(np.float64)
    top = hits[:, :k]
    first = np.argmax(top > 0, axis=1)
    found = top.any(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    deep = hits[:, :map_k]
    precision = np.cumsum(deep, axis=1) / np.arange(1, deep.shape[1] + 1)
    out = {
        f"mrr_at_{k}": np.where(found, 1.0 / (first + 1), 0.0),
        f"ndcg_at_{k}": (top * discount[: top.shape[1]]).sum(axis=1) / ideal,
        "recall_at_1": hits[:, :1].sum(axis=1) / n_rel,
        f"recall_at_{k}": top.sum(axis=1) / n_rel,
        f"map_at_{map_k}": (precision * deep).sum(axis=1) / n_rel,
    }
    return {name: out[name] for name in ranking_keys(k, map_k)}


def retrieval_per_query(
    emb: np.ndarray, es: EvalSet, k: int, map_k: int, chunk_size: int, query_chunk: int = 1024
) -> dict[str, np.ndarray]:
    """Per-query ranking metrics of corpus embeddings `emb` (rows aligned with es.keys)."""
    if len(es.queries) == 0:
        return {name: np.zeros(0) for name in ranking_keys(k, map_k)}
    idx, _ = blocked_top_k(emb[es.queries], emb, es.queries, max(k, map_k), chunk_size, query_chunk)
    hits = es.comp[idx] == es.comp[es.queries][:, None]
    return ranking_per_query(hits, es.n_relevant, k, map_k)


# ---------------------------------------------------------------- pair classification
def pair_scores(emb: np.ndarray, es: EvalSet, chunk: int = 8192) -> np.ndarray:
    """Cosine score of each labeled pair (embeddings are unit length), `chunk` pairs at a time (the gathered rows
    stay in cache)."""
    rows = es.pair_rows
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        out[start : start + len(part)] = np.einsum("ij,ij->i", emb[part[:, 0]], emb[part[:, 1]])
    return out


def pair_metrics_weighted(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """AP, best F1, its threshold and the accuracy there, for each row of pair weights (B, n_pairs).

    AP is the step-wise sum over distinct thresholds of (recall gain x precision), as scikit-learn's
    average_precision_score; a pair is predicted duplicate when its score >= threshold.
    """
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    ends = np.r_[s[1:] != s[:-1], True]  # the last pair of each run of equal scores
    tp = np.cumsum(w * y, axis=1)[:, ends]
    fp = np.cumsum(w * (1.0 - y), axis=1)[:, ends]
    pos, neg = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        recall = tp / pos
        ap = (np.diff(recall, axis=1, prepend=0.0) * precision).sum(axis=1)
        f1 = 2 * tp / (tp + fp + pos)
    ap = np.where(pos[:, 0] > 0, ap, np.nan)
    best = np.argmax(np.nan_to_num(f1, nan=-1.0), axis=1)
    rows = np.arange(len(w))
    tp_b, fp_b = tp[rows, best], fp[rows, best]
    return {
        "pair_ap": ap,
        "pair_best_f1": np.where(pos[:, 0] > 0, f1[rows, best], np.nan),
        "pair_threshold": s[ends][best],
        "pair_accuracy": (tp_b + neg[:, 0] - fp_b) / (pos[:, 0] + neg[:, 0]),
    }


def pair_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AP of the cosine scores, best-F1 threshold, F1 and accuracy there; undefined (NaN, with a warning) when the
    pairs hold one label only (all duplicates would otherwise report AP 1.0)."""
    if len(scores) == 0:
        return {name: float("nan") for name in PAIR_KEYS}
    if len(np.unique(labels)) < 2:
        log.warning("pair metrics undefined: all %d labeled pairs have label %d", len(labels), int(labels[0]))
        return {name: float("nan") for name in PAIR_KEYS}
    out = pair_metrics_weighted(scores, labels, np.ones((1, len(scores))))
    return {name: float(v[0]) for name, v in out.items()}


# ---------------------------------------------------------------- one model's scores
@dataclass
class Scored:
    """One model's results on an evaluation set: summary metrics and what the bootstrap needs."""

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    pair_scores: np.ndarray


def scoring_args(ev: Any) -> dict[str, int]:
    """The cut-offs and block sizes of the eval group `ev`, as keyword arguments of the scoring functions."""
    return {
        "k": int(ev.k),
        "map_k": int(ev.map_k),
        "chunk_size": int(ev.chunk_size),
        "query_chunk": int(ev.query_chunk_size),
    }


def score_embeddings(
    emb: np.ndarray, es: EvalSet, k: int, map_k: int, chunk_size: int, query_chunk: int = 1024
) -> Scored:
    """Every metric of one model's corpus embeddings on an evaluation set."""
    per_query = retrieval_per_query(emb, es, k, map_k, chunk_size, query_chunk)
    metrics = {name: float(v.mean()) if len(v) else float("nan") for name, v in per_query.items()}
    scores = pair_scores(emb, es)
    metrics.update(pair_metrics(scores, es.pair_labels))
    metrics.update(n_queries=len(es.queries), n_corpus=len(es.keys), n_pairs=len(es.pair_labels))
    return Scored(metrics, per_query, scores)
