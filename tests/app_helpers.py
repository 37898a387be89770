"""Helpers of the app tests: a bag-of-words stand-in encoder, a ready index, an Engine, model dirs, metrics."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from contrastive.app.checkpoints import Thresholds
from contrastive.app.engine import Engine
from contrastive.app.index import BackgroundIndex
from contrastive.search import CorpusIndex, Limits

LIMITS = Limits(max_chars=200, max_questions=50, max_upload_bytes=10_000)
DIM = 256


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


BATCH = 2  # the stand-in's "batch": it reports progress after every BATCH texts, as encode does per batch


def bag_of_words(texts, progress=None) -> np.ndarray:
    """A model stand-in: hashed bag of lower-cased words, L2-normalized (shared words -> higher cosine)."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
        if progress is not None and (row + 1 == len(texts) or (row + 1) % BATCH == 0):
            progress(row + 1, len(texts))
    out[~out.any(axis=1), 0] = 1.0
    return unit(out)


def ready_index(texts, description="test corpus") -> BackgroundIndex:
    return BackgroundIndex(
        lambda _: CorpusIndex(list(texts), bag_of_words(texts), description), description, len(texts)
    ).start()


def engine(
    texts=("How do I learn Python?", "How can I lose weight?"), *, ft=0.6, base=0.9, with_baseline=True, **kw
) -> Engine:
    thresholds = Thresholds(ft, base, True, "metrics.json")
    return Engine(bag_of_words, bag_of_words if with_baseline else None, thresholds, LIMITS, ready_index(texts), **kw)


def model_dir(path: Path, mtime: float | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "modules.json").write_text("[]")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def fake_metrics(ft=0.83, base=0.77) -> dict:
    return {
        "split": "val",
        "objective": {"name": "mrr_at_10", "value": 0.9},
        "finetuned": {"mrr_at_10": 0.9, "pair_threshold": ft},
        "baseline": {"mrr_at_10": 0.8, "pair_threshold": base},
    }
