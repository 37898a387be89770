"""Evaluation: retrieval and pair metrics (hand-computed and against ranx), bootstrap, cache, encode, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_settings
from omegaconf import DictConfig

from contrastive import PROJECT_ROOT, evaluate
from contrastive.data import read_questions
from contrastive.errors import ConfigError, DataError, ModelError
from contrastive.evaluate import (
    EvalSet,
    build_eval_set,
    pair_metrics,
    ranking_per_query,
    retrieval_per_query,
    top_k,
)


# ---------------------------------------------------------------- helpers
class FakeModel:
    """A stand-in encoder: one seeded random vector per text; records every batch it encodes."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self.dim, self.seed = dim, seed
        self.batches: list[list[str]] = []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def vector(self, text: str) -> np.ndarray:
        digest = hashlib.blake2b(f"{self.seed}:{text}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "big")).normal(size=self.dim).astype(np.float32) * 3

    def encode(self, texts, batch_size=32, **kwargs) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([self.vector(t) for t in texts])

    @property
    def n_encoded(self) -> int:
        return sum(len(b) for b in self.batches)


def frame_from_components(sizes: list[int], negatives: list[tuple[int, int]] = ()) -> pd.DataFrame:
    """A split DataFrame: component c has sizes[c] questions q{c}_{i} chained by duplicates, plus negatives."""
    rows = []
    for c, size in enumerate(sizes):
        for i in range(1, size):
            rows.append((f"q{c}_{i - 1}", f"q{c}_{i}", 1, c, c))
    for a, b in negatives:
        rows.append((f"q{a}_0", f"q{b}_0", 0, a, b))
    singles = [c for c, size in enumerate(sizes) if size == 1 and not any(c in nb for nb in negatives)]
    if singles:
        raise ValueError(f"components {singles} have no pair")
    frame = pd.DataFrame(rows, columns=["question1", "question2", "label", "comp1", "comp2"])
    frame["key1"], frame["key2"] = frame["question1"].str.lower(), frame["question2"].str.lower()
    return frame


def random_split(n_comp: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_comp).tolist()
    negatives = [(c, (c + 1) % n_comp) for c in range(n_comp)]
    return frame_from_components(sizes, negatives)


def clustered_embeddings(es: EvalSet, dim: int, noise: float, seed: int) -> np.ndarray:
    """Unit rows near a random centre per component, so ranking metrics land strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(es.comp.max()) + 2, dim))
    emb = centres[es.comp] + noise * rng.normal(size=(len(es.comp), dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def ranx_scores(emb: np.ndarray, es: EvalSet, metrics: list[str]) -> dict[str, float]:
    """The same metrics by ranx from the full score matrix (every corpus row but the query itself)."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels, run = {}, {}
    full = emb[es.queries] @ emb.T
    for n, q in enumerate(es.queries):
        rel = np.flatnonzero((es.comp == es.comp[q]) & (np.arange(len(es.comp)) != q))
        qrels[f"q{q}"] = {f"d{d}": 1 for d in rel}
        run[f"q{q}"] = {f"d{d}": float(full[n, d]) for d in range(len(es.comp)) if d != q}
    return ranx_evaluate(Qrels(qrels), Run(run), metrics, make_comparable=True)


@pytest.fixture
def cfg(tmp_path) -> DictConfig:
    """The composed train config on the fixture, its embedding cache in tmp_path, a small bootstrap."""
    return evaluate.compose_config(["data=fixture", f"eval.cache_dir={tmp_path / 'cache'}", "eval.n_boot=200"])


# ---------------------------------------------------------------- top-k and ties
def test_block_top_k_keeps_lowest_columns_among_ties():
    block = np.array([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]], dtype=np.float32)
    scores, cols = evaluate._block_top_k(block, 3)
    assert cols.tolist() == [[0, 1, 2], [0, 1, 2]]  # row order in a block is by column; merge sorts
    assert scores[0].tolist() == pytest.approx([0.5, 0.9, 0.5])


def test_top_k_orders_by_score_then_corpus_row_and_skips_self():
    corpus = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5], [1, 0]], dtype=np.float32)
    idx, scores = top_k(corpus[[0, 3]], corpus, np.array([0, 3]), k=4, chunk_size=2)
    assert idx[0].tolist() == [2, 4, 3, 1]  # rows 2 and 4 tie at 1.0: the lower row first; row 0 is the query
    assert scores[0].tolist() == [1.0, 1.0, 0.5, 0.0]
    assert idx[1].tolist() == [0, 1, 2, 4]  # all four tie at 0.5; the query's own row 3 is skipped
    assert 3 not in idx[1]


def test_top_k_caps_k_at_corpus_minus_self():
    corpus = np.eye(3, dtype=np.float32)
    idx, _ = top_k(corpus, corpus, np.arange(3), k=10, chunk_size=1)
    assert idx.shape == (3, 2)
    assert all(q not in row for q, row in enumerate(idx.tolist()))


@pytest.mark.parametrize("chunk", [1, 3, 17, 64, 10_000])
def test_chunked_equals_unchunked_with_exact_ties(chunk):
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 3, size=(150, 6)).astype(np.float32) / 2  # exact dot products, many ties
    queries = np.arange(0, 150, 4)
    whole_idx, whole_s = top_k(corpus[queries], corpus, queries, k=20, chunk_size=10_000)
    idx, s = top_k(corpus[queries], corpus, queries, k=20, chunk_size=chunk)
    assert np.array_equal(idx, whole_idx)
    assert np.array_equal(s, whole_s)
    for row, q in zip(whole_idx, queries):  # the reference: a full stable sort by (-score, row)
        full = corpus[q] @ corpus.T
        full[q] = -np.inf
        assert row.tolist() == np.lexsort((np.arange(150), -full))[:20].tolist()


def test_chunked_equals_unchunked_on_random_unit_vectors():
    emb = clustered_embeddings(build_eval_set(random_split(60, 1), "val"), 16, 0.9, 1)
    queries = np.arange(len(emb))
    ref = top_k(emb, emb, queries, 100, chunk_size=10_000, query_chunk=10_000)[0]
    assert np.array_equal(top_k(emb, emb, queries, 100, chunk_size=13, query_chunk=7)[0], ref)


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


def test_queries_need_a_component_of_two_in_the_split():
    es = build_eval_set(frame_from_components([3, 1, 2], [(0, 1)]), "test")
    assert es.n_relevant.tolist() == [2, 2, 2, 1, 1]
    assert len(es.queries) == 5 and len(es.keys) == 6


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


def test_metrics_match_ranx_on_real_model_embeddings(minilm, fixture_data, cfg):
    cfg.eval.distractors = "train"  # the val split plus the train questions as distractors
    es = evaluate.eval_set_from_cfg(cfg, fixture_data, "val")
    assert len(es.keys) == es.n_split + len(evaluate.split_questions(fixture_data.splits["train"]))
    emb = evaluate.encode(minilm, es.texts, batch_size=64, show_progress=False)
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


def test_weighted_pair_metrics_equal_metrics_of_the_resample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 50)
    scores = labels + rng.normal(size=50)
    counts = evaluate.resample_counts(rng, 50, 3)
    weighted = evaluate.pair_metrics_weighted(scores, labels, counts)
    for b in range(3):
        rows = np.repeat(np.arange(50), counts[b])
        direct = pair_metrics(scores[rows], labels[rows])
        for name in evaluate.PAIR_KEYS:
            assert weighted[name][b] == pytest.approx(direct[name]), name


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_delta_and_is_seeded():
    rng = np.random.default_rng(6)
    base = {"mrr_at_10": rng.uniform(0.3, 0.9, 300)}
    ft = {"mrr_at_10": np.clip(base["mrr_at_10"] + rng.normal(0.05, 0.1, 300), 0, 1)}
    delta = ft["mrr_at_10"].mean() - base["mrr_at_10"].mean()
    lo, hi = evaluate.bootstrap_ranking(ft, base, 500, 0.95, seed=0)["mrr_at_10"]
    assert lo < delta < hi and lo > 0  # a clear gain: the CI excludes 0
    assert evaluate.bootstrap_ranking(ft, base, 500, 0.95, seed=0)["mrr_at_10"] == (lo, hi)
    assert evaluate.bootstrap_ranking(ft, base, 500, 0.95, seed=1)["mrr_at_10"] != (lo, hi)
    narrow = evaluate.bootstrap_ranking(ft, base, 500, 0.5, seed=0)["mrr_at_10"]
    assert lo < narrow[0] < narrow[1] < hi
    assert evaluate.bootstrap_ranking(ft, base, 0, 0.95, seed=0)["mrr_at_10"] == (None, None)


def test_pair_bootstrap_ci_contains_delta_and_is_seeded():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    base = labels * 0.5 + rng.normal(size=500)
    ft = labels * 1.5 + rng.normal(size=500)
    delta = pair_metrics(ft, labels)["pair_ap"] - pair_metrics(base, labels)["pair_ap"]
    ci = evaluate.bootstrap_pairs(ft, base, labels, 300, 0.95, seed=0)
    assert ci["pair_ap"][0] < delta < ci["pair_ap"][1] and ci["pair_ap"][0] > 0
    assert set(ci) == set(evaluate.PAIR_KEYS)
    assert evaluate.bootstrap_pairs(ft, base, labels, 300, 0.95, seed=0) == ci


def test_resample_blocks_do_not_change_the_draws(monkeypatch):
    rng = np.random.default_rng(8)
    base = {"m": rng.uniform(size=41)}
    ft = {"m": rng.uniform(size=41)}
    ref = evaluate.bootstrap_ranking(ft, base, 100, 0.9, seed=3)
    monkeypatch.setattr(evaluate, "BOOT_BLOCK_CELLS", 41 * 7)
    assert evaluate.bootstrap_ranking(ft, base, 100, 0.9, seed=3) == ref


# ---------------------------------------------------------------- encode
def test_encode_restores_order_normalises_and_batches_longest_first():
    model = FakeModel()
    texts = ["a", "a much longer question?", "mid length", "xx", "the longest question of them all, by far"]
    emb = evaluate.encode(model, texts, batch_size=2, show_progress=False)
    assert emb.dtype == np.float32 and emb.shape == (5, 8)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    for row, text in zip(emb, texts):
        vec = model.vector(text)
        assert np.allclose(row, vec / np.linalg.norm(vec), atol=1e-6)
    lengths = [max(len(t) for t in batch) for batch in model.batches]
    assert lengths == sorted(lengths, reverse=True) and [len(b) for b in model.batches] == [2, 2, 1]
    assert evaluate.encode(model, [], 4, show_progress=False).shape == (0, 8)


def test_encode_matches_the_model_on_real_text(minilm, fixture_data):
    texts = evaluate.split_questions(fixture_data.splits["val"])["text"].tolist()[:40]
    ours = evaluate.encode(minilm, texts, batch_size=16, show_progress=False)
    ref = minilm.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(ours, ref, atol=1e-4)


# ---------------------------------------------------------------- a run, the cache, the JSON
def test_evaluate_run_shape_and_cache_hit(cfg, fixture_data):
    finetuned, baseline = FakeModel(seed=1), FakeModel(seed=2)
    loads = []

    def loader():
        loads.append(1)
        return baseline

    first = evaluate.evaluate_run(finetuned, cfg, fixture_data, baseline_model=loader, show_progress=False)
    n = first["finetuned"]["n_corpus"]
    assert loads == [1] and baseline.n_encoded == n and finetuned.n_encoded == n
    assert first["details"].baseline_cache_hit is False
    second = evaluate.evaluate_run(finetuned, cfg, fixture_data, baseline_model=loader, show_progress=False)
    assert loads == [1] and baseline.n_encoded == n  # the cache answered: no load, no encode
    assert second["details"].baseline_cache_hit is True
    assert second["baseline"] == first["baseline"] and second["delta"] == first["delta"]

    doc = json.loads(json.dumps(evaluate.to_json(first)))
    assert set(doc) == {"split", "objective", "finetuned", "baseline", "delta"}
    keys = set(evaluate.metric_keys(10, 100)) | set(evaluate.COUNT_KEYS)
    assert set(doc["finetuned"]) == keys and set(doc["baseline"]) == keys
    assert set(doc["delta"]) == set(evaluate.metric_keys(10, 100))
    for name, d in doc["delta"].items():
        assert d["delta"] == pytest.approx(doc["finetuned"][name] - doc["baseline"][name])
        assert d["ci_low"] <= d["ci_high"]
    assert doc["objective"] == {"name": "mrr_at_10", "value": doc["finetuned"]["mrr_at_10"]}
    assert doc["split"] == "val" and doc["finetuned"]["n_queries"] > 0
    cache = Path(cfg.eval.cache_dir)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary files left


def test_cache_key_follows_the_protocol(cfg, fixture_data):
    es = evaluate.eval_set_from_cfg(cfg, fixture_data)
    key = evaluate.baseline_cache_key(cfg, fixture_data, es)
    assert {"model", "data", "split", "corpus", "max_seq_length", "backend", "distractors"} <= set(key)
    assert key["backend"] == "torch"
    paths = {evaluate.cache_path(cfg.eval.cache_dir, key)}
    for override in ({"max_seq_length": 64}, {"split": "test"}, {"data": "other"}, {"backend": "onnx-int8"}):
        paths.add(evaluate.cache_path(cfg.eval.cache_dir, {**key, **override}))
    cfg.eval.distractors = "train"
    es_train = evaluate.eval_set_from_cfg(cfg, fixture_data)
    paths.add(evaluate.cache_path(cfg.eval.cache_dir, evaluate.baseline_cache_key(cfg, fixture_data, es_train)))
    assert len(paths) == 6


def test_materialize_loads_the_configured_backend(cfg, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg.model.backend = "onnx"
    cfg.model.onnx_cache_dir = str(tmp_path / "onnx")
    model = evaluate.materialize(None, cfg)
    assert type(model[0].auto_model).__name__ == "OnnxTransformer"
    assert model[0].auto_model.source.startswith(str(tmp_path / "onnx"))


def test_corrupt_cache_is_recomputed(tmp_path):
    path = tmp_path / "val-x.npy"
    path.write_bytes(b"not numpy")
    emb, hit = evaluate.cached_embeddings(path, {"split": "val"}, 3, lambda: np.ones((3, 2), np.float32))
    assert not hit and np.load(path).shape == (3, 2)
    emb, hit = evaluate.cached_embeddings(path, {"split": "val"}, 4, lambda: np.zeros((4, 2), np.float32))
    assert not hit and emb.shape == (4, 2)  # wrong row count: recomputed, not trusted


def test_untuned_model_reuses_its_own_embeddings(cfg, fixture_data):
    model = FakeModel(seed=3)
    result = evaluate.evaluate_run(model, cfg, fixture_data, baseline_model=model, show_progress=False)
    assert model.n_encoded == result["finetuned"]["n_corpus"]
    assert all(d["delta"] == 0 for d in result["delta"].values())
    assert "fine-tuned" in evaluate.format_table(result) and "[95% CI]" in evaluate.format_table(result)


def test_no_baseline_and_objective_value(cfg, fixture_data):
    cfg.eval.baseline = False
    cfg.eval.objective = "pair_ap"
    model = FakeModel(seed=4)
    result = evaluate.evaluate_run(model, cfg, fixture_data, show_progress=False)
    assert result["baseline"] is None and result["delta"] is None
    assert result["objective"]["value"] == result["finetuned"]["pair_ap"]
    assert evaluate.objective_value(model, cfg, fixture_data) == pytest.approx(result["finetuned"]["pair_ap"])
    cfg.eval.objective = "mrr_at_10"
    assert evaluate.objective_value(model, cfg, fixture_data) == pytest.approx(result["finetuned"]["mrr_at_10"])
    assert "delta" not in evaluate.format_table(result)


# ---------------------------------------------------------------- distractors
def test_distractors_from_files_are_deduplicated_capped_and_seeded(tmp_path, cfg, fixture_data):
    val_text = fixture_data.splits["val"]["question1"].iloc[0]
    lines = [f"Distractor question number {i}?" for i in range(30)]
    lines += [val_text.upper(), "", "Distractor question number 3?"]  # in the split, blank, repeated
    (tmp_path / "d.txt").write_text("\n".join(lines))
    pd.DataFrame({"question": lines}).to_csv(tmp_path / "d.csv", index=False)
    for name in ("d.txt", "d.csv"):
        cfg.eval.distractors = str(tmp_path / name)
        es = evaluate.eval_set_from_cfg(cfg, fixture_data)
        assert len(es.keys) - es.n_split == 30  # blank, repeated and in-split questions dropped
        assert es.protocol["distractors_sha256"]
    cfg.eval.max_distractors = 10
    picks = [evaluate.eval_set_from_cfg(cfg, fixture_data).keys[-10:] for _ in range(2)]
    cfg.eval.seed = 1
    other = evaluate.eval_set_from_cfg(cfg, fixture_data).keys[-10:]
    assert picks[0] == picks[1] and other != picks[0]


def test_bad_eval_values_are_one_line_errors(tmp_path):
    for key, value, needle in (
        ("objective", "mrr_at_5", "eval.objective"),
        ("chunk_size", 0, "eval.chunk_size"),
        ("distractors", str(tmp_path / "none.txt"), "eval.distractors"),
        ("max_distractors", -1, "eval.max_distractors"),
    ):
        with pytest.raises(ConfigError, match=needle):
            train_settings(f"eval.{key}={value}")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="eval.distractors"):
        read_questions(str(tmp_path / "t.csv"), "eval.distractors")


# ---------------------------------------------------------------- CLI
def test_parse_args_separates_the_checkpoint_from_the_baseline():
    checkpoint, overrides, out = evaluate.parse_args(
        ["model=runs/x/model", "data=fixture", "split=test", "eval.n_boot=10", "--json", "m.json"]
    )
    assert checkpoint == "runs/x/model" and out == "m.json"
    assert overrides == ["data=fixture", "eval.split=test", "eval.n_boot=10"]
    cfg = evaluate.compose_config(overrides)
    assert cfg.eval.split == "test" and cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match="model"):
        evaluate.parse_args(["split=val"])
    with pytest.raises(ConfigError, match="--json"):
        evaluate.parse_args(["model=x", "--json"])
    with pytest.raises(ConfigError, match="overrides"):
        evaluate.compose_config(["data=nope"])


def test_cli_missing_model_dir_is_one_line_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        evaluate.main([f"model={tmp_path}/no/such/model", "data=fixture"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.name_or_path") and "does not exist" in err and "\n" not in err
    with pytest.raises(ModelError):
        evaluate.run_cli([f"model={tmp_path}/missing/dir"])


@pytest.mark.slow
def test_cli_on_the_fixture(tmp_path):
    from contrastive.model import packaged_model_dir

    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastive.evaluate",
            f"model={packaged_model_dir()}",
            "data=fixture",
            "split=test",
            f"eval.cache_dir={tmp_path / 'cache'}",
            "eval.n_boot=50",
            "--json",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mrr_at_10" in proc.stdout and "fine-tuned" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["split"] == "test" and doc["model"] == str(packaged_model_dir())
    assert 0 < doc["finetuned"]["mrr_at_10"] <= 1 and doc["finetuned"] == doc["baseline"]
    assert list((tmp_path / "cache").glob("test-*.npy"))
