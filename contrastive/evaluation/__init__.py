"""Evaluation: pure metric kernels, the paired bootstrap, eval sets, the embedding cache and the Evaluator.

metrics    metric names, blocked exact top-k retrieval, ranking and pair metrics (pure numpy)
bootstrap  paired bootstrap CIs of the deltas
eval_sets  the corpus, queries and labeled pairs a model is scored on
cache      the embedding cache (baseline here, corpus embeddings in the app)
evaluator  `Evaluator` (built once per run) and its `EvalResult`
"""

from contrastive.evaluation.bootstrap import (
    bootstrap_pairs,
    bootstrap_ranking,
    delta_table,
    percentile_interval,
    resample_counts,
)
from contrastive.evaluation.cache import baseline_cache_key, cache_path, cached_embeddings
from contrastive.evaluation.eval_sets import EvalSet, build_eval_set, eval_set_for, split_questions
from contrastive.evaluation.evaluator import EvalResult, Evaluator, format_table
from contrastive.evaluation.metrics import (
    COUNT_KEYS,
    PAIR_KEYS,
    Scored,
    blocked_top_k,
    metric_keys,
    pair_metrics,
    pair_metrics_weighted,
    pair_scores,
    ranking_keys,
    ranking_per_query,
    retrieval_per_query,
    score_embeddings,
    scoring_args,
)

__all__ = [
    "COUNT_KEYS",
    "PAIR_KEYS",
    "EvalResult",
    "EvalSet",
    "Evaluator",
    "Scored",
    "baseline_cache_key",
    "blocked_top_k",
    "bootstrap_pairs",
    "bootstrap_ranking",
    "build_eval_set",
    "cache_path",
    "cached_embeddings",
    "delta_table",
    "eval_set_for",
    "format_table",
    "metric_keys",
    "pair_metrics",
    "pair_metrics_weighted",
    "pair_scores",
    "percentile_interval",
    "ranking_keys",
    "ranking_per_query",
    "resample_counts",
    "retrieval_per_query",
    "score_embeddings",
    "scoring_args",
    "split_questions",
]
