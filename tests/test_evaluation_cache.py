"""The embedding cache: keys follow the protocol, a corrupt or mis-sized file is recomputed."""

from __future__ import annotations

import numpy as np
from evaluation_helpers import eval_config

from contrastive.evaluation import baseline_cache_key, cache_path, cached_embeddings, eval_set_for


def test_cache_key_follows_the_protocol(tmp_path, fixture_data):
    cfg = eval_config(tmp_path)
    es = eval_set_for(cfg.eval, fixture_data)
    key = baseline_cache_key(cfg.model, fixture_data, es)
    assert {"model", "data", "split", "corpus", "max_seq_length", "backend", "distractors"} <= set(key)
    assert key["backend"] == "torch"
    paths = {cache_path(cfg.eval.cache_dir, key)}
    for override in ({"max_seq_length": 64}, {"split": "test"}, {"data": "other"}, {"backend": "onnx-int8"}):
        paths.add(cache_path(cfg.eval.cache_dir, {**key, **override}))
    cfg.eval.distractors = "train"
    es_train = eval_set_for(cfg.eval, fixture_data)
    paths.add(cache_path(cfg.eval.cache_dir, baseline_cache_key(cfg.model, fixture_data, es_train)))
    assert len(paths) == 6


def test_corrupt_cache_is_recomputed(tmp_path):
    path = tmp_path / "val-x.npy"
    path.write_bytes(b"not numpy")
    emb, hit = cached_embeddings(path, {"split": "val"}, 3, lambda: np.ones((3, 2), np.float32))
    assert not hit and np.load(path).shape == (3, 2)
    emb, hit = cached_embeddings(path, {"split": "val"}, 4, lambda: np.zeros((4, 2), np.float32))
    assert not hit and emb.shape == (4, 2)  # wrong row count: recomputed, not trusted
