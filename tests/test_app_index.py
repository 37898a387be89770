"""The app's search index: the embedding cache keyed by model and corpus, and the background build."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pytest
from app_helpers import bag_of_words

from contrastive.app.index import BackgroundIndex, build_index, corpus_texts
from contrastive.app.settings import load_app
from contrastive.errors import ConfigError, DataError
from contrastive.search import CorpusIndex


# ---------------------------------------------------------------- the default corpus
def test_corpus_texts_from_the_data_splits_or_a_file(compose_cfg, tmp_path):
    settings = load_app(compose_cfg("data=fixture", config_name="app"))
    corpus = settings.app.corpus
    texts, description = corpus_texts(corpus, settings.data)
    assert texts and len(set(texts)) == len(texts) and description.startswith("val + test split questions of")
    with pytest.raises(ConfigError, match=re.escape("app.corpus.splits=['val', 'nope']: no split 'nope'")):
        corpus_texts(replace(corpus, splits=["val", "nope"]), settings.data)
    with pytest.raises(ConfigError, match=re.escape("app.corpus.max_questions=1: the val+test splits hold")):
        corpus_texts(replace(corpus, max_questions=1), settings.data)
    path = tmp_path / "corpus.txt"
    path.write_text("How?\nhow? \nWhy?\n")
    assert corpus_texts(replace(corpus, path=str(path)), settings.data) == (["How?", "Why?"], f"app.corpus.path {path}")


# ---------------------------------------------------------------- corpus cache


def test_build_index_caches_by_model_and_corpus(tmp_path):
    calls = []

    def embed(texts, progress=None):
        calls.append(len(texts))
        return bag_of_words(texts)

    texts = ["How do I learn Python?", "How can I lose weight?", "What is AI?"]
    key = {"model": "abc", "max_seq_length": 128}
    first = build_index(embed, texts, "t", str(tmp_path), key)
    again = build_index(embed, texts, "t", str(tmp_path), key)
    assert calls == [3]  # the restart read the cache
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    build_index(embed, texts, "t", str(tmp_path), {**key, "model": "other"})
    build_index(embed, texts[:2], "t", str(tmp_path), key)
    assert calls == [3, 3, 2]
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 3 and not list(tmp_path.glob("*.tmp"))
    for file in files:  # a truncated cache file is recomputed, not trusted
        file.write_bytes(file.read_bytes()[:50])
    build_index(embed, texts, "t", str(tmp_path), key)
    assert calls == [3, 3, 2, 3]


def test_background_index_reports_failures_and_waits():
    failed = BackgroundIndex.failed("no default search corpus (offline)")
    with pytest.raises(DataError, match="offline"):
        failed.get(0)

    def boom(_):
        raise RuntimeError("disk full")

    broken = BackgroundIndex(boom, "x", 3).start()
    with pytest.raises(DataError, match="disk full"):
        broken.get(5)

    def slow(_):
        time.sleep(0.3)
        return CorpusIndex(["a"], bag_of_words(["a"]))

    pending = BackgroundIndex(slow, "x", 1).start()
    with pytest.raises(DataError, match="still being built"):
        pending.get(0)
    assert len(pending.get(5)) == 1 and pending.ready


def test_examples_come_from_the_corpus_splits(compose_cfg, tmp_path):
    from contrastive.app.index import corpus_and_examples

    settings = load_app(compose_cfg("data=fixture", config_name="app"))
    texts, _, examples = corpus_and_examples(settings.app.corpus, settings.data)
    assert len(examples.pairs) == 6 and all(len(pair) == 2 for pair in examples.pairs)
    assert len(examples.queries) == 3 and set(examples.queries) <= set(texts)
    assert len(examples.lists) == 1 and len(examples.lists[0].splitlines()) == 6
    path = tmp_path / "mine.txt"
    path.write_text("How?\nWhy?\n")
    _, _, examples = corpus_and_examples(replace(settings.app.corpus, path=str(path)), settings.data)
    assert examples.pairs == [] and examples.queries == ["How?", "Why?"] and examples.lists == ["How?\nWhy?"]
