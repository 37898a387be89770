"""Figures of the embedding space, baseline beside fine-tuned: a UMAP of sampled pairs and cosine histograms.

UMAP is fitted separately per model (same seed and parameters): a joint fit would make each model's
points neighbours of the other model's and blur the structure of both. The fine-tuned layout is then
aligned to the baseline's by a Procrustes map (rotation, reflection, uniform scale, shift), which changes
no distance ratio but makes the two panels comparable at a glance.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from contrastive.pairs import cap_pairs
from contrastive.utils import fmt_metric

if TYPE_CHECKING:
    from contrastive.data import PreparedData
    from contrastive.evaluation import EvalResult

SIDE_TITLES = {"baseline": "baseline (untuned)", "finetuned": "fine-tuned"}
COLORS = {1: "#0072B2", 0: "#E69F00"}  # Okabe-Ito blue / orange: readable for colour-blind viewers
NAMES = {1: "duplicate pair", 0: "non-duplicate pair"}
DPI = 130


# ---------------------------------------------------------------- geometry
def umap_layout(emb: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """2-D UMAP (cosine metric, seeded) of unit-length embeddings."""
    import umap

    n = len(emb)
    if n < 4:  # UMAP's spectral initialisation needs a few points; two points need no layout
        return np.c_[np.arange(n, dtype=float), np.zeros(n)]
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), n - 1)),
        min_dist=float(min_dist),
        metric="cosine",
        random_state=int(seed),
        init="spectral" if n > 20 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeding is the point
        return np.asarray(reducer.fit_transform(emb), dtype=float)


def procrustes(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`moving` rotated/reflected, uniformly scaled and shifted to best match `target` (least squares)."""
    a = moving - moving.mean(axis=0)
    b = target - target.mean(axis=0)
    norm = float((a**2).sum())
    if norm == 0:
        return moving.copy()
    u, s, vt = np.linalg.svd(a.T @ b)
    return (a @ (u @ vt)) * (s.sum() / norm) + target.mean(axis=0)


def pair_cosines(pairs: pd.DataFrame, row_of: Mapping[str, int], emb: np.ndarray) -> np.ndarray:
    """Cosine of each pair from unit-length embeddings looked up by question key."""
    a = emb[pairs["key1"].map(row_of).to_numpy(np.int64)]
    b = emb[pairs["key2"].map(row_of).to_numpy(np.int64)]
    return np.einsum("ij,ij->i", a, b)


# ---------------------------------------------------------------- captions
def _mrr_key(metrics: Mapping[str, Any]) -> str | None:
    return next((k for k in metrics if k.startswith("mrr_at_")), None)


def metric_line(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """'MRR@10: baseline 0.971, fine-tuned 0.980  |  pair AP: ...' for the sides present."""
    parts = []
    for key, label in ((None, "MRR@{k}"), ("pair_ap", "pair AP")):
        values = []
        for side, m in metrics.items():
            name = key or _mrr_key(m)
            if name and name in m:
                values.append(f"{SIDE_TITLES.get(side, side).split(' ')[0]} {fmt_metric(m[name], digits=3)}")
        if values:
            first = next(iter(metrics.values()))
            k = (_mrr_key(first) or "mrr_at_10").rsplit("_", 1)[-1]
            parts.append(f"{label.format(k=k)}: " + ", ".join(values))
    return "   |   ".join(parts)


def wrap_caption(text: str, width: int) -> str:
    """Each paragraph of a caption wrapped to `width` characters."""
    return "\n".join(textwrap.fill(part, max(width, 60)) for part in text.split("\n"))


def _legend_handles(counts: Mapping[int, int]) -> list[Line2D]:
    return [
        Line2D([0], [0], color=COLORS[y], marker="o", markersize=4, lw=1.2, label=f"{NAMES[y]} (n={counts.get(y, 0)})")
        for y in (1, 0)
    ]


# ---------------------------------------------------------------- figures
def draw_umap(
    path: Path,
    layouts: Mapping[str, np.ndarray],
    segments: np.ndarray,
    labels: np.ndarray,
    titles: Mapping[str, str],
    caption: str,
) -> Path:
    """One panel per model: each pair a thin line between its two questions, coloured by label."""
    fig = Figure(figsize=(6.4 * len(layouts), 6.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layouts)))
    counts = {y: int((labels == y).sum()) for y in (0, 1)}
    for ax, (side, xy) in zip(axes, layouts.items()):
        for y in (0, 1):  # non-duplicates first, duplicates drawn on top
            mask = labels == y
            lines = np.stack([xy[segments[mask, 0]], xy[segments[mask, 1]]], axis=1)
            ax.add_collection(
                LineCollection(lines, colors=COLORS[y], linewidths=0.6 + 0.5 * y, alpha=0.4 + 0.4 * y, zorder=1 + y)
            )
            ends = xy[np.unique(segments[mask])]
            ax.scatter(ends[:, 0], ends[:, 1], s=9, color=COLORS[y], alpha=0.85, linewidths=0, zorder=3 + y)
        ax.autoscale_view()
        ax.set_title(titles[side], fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    # the figure title is the legend's title, so the key sits right under it, above both panels
    fig.legend(
        handles=_legend_handles(counts),
        loc="outside upper center",
        ncols=2,
        fontsize=9.5,
        frameon=False,
        title="UMAP of sampled question pairs",
        title_fontsize=13,
    )
    fig.supxlabel(wrap_caption(caption, 170 * len(layouts) // 2), fontsize=8.5)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.25)
    return path


def draw_histograms(
    path: Path,
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    thresholds: Mapping[str, float | None],
    titles: Mapping[str, str],
    caption: str,
) -> Path:
    """One panel per model: cosine score densities of duplicate and non-duplicate pairs, shared bins."""
    fig = Figure(figsize=(6.0 * len(scores), 4.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(scores), sharex=True, sharey=True))
    every = np.concatenate([np.asarray(s) for s in scores.values()])
    low, high = float(every.min()), float(every.max())
    bins = np.linspace(low - 0.01, high + 0.01, 41) if high - low < 0.02 else np.linspace(low, high, 41)
    counts = {y: int((labels == y).sum()) for y in (0, 1)}
    for ax, (side, s) in zip(axes, scores.items()):
        for y in (0, 1):
            if counts[y]:
                ax.hist(
                    s[labels == y],
                    bins=bins,
                    density=True,
                    histtype="stepfilled",
                    alpha=0.5,
                    color=COLORS[y],
                    edgecolor=COLORS[y],
                    linewidth=1.0,
                    label=f"{NAMES[y]} (n={counts[y]})",
                )
        threshold = thresholds.get(side)
        if threshold is not None and np.isfinite(threshold):
            ax.axvline(threshold, color="0.2", ls="--", lw=1.0, label="best-F1 threshold")
            ax.annotate(
                f"{threshold:.3f}",
                xy=(threshold, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3, -12),
                textcoords="offset points",
                ha="right",
                fontsize=8.5,
                color="0.2",
            )
        ax.set_title(titles[side], fontsize=11)
        ax.set_xlabel("cosine similarity")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("density")
    handles, names = axes[0].get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: (not names[i].startswith("dup"), i))  # duplicates first
    axes[0].legend(
        [handles[i] for i in order], [names[i] for i in order], loc="upper left", fontsize=8.5, framealpha=0.9
    )
    fig.suptitle("Cosine similarity of labeled pairs", fontsize=13)
    fig.supxlabel(wrap_caption(caption, 160 * len(scores) // 2), fontsize=8.5)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.25)
    return path


def render_figures(
    out_dir: str | Path,
    pairs: pd.DataFrame,
    keys: Sequence[str],
    embeddings: Mapping[str, np.ndarray],
    metrics: Mapping[str, Mapping[str, Any]],
    n_pairs: int = 300,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    split: str = "val",
) -> list[Path]:
    """UMAP and histogram PNGs of a split's labeled pairs for each model (side -> embeddings of `keys`).

    `pairs` has key1, key2, label; `embeddings[side]` rows line up with `keys`; `metrics[side]` gives
    the numbers in titles and captions (MRR@k, pair_ap, pair_best_f1, pair_threshold).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    row_of = {key: i for i, key in enumerate(keys)}
    labels = pairs["label"].to_numpy(np.int64)
    sides = [s for s in ("baseline", "finetuned") if s in embeddings] + [
        s for s in embeddings if s not in ("baseline", "finetuned")
    ]
    mrr = {s: metrics.get(s, {}).get(_mrr_key(metrics.get(s, {})) or "", None) for s in sides}
    k = (_mrr_key(metrics.get(sides[0], {})) or "mrr_at_10").rsplit("_", 1)[-1]
    line = metric_line({s: metrics[s] for s in sides if s in metrics})

    sample = cap_pairs(pairs, int(n_pairs), int(seed))
    points = list(dict.fromkeys([*sample["key1"], *sample["key2"]]))
    point_of = {key: i for i, key in enumerate(points)}
    segments = np.stack([sample["key1"].map(point_of), sample["key2"].map(point_of)], axis=1).astype(np.int64)
    layouts: dict[str, np.ndarray] = {}
    for side in sides:
        xy = umap_layout(embeddings[side][[row_of[p] for p in points]], n_neighbors, min_dist, seed)
        layouts[side] = procrustes(xy, layouts[sides[0]]) if layouts else xy
    umap_titles = {
        s: f"{SIDE_TITLES.get(s, s)}   MRR@{k} {fmt_metric(mrr[s], digits=3)} · pair AP "
        f"{fmt_metric(metrics.get(s, {}).get('pair_ap'), digits=3)}"
        for s in sides
    }
    aligned = " The fine-tuned layout is Procrustes-aligned to the baseline's." if len(sides) > 1 else ""
    umap_caption = (
        f"{len(sample)} {split} pairs (seeded sample, seed {seed}; {len(points)} questions), UMAP fitted "
        f"separately per model (cosine, n_neighbors={n_neighbors}, min_dist={min_dist}).{aligned} Lines join "
        f"the two questions of each labeled pair: duplicates (blue) should be short, non-duplicates (orange) long."
        f"\n{line}"
    )
    files = [
        draw_umap(
            out / "umap_pairs.png", layouts, segments, sample["label"].to_numpy(np.int64), umap_titles, umap_caption
        )
    ]

    scores = {s: pair_cosines(pairs, row_of, embeddings[s]) for s in sides}
    hist_titles = {
        s: f"{SIDE_TITLES.get(s, s)}   pair AP {fmt_metric(metrics.get(s, {}).get('pair_ap'), digits=3)} · "
        f"best F1 {fmt_metric(metrics.get(s, {}).get('pair_best_f1'), digits=3)}"
        for s in sides
    }
    thresholds = {s: metrics.get(s, {}).get("pair_threshold") for s in sides}
    hist_caption = (
        f"All {len(pairs)} labeled {split} pairs ({int(labels.sum())} duplicates, "
        f"{int(len(labels) - labels.sum())} non-duplicates); dashed: the best-F1 threshold. "
        f"Less overlap = better pair classification.\n{line}"
    )
    files.append(draw_histograms(out / "cosine_hist.png", scores, labels, thresholds, hist_titles, hist_caption))
    return files


def write_figures(out_dir: str | Path, result: EvalResult, data: PreparedData, umap: Any) -> list[Path]:
    """The run's figures from an evaluation result (its eval set and embeddings) and the eval group's `umap`."""
    es = result.eval_set
    metrics = {side: m for side, m in (("baseline", result.baseline), ("finetuned", result.finetuned)) if m}
    keys = np.asarray(es.keys, dtype=object)
    pairs = pd.DataFrame(  # the pairs scored (the split's, or its eval.max_pairs cap), as corpus keys
        {"key1": keys[es.pair_rows[:, 0]], "key2": keys[es.pair_rows[:, 1]], "label": es.pair_labels}
    )
    return render_figures(
        out_dir,
        pairs,
        es.keys,
        result.embeddings,
        metrics,
        n_pairs=umap.n_pairs,
        n_neighbors=umap.n_neighbors,
        min_dist=umap.min_dist,
        seed=umap.seed,
        split=es.split,
    )
