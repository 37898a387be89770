"""Hard negatives mined by the untuned model, component-aware and cached on disk (`loss.negatives: mined | both`).

For every positive (anchor, positive) of the training pairs, the candidates are the anchor's nearest questions of
the whole train split by the untuned model's cosine, down to its `range_max`-th nearest question that is not a known
duplicate (so a large duplicate component never fills the window: on the shared QQP split, components reach 95
questions). Each candidate is removed by the first of these filters that applies, and each filter counts what it
removed:

    self_positive      the positive itself (the anchor is never its own neighbour)
    same_component     a member of the anchor's duplicate component (data.components: label=1 pairs, chained)
    labeled_duplicate  labeled a duplicate (label=1) of a member of that component; the component ids already hold
                       every such pair, so on prepared data this counts 0: it guards against comp ids that disagree
                       with the labels, it never relies on them
    range              ranked before `range_min` among the anchor's neighbours that are not known duplicates
    max_score          cosine to the anchor above `max_score`
    margin             cosine above (1 - `relative_margin`) x the positive's cosine (likely an unlabeled duplicate)
    teacher            (`teacher_max` set) the cross-encoder teacher's P(duplicate) of (anchor, candidate) above
                       `teacher_max`: RocketQA's denoised hard negatives. The teacher scores each positive's first
                       `teacher_depth` survivors of the filters above (`denoise`, after the cached selection)

The best survivors are kept in rank order: `num_negatives` of them, plus one spare so that `negatives=both` can
skip a mined negative equal to the positive's labeled one (contrastive.pairs.build_examples).

Why not `sentence_transformers.util.mine_hard_negatives`: its filters (range, margin, max_score) know the
positive column only, not the duplicate components, so it hands back members of the anchor's own component (other
labeled duplicates) as negatives: on the shared QQP train split 152,882 of the 1,049,310 candidates looked at here
(7 per positive) are such members. Filtering its output afterwards would leave positives short of negatives it
had already discarded, and its rank window counts those members. Here the neighbours come from the project's one
exact kernel (contrastive.topk.blocked_top_k: blocked, never an N x N matrix, ties to the lower row), the
embeddings from model.encode (length-bucketed batches) through the embedding cache's reader and atomic writer
(evaluation.cache.cached_embeddings).

Caching, under `loss.mining.cache_dir`: the question embeddings as `train-<digest>.npy`, keyed by the model
(weights fingerprint, max_seq_length) and the corpus only, so a sweep over mining settings encodes once; the mined
negatives as `mined-<digest>.npz` (one atomic write), keyed by model + data (the train split's pairs and questions,
the positives mined for) + the settings that change the result, so trials with the same settings mine once. The
evaluator's baseline cache is not reused: it holds one .npy per eval-set corpus (val or test questions, plus train
questions only under eval.distractors=train), which a training run's eval set (val, no distractors in the sweep)
does not contain. On 2 shared cores the first mining of the QQP train split (100,089 questions) takes ~8 min, nearly
all of it encoding; a change of mining settings then takes ~40 s, a cache hit under a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.data import fingerprint_frame
from contrastive.errors import DataError
from contrastive.evaluation.cache import cache_path, cached_embeddings
from contrastive.evaluation.eval_sets import split_questions
from contrastive.topk import blocked_top_k
from contrastive.utils import json_digest, sha256_hex, write_atomic, write_json

log = logging.getLogger(__name__)

FILTERS = ("self_positive", "same_component", "labeled_duplicate", "range", "max_score", "margin")
TEACHER_FILTER = "teacher"  # applied after FILTERS by `denoise` (the teacher's scores are cached on their own)
SAMPLE_FILE = "mining_sample.csv"  # in the run's output dir; MLflow artifact mining/mining_sample.csv
FORMAT = 2  # part of the cache key: bump when the filters or the cached arrays change
CHUNK_SIZE, QUERY_CHUNK = 4096, 1024  # blocked_top_k's blocks (its result does not depend on them)


def uses_mining(loss: Any) -> bool:
    """Whether the loss group asks for mined negatives (`hard_negatives=false` means no explicit negatives at all)."""
    return bool(loss.hard_negatives) and loss.negatives != "labeled"


def kept_columns(cfg: Any) -> int:
    """Candidates kept per positive by the selection: num_negatives + a spare, or teacher_depth for the teacher."""
    return int(cfg.teacher_depth) if cfg.teacher_max is not None else int(cfg.num_negatives) + 1


@dataclass
class Corpus:
    """The train split's unique questions sorted by key: texts and duplicate component per row."""

    keys: list[str]
    texts: list[str]
    comp: np.ndarray
    row_of: dict[str, int] = field(default_factory=dict)  # question key -> row
    key_of: dict[str, str] = field(default_factory=dict)  # question text -> its key in the pairs (qids merged)

    @classmethod
    def of(cls, pool: pd.DataFrame) -> Corpus:
        questions = split_questions(pool)
        keys = questions["key"].tolist()
        comp = questions["comp"].to_numpy(np.int64)
        key_of = dict(zip(pool["question2"].astype(str), pool["key2"]))
        key_of.update(zip(pool["question1"].astype(str), pool["key1"]))
        return cls(keys, questions["text"].tolist(), comp, {k: i for i, k in enumerate(keys)}, key_of)

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        """The corpus row of each text (by its key in the pairs); a text outside the corpus is a DataError."""
        keys = [self.key_of.get(t, t) for t in texts]
        missing = [k for k in keys if k not in self.row_of]
        if missing:
            raise DataError(f"mining: {len(missing)} positive question(s) not in the train split, e.g. {missing[0]!r}")
        return np.array([self.row_of[k] for k in keys], dtype=np.int64)

    def digest(self) -> str:
        """A hash of the keys, texts and component ids in row order."""
        text = sha256_hex("\x1f".join(self.keys) + "\x1e" + "\x1f".join(self.texts))
        return text + sha256_hex(self.comp.astype(np.int64).tobytes())


def labeled_duplicate_codes(pool: pd.DataFrame, corpus: Corpus) -> np.ndarray:
    """`comp * n + row` for every (component of a member, row labeled a duplicate of that member), sorted."""
    dup = pool[pool["label"] == 1]
    r1 = dup["key1"].map(corpus.row_of).to_numpy(np.int64)
    r2 = dup["key2"].map(corpus.row_of).to_numpy(np.int64)
    n = len(corpus.keys)
    codes = np.concatenate([corpus.comp[r1] * n + r2, corpus.comp[r2] * n + r1])
    return np.unique(codes)


# ---------------------------------------------------------------- the selection (pure numpy)
@dataclass
class Selection:
    """Per positive, the kept negatives best first (corpus rows, -1 past the last), their cosines and ranks."""

    rows: np.ndarray  # (n_positives, num_negatives + 1) int64
    scores: np.ndarray  # same shape, float32, NaN past the last
    ranks: np.ndarray  # same shape, int64 rank among the anchor's neighbours (0 = nearest), -1 past the last
    positive_scores: np.ndarray  # (n_positives,) float32
    stats: dict[str, int]
    teacher: np.ndarray | None = None  # same shape as rows: the teacher's P(duplicate) of each kept negative


def known_duplicates(comp: np.ndarray, labeled_codes: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """How many corpus rows are known duplicates of each query row: the other members of its component, plus rows
    labeled a duplicate of a member whose comp id says otherwise (none on prepared data)."""
    n = len(comp)
    _, comp_row, counts = np.unique(comp, return_inverse=True, return_counts=True)
    members = counts[comp_row[queries]] - 1
    code_comp, code_row = np.divmod(labeled_codes, max(n, 1))
    stray, stray_counts = np.unique(code_comp[comp[code_row] != code_comp], return_counts=True)
    if len(stray) == 0:
        return members
    at = np.minimum(np.searchsorted(stray, comp[queries]), len(stray) - 1)
    return members + np.where(stray[at] == comp[queries], stray_counts[at], 0)


def neighbours(emb: np.ndarray, queries: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's `depth` nearest corpus rows (itself excluded, all others at most) and their cosines, one
    blocked_top_k per distinct depth; row -1 (cosine -inf) past a query's depth."""
    depth = np.minimum(depth, max(len(emb) - 1, 0))
    idx = np.full((len(queries), int(depth.max(initial=0))), -1, dtype=np.int64)
    sims = np.full(idx.shape, -np.inf, dtype=np.float32)
    for k in np.unique(depth):
        rows = np.flatnonzero(depth == k)
        i, s = blocked_top_k(emb[queries[rows]], emb, queries[rows], int(k), CHUNK_SIZE, QUERY_CHUNK)
        idx[rows, : i.shape[1]], sims[rows, : s.shape[1]] = i, s
    return idx, sims


def window_depth(range_max: int, known: np.ndarray) -> np.ndarray:
    """range_max + the known duplicates rounded up to a power of two (few distinct depths, each one top-k pass)."""
    return range_max + np.where(known > 0, 2 ** np.ceil(np.log2(np.maximum(known, 1))).astype(np.int64), 0)


def select_negatives(
    emb: np.ndarray,
    comp: np.ndarray,
    anchors: np.ndarray,
    positives: np.ndarray,
    labeled_codes: np.ndarray,
    cfg: Any,
) -> Selection:
    """The mined negatives of each (anchor row, positive row) from unit-length embeddings `emb` (rows = corpus),
    with each filter's count (module docstring); `cfg` is the loss group's `mining` node.

    Ranks count the anchor's neighbours that are not known duplicates (self / positive, component members, labeled
    duplicates), so a large component never fills the rank window: a candidate is looked at when fewer than
    `range_max` such neighbours come before it."""
    n_corpus = len(emb)
    keep = kept_columns(cfg)
    queries, inverse = np.unique(anchors, return_inverse=True)
    depth = window_depth(int(cfg.range_max), known_duplicates(comp, labeled_codes, queries))
    idx, sims = neighbours(emb, queries, depth)
    cand, score = idx[inverse], sims[inverse]
    found = cand >= 0
    pos_score = np.einsum("ij,ij->i", emb[anchors], emb[positives]).astype(np.float32)
    anchor_comp = comp[anchors][:, None]
    masks = {
        "self_positive": (cand == anchors[:, None]) | (cand == positives[:, None]),
        "same_component": comp[cand] == anchor_comp,
        "labeled_duplicate": np.isin(anchor_comp * n_corpus + cand, labeled_codes),
    }
    other = found & ~(masks["self_positive"] | masks["same_component"] | masks["labeled_duplicate"])
    before = np.cumsum(other, axis=1) - other  # non-duplicate neighbours ranked before each cell
    rank = np.where(other, before, -1)
    masks["range"] = other & (before < int(cfg.range_min))
    masks["max_score"] = score > cfg.max_score if cfg.max_score is not None else np.zeros(cand.shape, bool)
    masks["margin"] = (
        score > (1.0 - cfg.relative_margin) * pos_score[:, None]
        if cfg.relative_margin is not None
        else np.zeros(cand.shape, bool)
    )
    looked = found & (before < int(cfg.range_max))
    stats = {
        "mining_corpus_questions": n_corpus,
        "mining_positives": len(anchors),
        "mining_anchors": len(queries),
        "mining_candidates": int(looked.sum()),
    }
    left = looked.copy()
    for name in FILTERS:
        hit = left & masks[name]
        stats[f"mining_removed_{name}"] = int(hit.sum())
        left &= ~hit
    stats.update(eligible_counts(left, int(cfg.num_negatives)))
    columns = {"rows": (cand, -1), "scores": (score, np.nan), "ranks": (rank, -1)}
    return Selection(**compact(left, columns, keep), positive_scores=pos_score, stats=stats)


def eligible_counts(left: np.ndarray, n: int) -> dict[str, int]:
    """How many eligible candidates are left, and how many positives have n of them, fewer, or none."""
    per_row = left.sum(axis=1)
    return {
        "mining_eligible": int(per_row.sum()),
        "mining_negatives": int(np.minimum(per_row, n).sum()),
        "mining_full": int((per_row >= n).sum()),
        "mining_fewer": int((per_row < n).sum()),
        "mining_none": int((per_row == 0).sum()),
    }


def compact(left: np.ndarray, columns: Mapping[str, tuple[np.ndarray, Any]], keep: int) -> dict[str, np.ndarray]:
    """Each array of `columns` (name -> (array, fill)) with its `left` cells first in column order, `keep` columns,
    `fill` past a row's last."""
    order = np.argsort(~left, axis=1, kind="stable")[:, :keep]  # the eligible columns first, in rank order
    valid = np.take_along_axis(left, order, axis=1)
    out = {}
    for name, (array, fill) in columns.items():
        full = np.full((len(left), keep), fill, dtype=array.dtype)
        full[:, : order.shape[1]] = np.where(valid, np.take_along_axis(array, order, axis=1), fill)
        out[name] = full
    return out


def denoise(sel: Selection, teacher_scores: np.ndarray, teacher_max: float, num_negatives: int) -> Selection:
    """The selection without the candidates whose teacher score (same shape as `sel.rows`, NaN where no candidate)
    is above `teacher_max`, compacted to num_negatives + a spare, with the teacher filter's count."""
    valid = sel.rows >= 0
    removed = valid & (teacher_scores > teacher_max)
    left = valid & ~removed
    columns = {
        "rows": (sel.rows, -1),
        "scores": (sel.scores, np.nan),
        "ranks": (sel.ranks, -1),
        "teacher": (teacher_scores.astype(np.float32), np.nan),
    }
    stats = {
        **sel.stats,
        f"mining_removed_{TEACHER_FILTER}": int(removed.sum()),
        "mining_teacher_scored": int(valid.sum()),
    }
    stats.update(eligible_counts(left, num_negatives))
    return Selection(**compact(left, columns, num_negatives + 1), positive_scores=sel.positive_scores, stats=stats)


# ---------------------------------------------------------------- mining with the caches
@dataclass
class Mined:
    """The mined negatives of a list of positives: the selection, the texts behind its rows, the cache used."""

    anchors: list[str]
    positives: list[str]
    texts: list[str]  # corpus texts (the selection's rows index them)
    selection: Selection
    num_negatives: int
    cache_hit: bool
    path: Path
    seconds: float = 0.0

    @property
    def stats(self) -> dict[str, int]:
        """Each filter's count and the positives with a full / short set, plus whether the cache held them."""
        return {**self.selection.stats, "mining_cache_hit": int(self.cache_hit)}

    def negatives(self) -> dict[tuple[str, str], list[str]]:
        """(anchor, positive) -> its mined negatives, best first (num_negatives and the spare at most)."""
        texts = self.texts
        return {
            (a, p): [texts[r] for r in row if r >= 0]
            for a, p, row in zip(self.anchors, self.positives, self.selection.rows.tolist())
        }

    def sample(self, n_rows: int, seed: int) -> pd.DataFrame:
        """A seeded sample of `n_rows` (anchor, positive, negative) rows among the first num_negatives of each
        positive, with the cosines to the anchor and the negative's rank among the anchor's neighbours."""
        sel = self.selection
        rows = sel.rows[:, : self.num_negatives]
        which, slot = np.nonzero(rows >= 0)
        if len(which) > n_rows:
            pick = np.sort(np.random.default_rng(seed).choice(len(which), size=n_rows, replace=False))
            which, slot = which[pick], slot[pick]
        return pd.DataFrame(
            {
                "anchor": [self.anchors[i] for i in which],
                "positive": [self.positives[i] for i in which],
                "negative": [self.texts[r] for r in rows[which, slot]],
                "positive_score": np.round(sel.positive_scores[which].astype(float), 4),
                "negative_score": np.round(sel.scores[which, slot].astype(float), 4),
                "negative_rank": sel.ranks[which, slot],
                **(
                    {"teacher_score": np.round(sel.teacher[which, slot].astype(float), 4)}
                    if sel.teacher is not None
                    else {}
                ),
            }
        )

    def denoised(self, score: Callable[[list[str], list[str]], np.ndarray], teacher_max: float) -> Mined:
        """These negatives without those the teacher (`score(anchors, candidates)` -> P(duplicate)) scores above
        `teacher_max` (RocketQA's denoised hard negatives); its counts join the stats."""
        rows = self.selection.rows
        which, slot = np.nonzero(rows >= 0)
        scores = np.full(rows.shape, np.nan, dtype=np.float32)
        scores[which, slot] = score([self.anchors[i] for i in which], [self.texts[r] for r in rows[which, slot]])
        selection = denoise(self.selection, scores, float(teacher_max), self.num_negatives)
        return dataclasses.replace(self, selection=selection)


def settings_key(cfg: Any) -> dict[str, Any]:
    """The mining settings that change which negatives come back (not batch size, cache dir or the sample)."""
    names = ("num_negatives", "range_min", "range_max", "relative_margin", "max_score")
    kept = {"kept": kept_columns(cfg)} if cfg.teacher_max is not None else {}  # the teacher's depth
    return {"format": FORMAT, **kept, **{name: getattr(cfg, name) for name in names}}


def data_key(pool: pd.DataFrame, corpus: Corpus, anchors: Sequence[str], positives: Sequence[str]) -> dict[str, str]:
    """What the mined negatives depend on in the data: the split's labeled pairs, its questions, the positives."""
    listed = "\x1e".join(f"{a}\x1f{p}" for a, p in zip(anchors, positives))
    return {"pairs": fingerprint_frame(pool), "corpus": corpus.digest(), "positives": sha256_hex(listed)}


def _read_selection(path: Path, n_positives: int, keep: int) -> Selection | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ("rows", "scores", "ranks", "positive_scores", "stats")}
        stats = json.loads(str(arrays.pop("stats")))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("mining cache %s unreadable (%s); mining again", path, exc)
        return None
    if arrays["rows"].shape != (n_positives, keep) or len(arrays["positive_scores"]) != n_positives:
        shape = arrays["rows"].shape
        log.warning("mining cache %s has shape %s, expected (%d, %d); mining again", path, shape, n_positives, keep)
        return None
    return Selection(stats=stats, **arrays)


def _write_selection(path: Path, key: Mapping[str, Any], sel: Selection) -> None:
    """The selection as one .npz (atomic), its key beside it as JSON."""
    arrays = {
        "rows": sel.rows,
        "scores": sel.scores,
        "ranks": sel.ranks,
        "positive_scores": sel.positive_scores,
        "stats": np.array(json.dumps(sel.stats)),
    }
    write_atomic(path, lambda handle: np.savez(handle, **arrays))
    write_json(dict(key), path.with_suffix(".json"))


def corpus_embeddings(
    corpus: Corpus, cache_dir: str | Path, model_key: Mapping[str, Any], encode_texts: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """The untuned model's embeddings of the train corpus, from the cache under `cache_dir` (keyed by the model and
    the corpus only: mining settings and silver pairs share them), else encoded and cached."""
    emb_key = {"split": "train", "purpose": "mining", "model": dict(model_key), "corpus": corpus.digest()}
    path = cache_path(Path(cache_dir).expanduser(), emb_key)
    emb, hit = cached_embeddings(path, emb_key, len(corpus.texts), lambda: encode_texts(corpus.texts))
    log.info("mining: %d question embeddings (%s)", len(emb), "cached" if hit else "encoded")
    return emb


def mine(
    pool: pd.DataFrame,
    pos: pd.DataFrame,
    cfg: Any,
    encode_texts: Callable[[list[str]], np.ndarray],
    model_key: Mapping[str, Any],
) -> Mined:
    """Mined negatives for the positives `pos` (anchor, positive) over the questions of `pool` (the train split's
    pairs: key1/key2, comp1/comp2, label), from the cache when it holds them.

    `encode_texts` turns texts into unit-length float32 rows (the untuned model); it is called only when the
    embedding cache misses. `model_key` names the model in the cache keys (weights fingerprint, max_seq_length).
    """
    started = time.perf_counter()
    corpus = Corpus.of(pool)
    anchors, positives = pos["anchor"].astype(str).tolist(), pos["positive"].astype(str).tolist()
    a_rows, p_rows = corpus.rows(anchors), corpus.rows(positives)
    key = {"model": dict(model_key), "data": data_key(pool, corpus, anchors, positives), "settings": settings_key(cfg)}
    cache_dir = Path(cfg.cache_dir).expanduser()
    path = cache_dir / f"mined-{json_digest(key)}.npz"
    keep = kept_columns(cfg)
    selection = _read_selection(path, len(anchors), keep)
    hit = selection is not None
    if selection is None:
        emb = corpus_embeddings(corpus, cache_dir, model_key, encode_texts)
        selection = select_negatives(emb, corpus.comp, a_rows, p_rows, labeled_duplicate_codes(pool, corpus), cfg)
        _write_selection(path, key, selection)
    seconds = time.perf_counter() - started
    log.info("mining: %d positives, %s in %.1fs (%s)", len(anchors), "cache hit" if hit else "mined", seconds, path)
    return Mined(anchors, positives, corpus.texts, selection, int(cfg.num_negatives), hit, path, seconds)


def untuned_encoder(settings: Any, model: Any = None) -> tuple[Callable[[list[str]], np.ndarray], dict[str, Any]]:
    """`encode_texts` by `model` (still untuned: before any step) or, when None, the model group's model loaded on
    first use only (a cache hit loads nothing), and the model's cache key (weights fingerprint, max_seq_length)."""
    from contrastive.model import encode, fingerprint, load_model

    m, loaded = settings.model, [model]

    def encode_texts(texts: list[str]) -> np.ndarray:
        if loaded[0] is None:
            loaded[0] = load_model(m.name_or_path, m.max_seq_length, settings.trainer.device)
        return encode(loaded[0], texts, int(settings.loss.mining.batch_size))

    return encode_texts, {"weights": fingerprint(m.name_or_path), "max_seq_length": m.max_seq_length}
