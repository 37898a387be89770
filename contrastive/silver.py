"""Silver pairs (AugSBERT): the teacher labels pairs of train questions that nobody labeled (`data.silver`).

The train split has ~100k questions but only ~58k labeled pairs. Candidates are each train question's
`neighbours` nearest train questions by the untuned model's cosine (the project's one exact kernel,
contrastive.topk.blocked_top_k, over the mining stage's cached embeddings), dropping pairs inside one duplicate
component (already known duplicates) and pairs already labeled; an unordered pair is a candidate once. The teacher
scores them; P(duplicate) >= `positive_min` becomes a silver positive (label 1), <= `negative_max` a silver hard
negative (label 0), the rest is left out; a seeded `share` is kept. Silver rows are labeled train pairs like the
others (columns of the prepared split plus `silver` and `teacher_score`): positives and their triplets, the
auxiliary pairs and the mined negatives all see them, and a silver positive MERGES the duplicate components of its
two questions (`merge_components`), so the component sampler never puts them in one batch as negatives and the miner
never hands one back as the other's negative.

Only train-split questions are ever candidates: val and test questions never reach the teacher or a silver pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from contrastive.data import UnionFind
from contrastive.mining import Corpus
from contrastive.topk import blocked_top_k

SAMPLE_FILE = "silver_sample.csv"  # in the run's output dir; MLflow artifact silver/silver_sample.csv
CHUNK_SIZE, QUERY_CHUNK = 4096, 1024  # blocked_top_k's blocks (its result does not depend on them)


def candidate_pairs(emb: np.ndarray, corpus: Corpus, labeled: pd.DataFrame, neighbours: int) -> np.ndarray:
    """(n, 2) corpus rows (lower row first, sorted) of each question's `neighbours` nearest other questions that are
    neither in its duplicate component nor labeled with it (any label)."""
    n = len(emb)
    depth = min(int(neighbours), max(n - 1, 0))
    if depth == 0:
        return np.zeros((0, 2), dtype=np.int64)
    queries = np.arange(n)
    idx, _ = blocked_top_k(emb, emb, queries, depth, CHUNK_SIZE, QUERY_CHUNK)
    a = np.repeat(queries, idx.shape[1])
    b = idx.ravel()
    keep = (b >= 0) & (corpus.comp[a] != corpus.comp[np.maximum(b, 0)])
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    codes = np.unique(lo * n + hi)
    r1 = labeled["key1"].map(corpus.row_of).to_numpy(np.int64)
    r2 = labeled["key2"].map(corpus.row_of).to_numpy(np.int64)
    known = np.minimum(r1, r2) * n + np.maximum(r1, r2)
    codes = codes[~np.isin(codes, known)]
    return np.stack(np.divmod(codes, n), axis=1).astype(np.int64)


def seeded_subset(count: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of `size` out of `count` (all when size is None or >= count)."""
    if size is None or size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


def label_pairs(scores: np.ndarray, cfg: Any) -> np.ndarray:
    """1 (silver positive), 0 (silver negative) or -1 (left out) of each teacher score."""
    labels = np.full(len(scores), -1, dtype=np.int64)
    labels[scores >= float(cfg.positive_min)] = 1
    if cfg.negative_max is not None:
        labels[scores <= float(cfg.negative_max)] = 0
    return labels


def silver_rows(corpus: Corpus, rows: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The kept silver pairs as prepared-split rows: question1/2, key1/2, comp1/2 (the questions' own components,
    before merging), label, silver=True and the teacher's score."""
    kept = labels >= 0
    r1, r2 = rows[kept, 0], rows[kept, 1]
    return pd.DataFrame(
        {
            "question1": [corpus.texts[i] for i in r1],
            "question2": [corpus.texts[i] for i in r2],
            "key1": [corpus.keys[i] for i in r1],
            "key2": [corpus.keys[i] for i in r2],
            "comp1": corpus.comp[r1],
            "comp2": corpus.comp[r2],
            "label": labels[kept],
            "qid1": None,
            "qid2": None,
            "silver": True,
            "teacher_score": scores[kept].astype(float),
        }
    )


def merge_components(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with comp1/comp2 re-numbered so that every label=1 row links one component: a silver positive
    between two components makes them one (the merged component takes the smallest old id)."""
    dup = frame[frame["label"] == 1]
    found = UnionFind()
    for a, b in zip(dup["comp1"].astype(int), dup["comp2"].astype(int)):
        if a != b:
            found.union(a, b)
    new = {comp: found.find(comp) for comp in list(found.parent)}  # the root is the smallest id (UnionFind)
    return frame.assign(
        comp1=frame["comp1"].map(lambda c: new.get(int(c), int(c))).astype(np.int64),
        comp2=frame["comp2"].map(lambda c: new.get(int(c), int(c))).astype(np.int64),
    )


def build_silver(
    pool: pd.DataFrame,
    cfg: Any,
    score: Callable[[list[str], list[str]], np.ndarray],
    embeddings: Callable[[Corpus], np.ndarray],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Silver rows among the train split `pool`'s questions (module docstring) and their counts.

    `score(first, second)` is the teacher's P(duplicate); `embeddings(corpus)` the untuned model's unit-length rows
    of the corpus (the mining stage's cache)."""
    corpus = Corpus.of(pool)
    rows = candidate_pairs(embeddings(corpus), corpus, pool, int(cfg.neighbours))
    found = len(rows)
    rows = rows[seeded_subset(found, cfg.max_candidates, int(cfg.seed))]
    scores = score([corpus.texts[i] for i in rows[:, 0]], [corpus.texts[i] for i in rows[:, 1]])
    labels = label_pairs(scores, cfg)
    frame = silver_rows(corpus, rows, scores, labels)
    n_keep = int(round(len(frame) * float(cfg.share)))
    frame = frame.iloc[seeded_subset(len(frame), n_keep, int(cfg.seed) + 1)].reset_index(drop=True)
    stats = {
        "silver_candidates": found,
        "silver_scored": len(rows),
        "silver_positive": int((labels == 1).sum()),
        "silver_negative": int((labels == 0).sum()),
        "silver_left_out": int((labels == -1).sum()),
        "silver_used": len(frame),
        "silver_used_positive": int((frame["label"] == 1).sum()),
    }
    return frame, stats


def sample(frame: pd.DataFrame, n_rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample of `n_rows` silver pairs: the two questions, the teacher's score and the label given."""
    picked = frame.iloc[seeded_subset(len(frame), n_rows, seed)]
    return picked[["question1", "question2", "teacher_score", "label"]].reset_index(drop=True)
