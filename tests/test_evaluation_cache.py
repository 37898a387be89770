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


def test_a_cache_file_is_read_once_per_process_while_unchanged(tmp_path, monkeypatch):
    """A sweep's later trials in one worker get the baseline's embeddings from memory (read-only), until the file
    changes."""
    import contrastive.evaluation.cache as cache

    path = tmp_path / "val-x.npy"
    first, hit = cached_embeddings(path, {"split": "val"}, 3, lambda: np.eye(3, 4, dtype=np.float32))
    assert not hit
    loads = []
    real = np.load
    monkeypatch.setattr(cache.np, "load", lambda *a, **k: loads.append(1) or real(*a, **k))
    again, hit = cached_embeddings(path, {"split": "val"}, 3, lambda: None)
    same, _ = cached_embeddings(path, {"split": "val"}, 3, lambda: None)
    assert hit and same is again and len(loads) == 1 and not again.flags.writeable
    np.testing.assert_array_equal(again, first)
    np.save(path, np.ones((3, 4), np.float32))  # the file changes: read again
    assert cached_embeddings(path, {"split": "val"}, 3, lambda: None)[0].sum() == 12 and len(loads) == 2
