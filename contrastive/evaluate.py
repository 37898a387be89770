"""Retrieval and pair metrics beside the untuned baseline, paired bootstrap CIs, the baseline cache; a CLI.

`python -m contrastive.evaluate model=<checkpoint dir or hub id> [data=fixture] [split=test] [overrides]
[--json out.json]` scores a checkpoint beside the untuned `model.name_or_path` on one split.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from contrastive import CONF_DIR
from contrastive.cli import user_errors
from contrastive.data import PreparedData, question_key, read_questions
from contrastive.errors import ConfigError, DataError
from contrastive.model import backend_args, fingerprint, load_model
from contrastive.utils import (
    fmt_delta,
    fmt_metric,
    json_digest,
    json_safe,
    sha256_hex,
    write_atomic,
    write_json,
    write_text_atomic,
)

log = logging.getLogger(__name__)

PAIR_KEYS = ("pair_ap", "pair_best_f1", "pair_threshold", "pair_accuracy")
COUNT_KEYS = ("n_queries", "n_corpus", "n_pairs")
JSON_INTERNAL = ("details",)  # result keys that hold arrays, never written to metrics.json
BOOT_BLOCK_CELLS = 2_000_000  # bootstrap resamples are drawn in blocks of about this many weights

Model = Any  # a SentenceTransformer (kept loose: tests pass stand-ins)
ModelSource = Any  # a model, a zero-argument callable returning one, or None (load cfg.model lazily)


# ---------------------------------------------------------------- metric names
def ranking_keys(k: int, map_k: int) -> tuple[str, ...]:
    """The ranking metric names for cut-offs k (MRR, nDCG, Recall) and map_k (MAP), in table order."""
    names = (f"mrr_at_{k}", f"ndcg_at_{k}", "recall_at_1", f"recall_at_{k}", f"map_at_{map_k}")
    return tuple(dict.fromkeys(names))


def metric_keys(k: int, map_k: int) -> tuple[str, ...]:
    """Every metric that gets a delta: ranking metrics then pair metrics."""
    return ranking_keys(k, map_k) + PAIR_KEYS


# ---------------------------------------------------------------- the evaluation set
@dataclass
class EvalSet:
    """What a model is scored on for one split: corpus, queries and labeled pairs, all as corpus rows.

    Corpus rows [0, n_split) are the split's questions (sorted by key), the rest distractors, whose
    component is -1 so they are never relevant and never queries.
    """

    split: str
    keys: list[str]
    texts: list[str]
    comp: np.ndarray  # duplicate component per corpus row; -1 for distractors
    n_split: int
    queries: np.ndarray  # corpus rows that are queries
    n_relevant: np.ndarray  # relevant corpus rows per query (the other members of its component)
    pair_rows: np.ndarray  # (n_pairs, 2) corpus rows of each labeled pair
    pair_labels: np.ndarray  # int 0/1 per pair
    protocol: dict[str, Any] = field(default_factory=dict)  # distractor settings, for the cache key

    @property
    def corpus_hash(self) -> str:
        """A hash of the corpus keys in order: embeddings cached for it line up row by row."""
        return sha256_hex("\n".join(self.keys))


def split_questions(frame: pd.DataFrame) -> pd.DataFrame:
    """The split's unique questions sorted by key: columns key, text (first occurrence), comp."""
    both = pd.concat(
        [
            frame[["key1", "question1", "comp1"]].set_axis(["key", "text", "comp"], axis=1),
            frame[["key2", "question2", "comp2"]].set_axis(["key", "text", "comp"], axis=1),
        ],
        ignore_index=True,
    )
    unique = both.drop_duplicates("key").sort_values("key", kind="stable").reset_index(drop=True)
    unique["text"] = unique["text"].astype(str)
    unique["comp"] = unique["comp"].astype(np.int64)
    return unique


def distractor_questions(
    spec: str, data: PreparedData, exclude: set[str], max_n: int | None, seed: int
) -> pd.DataFrame:
    """The distractors (key, text) sorted by key: none, the train split's questions, or a file's; capped."""
    if spec == "none":
        return pd.DataFrame({"key": [], "text": []}, dtype=object)
    if spec == "train":
        if "train" not in data.splits:
            raise ConfigError("eval.distractors='train': the data has no train split")
        pool = split_questions(data.splits["train"])[["key", "text"]]
    else:
        texts = read_questions(spec, "eval.distractors")
        pool = pd.DataFrame({"key": [question_key(t) for t in texts], "text": texts})
        pool = pool.drop_duplicates("key").sort_values("key", kind="stable")
    pool = pool[~pool["key"].isin(exclude)].reset_index(drop=True)
    if max_n is not None and len(pool) > max_n:
        keep = np.sort(np.random.default_rng(seed).choice(len(pool), size=int(max_n), replace=False))
        pool = pool.iloc[keep].reset_index(drop=True)
    return pool


def build_eval_set(
    frame: pd.DataFrame, split: str, distractors: pd.DataFrame | None = None, protocol: Mapping[str, Any] | None = None
) -> EvalSet:
    """Corpus (split questions + distractors), queries (component >= 2 members) and labeled pairs."""
    questions = split_questions(frame)
    extra = distractors if distractors is not None else pd.DataFrame({"key": [], "text": []})
    extra = extra[~extra["key"].isin(set(questions["key"]))]
    keys = questions["key"].tolist() + extra["key"].tolist()
    texts = questions["text"].tolist() + extra["text"].astype(str).tolist()
    comp = np.concatenate([questions["comp"].to_numpy(np.int64), np.full(len(extra), -1, np.int64)])
    sizes = questions["comp"].map(questions["comp"].value_counts()).to_numpy(np.int64)
    queries = np.flatnonzero(sizes >= 2)
    row_of = {key: i for i, key in enumerate(questions["key"])}
    pair_rows = np.stack(
        [frame["key1"].map(row_of).to_numpy(np.int64), frame["key2"].map(row_of).to_numpy(np.int64)], axis=1
    ).reshape(-1, 2)
    return EvalSet(
        split=split,
        keys=keys,
        texts=texts,
        comp=comp,
        n_split=len(questions),
        queries=queries,
        n_relevant=sizes[queries] - 1,
        pair_rows=pair_rows,
        pair_labels=frame["label"].to_numpy(np.int64),
        protocol=dict(protocol or {}),
    )


def eval_set_from_cfg(cfg: DictConfig, data: PreparedData, split: str | None = None) -> EvalSet:
    """The evaluation set the config describes (eval.split unless `split`), distractors included."""
    ev = cfg.eval
    split = split or ev.split
    if split not in data.splits:
        raise ConfigError(f"eval.split={split!r}: the data has splits {', '.join(data.splits)}")
    frame = data.splits[split]
    if frame.empty:
        raise DataError(f"eval.split={split!r}: the split holds no pairs")
    spec = str(ev.distractors)
    exclude = set(frame["key1"]) | set(frame["key2"])
    extra = distractor_questions(spec, data, exclude, ev.max_distractors, int(ev.seed))
    protocol = {"distractors": spec, "max_distractors": ev.max_distractors, "seed": int(ev.seed)}
    if spec not in ("none", "train"):
        protocol["distractors_sha256"] = sha256_hex(Path(spec).expanduser().read_bytes())
    return build_eval_set(frame, split, extra, protocol)


_EVAL_SETS: dict[tuple, EvalSet] = {}


def cached_eval_set(cfg: DictConfig, data: PreparedData, split: str | None = None) -> EvalSet:
    """`eval_set_from_cfg`, remembered for the same data object, split and distractor settings."""
    ev = cfg.eval
    key = (id(data), data.fingerprint, split or ev.split, str(ev.distractors), ev.max_distractors, ev.seed)
    if key not in _EVAL_SETS:
        if len(_EVAL_SETS) >= 4:
            _EVAL_SETS.pop(next(iter(_EVAL_SETS)))
        _EVAL_SETS[key] = eval_set_from_cfg(cfg, data, split)
    return _EVAL_SETS[key]


# ---------------------------------------------------------------- encoding
def _dimension(model: Model) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        if hasattr(model, name):
            return int(getattr(model, name)())
    raise TypeError(f"cannot tell the embedding dimension of {type(model).__name__}")


def encode(model: Model, texts: Sequence[str], batch_size: int, show_progress: bool = True) -> np.ndarray:
    """Embeddings of `texts` as float32 rows of unit length, in input order.

    Batched longest first by token count (the model's tokenizer, truncated at its max_seq_length), at most
    `batch_size` texts and about `batch_size` x the median token count in padded tokens per batch, so the
    long-text batches are smaller and pad less: on QQP val questions ~1.1x the real tokens, against ~1.3x
    sorted by characters. A model without a tokenizer is batched by characters, `batch_size` texts at a time.
    """
    from tqdm.auto import tqdm

    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, _dimension(model)), dtype=np.float32)
    tokenizer = getattr(model, "tokenizer", None)
    if callable(tokenizer):
        limit = getattr(model, "max_seq_length", None)
        ids = tokenizer(texts, truncation=bool(limit), max_length=limit)["input_ids"]
        lengths = [len(row) for row in ids]
        budget = batch_size * max(1.0, float(np.median(lengths)))
    else:
        lengths, budget = [len(t) for t in texts], float("inf")
    order = np.argsort([-n for n in lengths], kind="stable")
    batches: list[list[int]] = [[]]
    for i in order:  # longest first: a batch's first text sets its padded length
        current = batches[-1]
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[current[0]] > budget):
            batches.append(current := [])
        current.append(int(i))
    out: np.ndarray | None = None
    with tqdm(total=len(texts), desc="encode", unit="q", disable=not show_progress, leave=False) as bar:
        for rows in batches:
            emb = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
            emb = np.asarray(emb, dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[rows] = emb
            bar.update(len(rows))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


# ---------------------------------------------------------------- retrieval
def _block_top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest scores and their columns; among equal scores the lower column wins."""
    width = block.shape[1]
    if k >= width:
        return block, np.broadcast_to(np.arange(width), block.shape).copy()
    kth = np.partition(block, width - k, axis=1)[:, width - k][:, None]
    keep = block > kth
    need = k - keep.sum(axis=1)
    tied = block == kth
    extra = tied.sum(axis=1) > need  # rows where only the lowest-column ties fit
    keep[~extra] |= tied[~extra]
    if extra.any():
        rank = np.cumsum(tied[extra], axis=1, dtype=np.int32)
        keep[extra] |= tied[extra] & (rank <= need[extra, None])
    cols = np.nonzero(keep)[1].reshape(-1, k)
    return np.take_along_axis(block, cols, axis=1), cols


def top_k(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    query_rows: np.ndarray,
    k: int,
    chunk_size: int,
    query_chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows (and scores) per query by dot product, the query's own row excluded.

    Scores one (query_chunk x chunk_size) block at a time, keeps each block's top k, and merges;
    ties go to the lower corpus row, so the result does not depend on the chunk sizes.
    """
    n_corpus = len(corpus_emb)
    k = max(0, min(k, n_corpus - 1))
    idx = np.empty((len(query_emb), k), dtype=np.int64)
    scores = np.empty((len(query_emb), k), dtype=np.float32)
    for q0 in range(0, len(query_emb), query_chunk):
        q = query_emb[q0 : q0 + query_chunk]
        own = query_rows[q0 : q0 + query_chunk]
        best_s = np.empty((len(q), 0), dtype=np.float32)
        best_i = np.empty((len(q), 0), dtype=np.int64)
        for c0 in range(0, n_corpus, chunk_size):
            block = q @ corpus_emb[c0 : c0 + chunk_size].T
            local = own - c0
            inside = np.flatnonzero((local >= 0) & (local < block.shape[1]))
            block[inside, local[inside]] = -np.inf
            s, i = _block_top_k(block, k)
            s = np.concatenate([best_s, s], axis=1)
            i = np.concatenate([best_i, i + c0], axis=1)
            order = np.lexsort((i, -s), axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        idx[q0 : q0 + len(q)], scores[q0 : q0 + len(q)] = best_i, best_s
    return idx, scores


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
    idx, _ = top_k(emb[es.queries], emb, es.queries, max(k, map_k), chunk_size, query_chunk)
    hits = es.comp[idx] == es.comp[es.queries][:, None]
    return ranking_per_query(hits, es.n_relevant, k, map_k)


# ---------------------------------------------------------------- pair classification
def pair_scores(emb: np.ndarray, es: EvalSet) -> np.ndarray:
    """Cosine score of each labeled pair (embeddings are unit length)."""
    return np.einsum("ij,ij->i", emb[es.pair_rows[:, 0]], emb[es.pair_rows[:, 1]]).astype(np.float64)


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
    """AP of the cosine scores, best-F1 threshold, F1 and accuracy there."""
    if len(scores) == 0:
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


def scoring_args(ev: DictConfig) -> dict[str, int]:
    """The cut-offs and block sizes of eval config `ev`, as keyword arguments of the scoring functions."""
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


# ---------------------------------------------------------------- paired bootstrap
def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` bootstrap resamples of n items as counts per item (rows sum to n)."""
    draws = rng.integers(0, n, size=(size, n))
    flat = (draws + np.arange(size)[:, None] * n).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n)


def _boot_blocks(n: int, n_boot: int) -> list[int]:
    per = max(1, BOOT_BLOCK_CELLS // max(n, 1))
    return [min(per, n_boot - start) for start in range(0, n_boot, per)]


def percentile_interval(deltas: np.ndarray, ci: float) -> tuple[float | None, float | None]:
    """The central `ci` percentile interval of the finite values (None, None when there are none)."""
    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        return None, None
    lo, hi = np.quantile(finite, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def bootstrap_ranking(
    ft: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], n_boot: int, ci: float, seed: int
) -> dict[str, tuple[float | None, float | None]]:
    """Paired bootstrap CI over queries of mean(ft) - mean(base), for each ranking metric."""
    names = list(ft)
    n = len(next(iter(ft.values()))) if ft else 0
    if n_boot == 0 or n == 0:
        return {name: (None, None) for name in names}
    diff = np.stack([ft[m] - base[m] for m in names], axis=1)  # (n, metrics)
    rng = np.random.default_rng([seed, 1])
    deltas = np.concatenate([resample_counts(rng, n, b) @ diff / n for b in _boot_blocks(n, n_boot)])
    return {name: percentile_interval(deltas[:, j], ci) for j, name in enumerate(names)}


def bootstrap_pairs(
    ft_scores: np.ndarray, base_scores: np.ndarray, labels: np.ndarray, n_boot: int, ci: float, seed: int
) -> dict[str, tuple[float | None, float | None]]:
    """Paired bootstrap CI over labeled pairs of ft - base, for each pair metric (threshold re-chosen)."""
    n = len(labels)
    if n_boot == 0 or n == 0:
        return {name: (None, None) for name in PAIR_KEYS}
    rng = np.random.default_rng([seed, 2])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PAIR_KEYS}
    for size in _boot_blocks(n, n_boot):
        weights = resample_counts(rng, n, size)
        a = pair_metrics_weighted(ft_scores, labels, weights)
        b = pair_metrics_weighted(base_scores, labels, weights)
        for name in PAIR_KEYS:
            parts[name].append(a[name] - b[name])
    return {name: percentile_interval(np.concatenate(parts[name]), ci) for name in PAIR_KEYS}


def delta_table(
    ft: Scored, base: Scored, labels: np.ndarray, n_boot: int, ci: float, seed: int
) -> dict[str, dict[str, float | None]]:
    """Delta (fine-tuned - baseline) of each ranking and pair metric with its paired bootstrap CI."""
    intervals = bootstrap_ranking(ft.per_query, base.per_query, n_boot, ci, seed)
    intervals.update(bootstrap_pairs(ft.pair_scores, base.pair_scores, labels, n_boot, ci, seed))
    table = {}
    for name, (lo, hi) in intervals.items():
        delta = ft.metrics[name] - base.metrics[name]
        table[name] = {"delta": delta if math.isfinite(delta) else None, "ci_low": lo, "ci_high": hi}
    return table


# ---------------------------------------------------------------- the baseline and its cache
def baseline_cache_key(cfg: DictConfig, data: PreparedData, es: EvalSet) -> dict[str, Any]:
    """What the baseline's embeddings depend on: model weights, data, split, corpus and protocol."""
    return {
        "model": fingerprint(cfg.model.name_or_path),
        "data": data.fingerprint,
        "split": es.split,
        "corpus": es.corpus_hash,
        "max_seq_length": cfg.model.max_seq_length,
        "backend": backend_args(cfg.model)["backend"],
        **es.protocol,
    }


def cache_path(cache_dir: str | os.PathLike, key: Mapping[str, Any]) -> Path:
    """The .npy file of a cache key: `<split>-<hash of the key>.npy` under cache_dir."""
    digest = json_digest(dict(key))
    return Path(cache_dir).expanduser() / f"{key['split']}-{digest}.npy"


def _read_cached(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("baseline cache %s unreadable (%s); recomputing", path, exc)
        return None
    if emb.ndim != 2 or emb.shape[0] != rows or emb.dtype != np.float32:
        log.warning("baseline cache %s has shape %s, expected %d rows; recomputing", path, emb.shape, rows)
        return None
    return emb


def cached_embeddings(
    path: Path, key: Mapping[str, Any], rows: int, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Embeddings from `path` when it holds `rows` rows, else `compute()` written there atomically."""
    emb = _read_cached(path, rows)
    if emb is not None:
        return emb, True
    emb = np.ascontiguousarray(compute(), dtype=np.float32)
    write_atomic(path, lambda handle: np.save(handle, emb, allow_pickle=False))
    write_text_atomic(path.with_suffix(".json"), json.dumps(dict(key), indent=2, sort_keys=True, default=str))
    return emb, False


def materialize(source: ModelSource, cfg: DictConfig) -> Model:
    """A model from a model, a zero-argument loader, or None (load cfg.model.name_or_path, untuned)."""
    if source is None:
        return load_model(
            cfg.model.name_or_path,
            cfg.model.max_seq_length,
            cfg.get("trainer", {}).get("device"),
            **backend_args(cfg.model),
        )
    if hasattr(source, "encode"):
        return source
    return source()


def baseline_embeddings(
    cfg: DictConfig,
    data: PreparedData,
    es: EvalSet,
    source: ModelSource = None,
    precomputed: np.ndarray | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, bool, Path]:
    """The untuned model's embeddings of an eval set: from the cache, else computed and cached.

    On a miss: `precomputed` when given, else encoded by `source` (an untuned model, a loader, or None
    to load cfg.model.name_or_path). Returns (embeddings, cache hit, cache path).
    """
    key = baseline_cache_key(cfg, data, es)
    path = cache_path(cfg.eval.cache_dir, key)

    def compute() -> np.ndarray:
        if precomputed is not None:
            return precomputed
        log.info("baseline cache miss: encoding %d questions with %s", len(es.texts), cfg.model.name_or_path)
        return encode(materialize(source, cfg), es.texts, cfg.eval.batch_size, show_progress)

    emb, hit = cached_embeddings(path, key, len(es.texts), compute)
    return emb, hit, path


def warm_baseline(untuned: Model, cfg: DictConfig, data: PreparedData, split: str | None = None) -> bool:
    """Fill the baseline cache with a model that is still untuned (before training): no second model load.

    Returns True when the cache already held the embeddings.
    """
    if not cfg.eval.baseline:
        return True
    return baseline_embeddings(cfg, data, cached_eval_set(cfg, data, split), untuned, None)[1]


# ---------------------------------------------------------------- one run
@dataclass
class EvalDetails:
    """The arrays behind a result (kept out of metrics.json): the eval set, embeddings, per-query scores."""

    eval_set: EvalSet
    embeddings: dict[str, np.ndarray]
    scored: dict[str, Scored]
    n_boot: int
    ci: float
    baseline_cache: str | None = None
    baseline_cache_hit: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def objective_entry(names: Any, metrics: Mapping[str, float]) -> dict[str, Any]:
    """{"name", "value"} of eval.objective (a metric name, or a list of them)."""
    if isinstance(names, str):
        return {"name": names, "value": metrics[names]}
    names = list(names)
    return {"name": names, "value": [metrics[n] for n in names]}


def evaluate_run(
    model: Model,
    cfg: DictConfig,
    data: PreparedData,
    split: str | None = None,
    baseline_model: ModelSource = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score `model` and the untuned baseline (cached) on one split; the metrics.json dict plus `details`.

    `baseline_model` is only used when the baseline cache misses: a model, a loader, or None to load
    cfg.model.name_or_path; passing `model` itself reuses its embeddings (the evaluated model is untuned).
    """
    ev = cfg.eval
    es = cached_eval_set(cfg, data, split)
    clock = time.perf_counter()
    emb = encode(model, es.texts, ev.batch_size, show_progress)
    seconds = {"encode_finetuned": time.perf_counter() - clock}
    clock = time.perf_counter()
    ft = score_embeddings(emb, es, **scoring_args(ev))
    seconds["score_finetuned"] = time.perf_counter() - clock
    details = EvalDetails(
        eval_set=es,
        embeddings={"finetuned": emb},
        scored={"finetuned": ft},
        n_boot=int(ev.n_boot),
        ci=float(ev.ci),
        seconds=seconds,
    )
    result: dict[str, Any] = {
        "split": es.split,
        "objective": objective_entry(ev.objective, ft.metrics),
        "finetuned": ft.metrics,
        "baseline": None,
        "delta": None,
    }
    if ev.baseline:
        clock = time.perf_counter()
        reuse = emb if baseline_model is model else None  # the evaluated model is the untuned one
        base_emb, hit, path = baseline_embeddings(cfg, data, es, baseline_model, reuse, show_progress)
        seconds["baseline_embeddings"] = time.perf_counter() - clock
        base = score_embeddings(base_emb, es, **scoring_args(ev))
        clock = time.perf_counter()
        result["delta"] = delta_table(ft, base, es.pair_labels, int(ev.n_boot), float(ev.ci), int(ev.seed))
        seconds["bootstrap"] = time.perf_counter() - clock
        result["baseline"] = base.metrics
        details.embeddings["baseline"] = base_emb
        details.scored["baseline"] = base
        details.baseline_cache, details.baseline_cache_hit = str(path), hit
    result["details"] = details
    return result


def intermediate_eval_set(cfg: DictConfig, data: PreparedData, split: str | None = None) -> EvalSet:
    """The eval set of intermediate objectives: the split itself, or a seeded subset of whole linked groups
    of at most `eval.intermediate_max_pairs` pairs (cheap enough to evaluate often on a CPU)."""
    ev = cfg.eval
    cap = ev.get("intermediate_max_pairs")
    split = split or ev.split
    if not cap:
        return cached_eval_set(cfg, data, split)
    key = ("intermediate", id(data), data.fingerprint, split, int(cap), int(ev.seed))
    if key not in _EVAL_SETS:
        from contrastive.pairs import cap_pairs

        frame = cap_pairs(data.splits[split], int(cap), int(ev.seed))
        _EVAL_SETS[key] = build_eval_set(frame, split, None, {"distractors": "none", "subset_pairs": int(cap)})
    return _EVAL_SETS[key]


def objective_value(model: Model, cfg: DictConfig, data: PreparedData, split: str | None = None) -> float:
    """The (first) eval.objective of `model` alone, no baseline and no bootstrap: for intermediate steps."""
    ev = cfg.eval
    es = intermediate_eval_set(cfg, data, split)
    name = ev.objective if isinstance(ev.objective, str) else list(ev.objective)[0]
    emb = encode(model, es.texts, ev.batch_size, show_progress=False)
    if name in PAIR_KEYS:
        return pair_metrics(pair_scores(emb, es), es.pair_labels)[name]
    per_query = retrieval_per_query(emb, es, **scoring_args(ev))
    return float(per_query[name].mean()) if len(es.queries) else float("nan")


def to_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result without its arrays (`details`), JSON-safe: what metrics.json holds."""
    return json_safe({k: v for k, v in result.items() if k not in JSON_INTERNAL})


# ---------------------------------------------------------------- the table
def format_table(results: Mapping[str, Any]) -> str:
    """baseline | fine-tuned | delta [CI] per metric, with the split's sizes on top."""
    ft, base = results["finetuned"], results.get("baseline")
    delta = results.get("delta") or {}
    details = results.get("details")
    level = f"{details.ci:.0%} CI" if isinstance(details, EvalDetails) else "CI"
    head = [f"split={results.get('split')}"] + [f"{n[2:]}={int(ft[n]):,}" for n in COUNT_KEYS if n in ft]
    if isinstance(details, EvalDetails):
        head.append(f"distractors={len(details.eval_set.keys) - details.eval_set.n_split:,}")
        if base is not None:
            head.append(f"bootstrap={details.n_boot}")
    names = [n for n in ft if n not in COUNT_KEYS]
    width = max(len(n) for n in [*names, "metric"]) + 2
    lines = ["  ".join(head)]
    if base is None:
        lines.append(f"{'metric':<{width}}{'fine-tuned':>11}")
        lines += [f"{n:<{width}}{fmt_metric(ft[n]):>11}" for n in names]
    else:
        lines.append(f"{'metric':<{width}}{'baseline':>10}{'fine-tuned':>12}   delta [{level}]")
        for n in names:
            d = delta.get(n, {})
            values = f"{n:<{width}}{fmt_metric(base.get(n)):>10}{fmt_metric(ft[n]):>12}"
            lines.append(f"{values}   {fmt_delta(d)}")
    objective = results.get("objective")
    if objective:
        lines.append(f"objective: {objective['name']} = {objective['value']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI
USAGE = """\
usage: python -m contrastive.evaluate model=<checkpoint dir or hub id> [data=<option>] [split=val|test|train]
                                      [other Hydra overrides ...] [--json out.json]

Scores the checkpoint beside the untuned baseline (model.name_or_path, all-MiniLM-L6-v2 by default) on one
split, with paired bootstrap CIs of the deltas. Overrides compose conf/train.yaml as in training, e.g.
eval.distractors=train eval.max_distractors=5000 eval.n_boot=200."""


def parse_args(argv: Sequence[str]) -> tuple[str, list[str], str | None]:
    """(checkpoint, Hydra overrides, --json path) from the command line; `split=` becomes eval.split."""
    checkpoint, json_out, overrides = None, None, []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if arg == "--json":
            json_out = next(args, None)
            if not json_out:
                raise ConfigError("--json: needs a file path, e.g. --json metrics.json")
        elif arg.startswith("--json="):
            json_out = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise ConfigError(f"{arg}: unknown option (see --help)")
        elif arg.startswith("model="):
            checkpoint = arg.split("=", 1)[1]
        elif arg.startswith("split="):
            overrides.append("eval.split=" + arg.split("=", 1)[1])
        else:
            overrides.append(arg)
    if not checkpoint:
        raise ConfigError("model: missing; pass model=<checkpoint dir or hub id> (see --help)")
    return checkpoint, overrides, json_out


def compose_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """conf/<config_name>.yaml composed with the overrides (Hydra's compose API; no run directory)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"overrides {' '.join(overrides)!r}: {first}") from exc


def run_cli(argv: Sequence[str]) -> dict[str, Any]:
    """The CLI's work: compose, load the data and the checkpoint, evaluate, print, write --json."""
    from contrastive.data import prepare

    checkpoint, overrides, json_out = parse_args(argv)
    cfg = compose_config(overrides)
    checkpoint_fp = fingerprint(checkpoint)  # a missing directory fails here, before any work
    data = prepare(cfg.data)
    model = load_model(checkpoint, cfg.model.max_seq_length, cfg.trainer.get("device"), **backend_args(cfg.model))
    untuned = cfg.eval.baseline and checkpoint_fp == fingerprint(cfg.model.name_or_path)
    result = evaluate_run(model, cfg, data, baseline_model=model if untuned else None)
    print(format_table(result), flush=True)
    if json_out:
        write_json(to_json({**result, "model": checkpoint}), Path(json_out).expanduser().resolve())
        print(f"wrote {json_out}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("contrastive").setLevel(logging.INFO)
    with user_errors():
        run_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
