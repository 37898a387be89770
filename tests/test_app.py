"""The app's logic without a browser or a model: search, dedup, question lists, the embedding cache,
checkpoint discovery, thresholds, config checks, and the Gradio wiring driven through its HTTP API."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config

from contrastive.app.checkpoints import Checkpoint, Thresholds, find_checkpoint, find_metrics, load_thresholds
from contrastive.app.engine import Engine
from contrastive.app.index import BackgroundIndex, build_index
from contrastive.app.server import free_port
from contrastive.app.ui import build_ui, header_markdown, render_compare
from contrastive.errors import ConfigError, DataError
from contrastive.search import (
    CorpusIndex,
    Limits,
    check_question,
    check_questions,
    corpus_fingerprint,
    duplicate_groups,
    groups_table,
    read_questions_file,
    similar_pairs,
    top_k,
    unique_questions,
)
from contrastive.settings import load_app

LIMITS = Limits(max_chars=200, max_questions=50, max_upload_bytes=10_000)
DIM = 256


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def bag_of_words(texts) -> np.ndarray:
    """A model stand-in: hashed bag of lower-cased words, L2-normalized (shared words -> higher cosine)."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    out[~out.any(axis=1), 0] = 1.0
    return _unit(out)


def ready_index(texts, description="test corpus") -> BackgroundIndex:
    return BackgroundIndex(
        lambda: CorpusIndex(list(texts), bag_of_words(texts), description), description, len(texts)
    ).start()


def engine(
    texts=("How do I learn Python?", "How can I lose weight?"), *, ft=0.6, base=0.9, with_baseline=True, **kw
) -> Engine:
    thresholds = Thresholds(ft, base, True, "metrics.json")
    return Engine(bag_of_words, bag_of_words if with_baseline else None, thresholds, LIMITS, ready_index(texts), **kw)


# ---------------------------------------------------------------- ranking
def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 200)).astype(np.float32)
    idx, vals = top_k(scores, 7)
    expected = np.argsort(-scores, axis=1)[:, :7]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(vals, np.take_along_axis(scores, expected, axis=1))


@pytest.mark.parametrize("k, n_out", [(0, 0), (3, 3), (10, 10), (25, 10)])
def test_top_k_clamps_k_to_the_corpus(k, n_out):
    scores = np.arange(10, dtype=np.float32)
    idx, vals = top_k(scores, k)
    assert idx.shape == (1, n_out)
    assert list(idx[0]) == list(range(9, 9 - n_out, -1))
    assert np.all(np.diff(vals[0]) <= 0)


def test_corpus_index_finds_each_row_first():
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(300, 32)))
    index = CorpusIndex([f"q{i}" for i in range(300)], emb)
    hits = index.search(emb[[5, 17, 299]], k=4)
    assert [h[0][0] for h in hits] == [5, 17, 299]
    assert all(abs(h[0][1] - 1.0) < 1e-5 and len(h) == 4 for h in hits)
    assert all(h[i][1] >= h[i + 1][1] for h in hits for i in range(3))


def test_corpus_index_rejects_misaligned_embeddings():
    with pytest.raises(ValueError, match="do not match"):
        CorpusIndex(["a", "b"], np.zeros((3, 4), np.float32))


def test_search_is_fast_on_100k_by_384():
    """One query against 100k x 384 float32 is a single matmul plus argpartition (~10 ms; generous bound)."""
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((100_000, 384), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = CorpusIndex([""] * len(emb), emb)
    index.search(emb[:1], 10)  # warm-up
    started = time.perf_counter()
    for row in (1, 2, 3):
        assert index.search(emb[row : row + 1], 10)[0][0][0] == row
    per_query = (time.perf_counter() - started) / 3
    assert per_query < 0.25, f"{per_query * 1e3:.0f} ms per query"


# ---------------------------------------------------------------- duplicate groups
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_similar_pairs_match_brute_force(chunk):
    rng = np.random.default_rng(3)
    emb = _unit(rng.normal(size=(40, 4)))
    sims = emb @ emb.T
    expected = {(i, j) for i in range(40) for j in range(i + 1, 40) if sims[i, j] >= 0.8}
    found = similar_pairs(emb, 0.8, chunk_size=chunk)
    assert {(i, j) for i, j, _ in found} == expected
    assert all(abs(s - sims[i, j]) < 1e-5 for i, j, s in found)


def test_duplicate_groups_are_connected_components():
    """A~B and B~C link A and C even though cos(A, C) is below the threshold; D stays alone."""
    angles = np.radians([0.0, 30.0, 60.0, 150.0])
    emb = _unit(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    assert emb[0] @ emb[2] < 0.8 < emb[0] @ emb[1]
    assert duplicate_groups(emb, 0.8) == [[0, 1, 2], [3]]
    assert duplicate_groups(emb, 0.99) == [[0], [1], [2], [3]]
    assert duplicate_groups(emb, -1.0) == [[0, 1, 2, 3]]


def test_duplicate_groups_threshold_is_inclusive():
    emb = _unit(np.array([[1.0, 0.0], [0.6, 0.8]]))  # cosine exactly 0.6
    assert duplicate_groups(emb, float(emb[0] @ emb[1])) == [[0, 1]]


def test_groups_table_lists_every_question_once():
    texts = ["a b", "a b c", "x y", "a b"]
    emb = bag_of_words(texts)
    groups = duplicate_groups(emb, 0.7)
    table = groups_table(texts, groups, emb)
    assert sorted(table["question"]) == sorted(texts)
    assert list(table.columns) == ["group", "size", "question", "cosine_to_first", "representative"]
    big = table[table["group"] == 1]
    assert set(big["question"]) == {"a b", "a b c"} and len(big) == 3 and set(big["size"]) == {3}
    assert big["cosine_to_first"].iloc[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- question lists and limits
def test_check_question_limits():
    assert check_question("  What is AI?  ", LIMITS) == "What is AI?"
    with pytest.raises(DataError, match="query: empty"):
        check_question("   ", LIMITS, "query")
    with pytest.raises(DataError, match="201 characters, the limit is 200"):
        check_question("x" * 201, LIMITS)


def test_check_questions_limits():
    assert check_questions(["a", "", "  b "], LIMITS, "list") == ["a", "b"]
    with pytest.raises(DataError, match="more than 50 questions"):
        check_questions([f"q{i}" for i in range(51)], LIMITS, "list")
    with pytest.raises(DataError, match="item 2 has 300 characters"):
        check_questions(["ok", "y" * 300], LIMITS, "list")
    with pytest.raises(DataError, match="no questions found"):
        check_questions(["", " "], LIMITS, "list")


def test_unique_questions_uses_question_keys():
    assert unique_questions(["How?", "how? ", "Why?", "HOW?"]) == ["How?", "Why?"]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("q.txt", "First?\n\nSecond?\n", ["First?", "Second?"]),
        ("q.csv", "id,Question\n1,First?\n2,Second?\n", ["First?", "Second?"]),
        ("q.csv", "question1,question2,label\nA?,B?,1\nC?,D?,0\n", ["A?", "C?", "B?", "D?"]),
        ("q.csv", "Only one column?\nAnother?\n", ["Only one column?", "Another?"]),
    ],
)
def test_read_questions_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert read_questions_file(path, LIMITS) == expected


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("q.json", "[]", "unsupported file type '.json'"),
        ("q.csv", "a,b\n1,2\n", "name one column 'question'"),
        ("q.txt", "x" * 20_000, "MB, the limit is 0.0 MB"),
        ("q.txt", "\n\n", "no questions found"),
        ("q.csv", "", "is empty"),
    ],
)
def test_read_questions_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_questions_file(path, LIMITS)


def test_read_questions_file_rejects_non_utf8(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"caf\xe9?\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_questions_file(path, LIMITS)


# ---------------------------------------------------------------- corpus cache
def test_corpus_fingerprint_depends_on_content_and_order():
    assert corpus_fingerprint(["a", "b"]) == corpus_fingerprint(["a", "b"])
    assert corpus_fingerprint(["a", "b"]) != corpus_fingerprint(["b", "a"])
    assert corpus_fingerprint(["ab"]) != corpus_fingerprint(["a", "b"])


def test_build_index_caches_by_model_and_corpus(tmp_path):
    calls = []

    def embed(texts):
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

    def boom():
        raise RuntimeError("disk full")

    broken = BackgroundIndex(boom, "x", 3).start()
    with pytest.raises(DataError, match="disk full"):
        broken.get(5)

    def slow():
        time.sleep(0.3)
        return CorpusIndex(["a"], bag_of_words(["a"]))

    pending = BackgroundIndex(slow, "x", 1).start()
    with pytest.raises(DataError, match="still being built"):
        pending.get(0)
    assert len(pending.get(5)) == 1 and pending.ready


# ---------------------------------------------------------------- checkpoint discovery
def _model_dir(path: Path, mtime: float | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "modules.json").write_text("[]")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_find_checkpoint_prefers_the_checkpoint_key(tmp_path):
    run = _model_dir(tmp_path / "elsewhere" / "model")
    _model_dir(tmp_path / "out" / "sweeps" / "s1" / "best")
    found = find_checkpoint(str(run), tmp_path / "out")
    assert found == Checkpoint(str(run.resolve()), "checkpoint")
    # a run directory (metrics.json + model/) is accepted too
    assert find_checkpoint(str(run.parent), tmp_path / "out").path == str(run.resolve())


def test_find_checkpoint_rejects_a_bad_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint='/nope/x'.*does not exist"):
        find_checkpoint("/nope/x", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a SentenceTransformer directory"):
        find_checkpoint(str(tmp_path / "empty"), tmp_path)


def test_find_checkpoint_newest_sweep_best_then_newest_run(tmp_path):
    now = time.time()
    out = tmp_path / "outputs"
    old_run = _model_dir(out / "runs" / "2025-01-01" / "10-00-00" / "model", now - 300)
    new_run = _model_dir(out / "runs" / "2025-01-02" / "09-00-00" / "model", now - 100)
    assert find_checkpoint(None, out) == Checkpoint(str(new_run), "newest training run")
    os.utime(old_run, (now, now))
    assert find_checkpoint(None, out).path == str(old_run)

    (out / "sweeps" / "s0" / "best").mkdir(parents=True)  # a best/ that holds no model is skipped
    older = _model_dir(out / "sweeps" / "s1" / "best" / "model", now - 200)  # best/ may hold model/
    newer = _model_dir(out / "sweeps" / "s2" / "best", now - 50)
    found = find_checkpoint(None, out)
    assert found == Checkpoint(str(newer), "latest promoted sweep best")
    os.utime(older, (now, now))
    assert find_checkpoint(None, out).path == str(older)


def test_find_checkpoint_none(tmp_path):
    found = find_checkpoint(None, tmp_path / "outputs")
    assert found.path is None and found.source == "none" and "runs/**/model" in found.note
    assert find_checkpoint("", tmp_path / "outputs").path is None


# ---------------------------------------------------------------- thresholds
def _metrics(ft=0.83, base=0.77) -> dict:
    return {
        "split": "val",
        "objective": {"name": "mrr_at_10", "value": 0.9},
        "finetuned": {"mrr_at_10": 0.9, "pair_threshold": ft},
        "baseline": {"mrr_at_10": 0.8, "pair_threshold": base},
    }


def test_thresholds_from_the_model_dir_then_its_parent(tmp_path):
    model = _model_dir(tmp_path / "run" / "model")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(_metrics(0.83, 0.77)))
    found = load_thresholds(model, 0.5)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.83, 0.77, True)
    assert found.source == str(tmp_path / "run" / "metrics.json")
    (model / "metrics.json").write_text(json.dumps(_metrics(0.9, 0.7)))  # a promoted copy wins
    assert find_metrics(model) == model / "metrics.json"
    assert (load_thresholds(model, 0.5).finetuned, load_thresholds(model, 0.5).baseline) == (0.9, 0.7)


def test_thresholds_fall_back_uncalibrated(tmp_path):
    model = _model_dir(tmp_path / "run" / "model")
    found = load_thresholds(model, 0.75)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.75, 0.75, False)
    assert "no metrics.json" in found.note
    assert not load_thresholds(None, 0.75).calibrated
    (model / "metrics.json").write_text("{not json")
    assert "unreadable" in load_thresholds(model, 0.75).note
    (model / "metrics.json").write_text(json.dumps({"finetuned": {"pair_threshold": None}, "baseline": {}}))
    found = load_thresholds(model, 0.75)
    assert not found.calibrated and "no finetuned.pair_threshold" in found.note
    (model / "metrics.json").write_text(json.dumps({"finetuned": {"pair_threshold": 0.8}}))
    found = load_thresholds(model, 0.75)
    assert (found.finetuned, found.baseline, found.calibrated) == (0.8, 0.75, True)
    assert "no baseline.pair_threshold" in found.note


# ---------------------------------------------------------------- the engine
def test_compare_gives_each_model_its_own_verdict():
    rows = engine(ft=0.6, base=0.95).compare("How do I learn Python fast?", "How do I learn Python?")
    cosine = float(bag_of_words(["How do I learn Python fast?"])[0] @ bag_of_words(["How do I learn Python?"])[0])
    assert 0.6 <= cosine < 0.95
    assert [(r["model"], r["duplicate"], r["threshold"]) for r in rows] == [
        ("finetuned", True, 0.6),
        ("baseline", False, 0.95),
    ]
    assert rows[0]["cosine"] == pytest.approx(cosine, abs=1e-6)
    html = render_compare(rows, engine().thresholds)
    assert 'id="cmp-finetuned"' in html and 'data-verdict="not duplicate"' in html


def test_compare_without_a_checkpoint_shows_one_model():
    rows = engine(with_baseline=False).compare("a b", "a b")
    assert [r["model"] for r in rows] == ["finetuned"] and rows[0]["duplicate"]


def test_compare_rejects_bad_input():
    with pytest.raises(DataError, match="question 2: empty"):
        engine().compare("What?", "")
    with pytest.raises(DataError, match="question 1: 201 characters"):
        engine().compare("x" * 201, "What?")


def test_search_default_and_uploaded_corpus(tmp_path):
    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    eng = engine(corpus)
    table, timing = eng.search("lose weight quickly", 2)
    assert table["question"][0] == "How can I lose weight?"
    assert list(table["rank"]) == [1, 2] and table["cosine"].is_monotonic_decreasing
    assert timing["corpus"] == 3 and timing["total_ms"] >= timing["search_ms"] >= 0
    upload = tmp_path / "mine.txt"
    upload.write_text("Best pizza in Rome?\nbest pizza in rome?\nWhere to eat pizza in Naples?\n")
    mine = eng.index_upload(upload)
    assert len(mine) == 2 and mine.description == "upload mine.txt"  # repeats removed
    table, timing = eng.search("pizza in Rome", 5, mine)
    assert table["question"][0] == "Best pizza in Rome?" and len(table) == 2 and timing["corpus"] == 2
    with pytest.raises(DataError, match="choose 1 to 50"):
        eng.search("x", 51)


def test_dedup_groups_at_the_threshold():
    texts = ["How do I learn Python?", "how do i learn python?", "How do I learn Python fast?", "What is love?"]
    eng = engine(ft=0.95)
    table, groups = eng.dedup(texts)  # default: the calibrated threshold
    assert groups == [[0, 1], [2], [3]]
    _, groups = eng.dedup(texts, 0.6)
    assert groups == [[0, 1, 2], [3]]
    assert len(table) == 4
    with pytest.raises(DataError, match="not a cosine"):
        eng.dedup(texts, 1.5)


def test_questions_from_prefers_the_upload(tmp_path):
    upload = tmp_path / "list.csv"
    upload.write_text("question\nA?\nB?\n")
    eng = engine()
    assert eng.questions_from("X?\nY?", str(upload)) == (["A?", "B?"], "upload list.csv")
    assert eng.questions_from("X?\n\nY?", None) == (["X?", "Y?"], "pasted list")


def test_header_says_what_is_served():
    thresholds = load_thresholds(None, 0.8)
    text = header_markdown(Checkpoint(None, "none", "nothing under outputs"), "base/model", thresholds, None)
    assert "No fine-tuned checkpoint found" in text and "base/model" in text and "uncalibrated" in text
    text = header_markdown(
        Checkpoint("/x/best", "latest promoted sweep best"),
        "base/model",
        Thresholds(0.8, 0.7, True, "/x/metrics.json", "", _metrics()),
        "ab12",
    )
    assert "/x/best" in text and "latest promoted sweep best" in text and "0.800" in text and "ab12" in text
    assert "val mrr_at_10 0.900 vs 0.800 baseline" in text
    odd = {**_metrics(), "objective": {"name": ["mrr_at_10", "pair_ap"], "value": 0.5}}  # no crash on a list
    text = header_markdown(Checkpoint("/x", "checkpoint"), "b", Thresholds(0.8, 0.7, True, "m", "", odd), None)
    assert "0.800" in text and "mrr_at_10" not in text


# ---------------------------------------------------------------- config
def _app_settings(*overrides: str):
    return load_app(compose_config("app", *overrides)).app


def test_the_served_checkpoint_is_the_top_level_checkpoint_key():
    from contrastive.cli import compose_config

    cfg = compose_config(["checkpoint=/some/model"], "app")
    assert cfg.checkpoint == "/some/model" and "model" not in cfg.app
    assert compose_config([], "app").checkpoint is None  # null: discover the newest checkpoint


def test_app_config_defaults_are_valid():
    app = _app_settings()
    assert app.host == "127.0.0.1" and app.share is False and app.port == 7860


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("port", 70000, "app.port=70000"),
        ("port", -1, "app.port=-1"),
        ("share", "maybe", "app.share: Value 'maybe' is not a valid bool"),
        ("fallback_threshold", 2, "app.fallback_threshold=2.0"),
        ("top_k", 60, "app.top_k=60: must be <= app.max_top_k"),
        ("limits.max_chars", 0, "app.limits.max_chars=0"),
        ("limits.max_upload_mb", 0, "app.limits.max_upload_mb=0.0"),
        ("corpus.splits", [], "app.corpus.splits=[]"),
    ],
)
def test_app_config_rejects(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _app_settings(f"app.{key}={value}")


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ---------------------------------------------------------------- the Gradio wiring, through its API
@pytest.mark.slow
def test_ui_endpoints_over_http(tmp_path):
    """The Blocks served on localhost answer /compare, /search and /dedup (no model, no browser)."""
    from gradio_client import Client

    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    eng = engine(corpus, ft=0.6, base=0.95)
    demo = build_ui(eng, "# test")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        card = client.predict("How do I learn Python fast?", "How do I learn Python?", api_name="/compare")
        assert 'id="cmp-finetuned"' in card and re.search(r'id="cmp-finetuned"[^>]*data-verdict="duplicate"', card)
        assert re.search(r'id="cmp-baseline"[^>]*data-verdict="not duplicate"', card)
        table, info = client.predict("lose weight", 2, api_name="/search")
        assert table["data"][0][2] == "How can I lose weight?" and "ms" in info and "3" in info
        info, groups, download = client.predict("A b c?\na b c?\nZ?", None, 0.9, api_name="/dedup")
        assert "2 distinct" in info and len(groups["data"]) == 2
        with pytest.raises(Exception, match="question 2: empty"):
            client.predict("What?", "", api_name="/compare")
    finally:
        demo.close()
