"""The paired bootstrap: weighted pair metrics equal the resample's, seeded CIs around the delta, blocked draws."""

from __future__ import annotations

import numpy as np
import pytest

from contrastive.evaluation import bootstrap
from contrastive.evaluation.bootstrap import bootstrap_pairs, bootstrap_ranking, resample_counts
from contrastive.evaluation.metrics import PAIR_KEYS, pair_metrics, pair_metrics_weighted


def test_weighted_pair_metrics_equal_metrics_of_the_resample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 50)
    scores = labels + rng.normal(size=50)
    counts = resample_counts(rng, 50, 3)
    weighted = pair_metrics_weighted(scores, labels, counts)
    for b in range(3):
        rows = np.repeat(np.arange(50), counts[b])
        direct = pair_metrics(scores[rows], labels[rows])
        for name in PAIR_KEYS:
            assert weighted[name][b] == pytest.approx(direct[name]), name


def test_bootstrap_ci_contains_delta_and_is_seeded():
    rng = np.random.default_rng(6)
    base = {"mrr_at_10": rng.uniform(0.3, 0.9, 300)}
    ft = {"mrr_at_10": np.clip(base["mrr_at_10"] + rng.normal(0.05, 0.1, 300), 0, 1)}
    delta = ft["mrr_at_10"].mean() - base["mrr_at_10"].mean()
    lo, hi = bootstrap_ranking(ft, base, 500, 0.95, seed=0)["mrr_at_10"]
    assert lo < delta < hi and lo > 0  # a clear gain: the CI excludes 0
    assert bootstrap_ranking(ft, base, 500, 0.95, seed=0)["mrr_at_10"] == (lo, hi)
    assert bootstrap_ranking(ft, base, 500, 0.95, seed=1)["mrr_at_10"] != (lo, hi)
    narrow = bootstrap_ranking(ft, base, 500, 0.5, seed=0)["mrr_at_10"]
    assert lo < narrow[0] < narrow[1] < hi
    assert bootstrap_ranking(ft, base, 0, 0.95, seed=0)["mrr_at_10"] == (None, None)


def test_pair_bootstrap_ci_contains_delta_and_is_seeded():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    base = labels * 0.5 + rng.normal(size=500)
    ft = labels * 1.5 + rng.normal(size=500)
    delta = pair_metrics(ft, labels)["pair_ap"] - pair_metrics(base, labels)["pair_ap"]
    ci = bootstrap_pairs(ft, base, labels, 300, 0.95, seed=0)
    assert ci["pair_ap"][0] < delta < ci["pair_ap"][1] and ci["pair_ap"][0] > 0
    assert set(ci) == set(PAIR_KEYS)
    assert bootstrap_pairs(ft, base, labels, 300, 0.95, seed=0) == ci


def test_resample_blocks_do_not_change_the_draws(monkeypatch):
    rng = np.random.default_rng(8)
    base = {"m": rng.uniform(size=41)}
    ft = {"m": rng.uniform(size=41)}
    ref = bootstrap_ranking(ft, base, 100, 0.9, seed=3)
    monkeypatch.setattr(bootstrap, "BOOT_BLOCK_CELLS", 41 * 7)
    assert bootstrap_ranking(ft, base, 100, 0.9, seed=3) == ref
