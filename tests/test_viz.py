"""Figures: UMAP of pairs and cosine histograms, baseline beside fine-tuned, written as PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from contrastive import viz
from contrastive.cli import compose_config
from contrastive.evaluation import Evaluator, build_eval_set, score_embeddings


def clustered(keys: list[str], comp: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """Unit vectors near one random centre per component."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(comp.max()) + 1, 16))
    emb = centres[comp] + spread * rng.normal(size=(len(keys), 16))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def val_space(fixture_data):
    """The fixture's val split, its questions, and a loose (baseline) and a tight (fine-tuned) space."""
    pairs = fixture_data.splits["val"]
    es = build_eval_set(pairs, "val")
    emb = {"baseline": clustered(es.keys, es.comp, 1.2, 0), "finetuned": clustered(es.keys, es.comp, 0.3, 0)}
    metrics = {side: score_embeddings(e, es, 10, 100, 64).metrics for side, e in emb.items()}
    return pairs, es, emb, metrics


def assert_png(path, min_width: int = 600) -> None:
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(path).shape[:2]
    assert width >= min_width and height >= 300


def test_render_figures_writes_both_pngs(tmp_path, val_space):
    pairs, es, emb, metrics = val_space
    files = viz.render_figures(tmp_path / "fig", pairs, es.keys, emb, metrics, n_pairs=40, seed=0)
    assert [f.name for f in files] == ["umap_pairs.png", "cosine_hist.png"]
    for path in files:
        assert_png(path, min_width=1200)  # two panels side by side


def test_single_model_draws_one_panel(tmp_path, val_space):
    pairs, es, emb, metrics = val_space
    files = viz.render_figures(
        tmp_path, pairs, es.keys, {"finetuned": emb["finetuned"]}, {"finetuned": metrics["finetuned"]}, n_pairs=30
    )
    for path in files:
        assert_png(path)
        assert imread(path).shape[1] < 1200


def test_write_figures_from_an_evaluation_result(tmp_path, fixture_data):
    cfg = compose_config(
        ["data=fixture", f"eval.cache_dir={tmp_path / 'cache'}", "eval.n_boot=20", "eval.umap.n_pairs=25"], "evaluate"
    )

    class Model:
        def get_embedding_dimension(self) -> int:
            return 8

        def encode(self, texts, **kwargs):
            return np.stack([np.random.default_rng(len(t) * 7919 + sum(map(ord, t))).normal(size=8) for t in texts])

    model = Model()
    result = Evaluator(cfg.eval, cfg.model, fixture_data, show_progress=False).run(model, untuned=True)
    files = viz.write_figures(tmp_path / "figures", result, fixture_data, cfg.eval.umap)
    assert len(files) == 2 and all(f.parent == tmp_path / "figures" for f in files)
    for path in files:
        assert_png(path, min_width=1200)  # baseline beside fine-tuned
    cfg.eval.baseline = False
    alone = Evaluator(cfg.eval, cfg.model, fixture_data, show_progress=False).run(model)
    again = viz.write_figures(tmp_path / "alone", alone, fixture_data, cfg.eval.umap)
    assert [f.name for f in again] == [f.name for f in files]  # no baseline: one panel each
    assert all(imread(f).shape[1] < 1200 for f in again)


def test_procrustes_recovers_a_rotated_scaled_shifted_copy():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(50, 2))
    theta = 1.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moving = (target @ rot) * 3.0 + np.array([5.0, -2.0])
    moving[:, 0] *= -1  # a reflection too
    assert np.allclose(viz.procrustes(moving, target), target, atol=1e-9)


def test_umap_layout_is_seeded():
    emb = clustered([str(i) for i in range(60)], np.repeat(np.arange(12), 5), 0.5, 2)
    first = viz.umap_layout(emb, 10, 0.1, seed=3)
    assert first.shape == (60, 2)
    assert np.array_equal(first, viz.umap_layout(emb, 10, 0.1, seed=3))
    assert viz.umap_layout(emb[:2], 10, 0.1, seed=3).shape == (2, 2)


def test_captions_carry_the_metrics():
    line = viz.metric_line(
        {"baseline": {"mrr_at_10": 0.5, "pair_ap": 0.25}, "finetuned": {"mrr_at_10": 0.75, "pair_ap": float("nan")}}
    )
    assert line == "MRR@10: baseline 0.500, fine-tuned 0.750   |   pair AP: baseline 0.250, fine-tuned n/a"
    assert max(len(x) for x in viz.wrap_caption("word " * 100, 80).splitlines()) <= 80


def test_pair_cosines_follow_the_keys():
    pairs = pd.DataFrame({"key1": ["a", "b"], "key2": ["c", "a"], "label": [1, 0]})
    emb = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert viz.pair_cosines(pairs, {"a": 0, "b": 1, "c": 2}, emb).tolist() == [1.0, 0.0]
