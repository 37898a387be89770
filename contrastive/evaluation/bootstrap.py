"""Paired bootstrap: resample counts, percentile intervals, CIs of ranking and pair deltas, the delta table."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from contrastive.evaluation.metrics import PAIR_KEYS, Scored, pair_metrics_weighted

BOOT_BLOCK_CELLS = 2_000_000  # bootstrap resamples are drawn in blocks of about this many weights


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
