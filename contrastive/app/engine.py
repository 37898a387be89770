"""What the tabs do: `Engine` compares, searches and deduplicates through two encoders (texts -> normalized
embeddings), the served checkpoint and the untuned baseline; testable without a browser or a model."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from contrastive.app.checkpoints import Thresholds
from contrastive.app.index import BackgroundIndex
from contrastive.errors import DataError
from contrastive.search import (
    CorpusIndex,
    Limits,
    check_question,
    check_questions,
    duplicate_groups,
    groups_table,
    read_questions_file,
    results_wanted,
    unique_questions,
)

Report = Callable[[int, int], None]  # (texts encoded so far, texts in all), told after each encode batch
Progress = Callable[[int, int, str], None]  # (done, total, what is being done): a long request's progress bar


class Embed(Protocol):
    """texts -> (n, d) float32, L2-normalized rows; `progress`, if given, is told after each batch."""

    def __call__(self, texts: Sequence[str], progress: Report | None = None) -> np.ndarray: ...


def stage(progress: Progress | None, what: str) -> Report | None:
    """An encode's batch reports as one stage of `progress`, described by `what`."""
    return None if progress is None else lambda done, total: progress(done, total, what)


def encoder(model: Any, batch_size: int, progress_from: int = 1000) -> Embed:
    """texts -> normalized float32 embeddings through contrastive.model.encode; a progress bar on the
    console for lists of at least `progress_from` texts (corpus indexing), and `progress` told per batch."""
    from contrastive.model import encode

    def embed(texts: Sequence[str], progress: Report | None = None) -> np.ndarray:
        texts = list(texts)
        out = encode(model, texts, batch_size, show_progress=len(texts) >= progress_from, progress=progress)
        return np.asarray(out, dtype=np.float32)

    return embed


@dataclass
class Engine:
    """The app's logic: embeddings in, tables and verdicts out; the UI calls only these methods."""

    embed: Embed  # the served checkpoint
    embed_baseline: Embed | None  # the untuned baseline; None when the served model *is* the baseline
    thresholds: Thresholds
    limits: Limits
    index: BackgroundIndex
    top_k: int = 10
    max_top_k: int = 50
    chunk_size: int = 1024
    baseline_max_questions: int = 1000  # dedup lists longer than this skip the baseline's encode and columns
    index_wait_s: float = 600.0
    names: dict[str, str] = field(default_factory=lambda: {"finetuned": "fine-tuned", "baseline": "baseline"})

    # -- Compare
    def compare(self, q1: str | None, q2: str | None) -> list[dict[str, Any]]:
        """Cosine of the two questions under each model, the threshold and the verdict."""
        a = check_question(q1, self.limits, "question 1")
        b = check_question(q2, self.limits, "question 2")
        rows = []
        sides = [("finetuned", self.embed, self.thresholds.finetuned)]
        if self.embed_baseline is not None:
            sides.append(("baseline", self.embed_baseline, self.thresholds.baseline))
        for side, embed, threshold in sides:
            emb = embed([a, b])
            cosine = float(emb[0] @ emb[1])
            rows.append(
                {
                    "model": side,
                    "name": self.names[side],
                    "cosine": cosine,
                    "threshold": threshold,
                    "duplicate": cosine >= threshold,
                }
            )
        return rows

    # -- Search
    def index_upload(self, path: str | os.PathLike, progress: Progress | None = None) -> CorpusIndex:
        """An in-memory index of an uploaded CSV/TXT of questions (repeats removed), `progress` told per batch."""
        texts = unique_questions(read_questions_file(path, self.limits))
        name = Path(path).name
        return CorpusIndex(texts, self.embed(texts, stage(progress, f"indexing {name}")), f"upload {name}")

    def search(
        self,
        query: str | None,
        k: int | float | None,
        corpus: CorpusIndex | None = None,
        progress: Progress | None = None,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Top-k corpus questions for a query with cosine scores and at-threshold flags (`duplicate`), under the
        baseline too where there is one (`baseline_cosine`, `baseline_duplicate`), and timings in ms; a search
        that waits for the default corpus's first encode tells `progress` how far it is."""
        text = check_question(query, self.limits, "query")
        k = results_wanted(k, self.top_k, self.max_top_k)
        index = corpus if corpus is not None else self.index.get(self.index_wait_s, progress)
        if not len(index):
            raise DataError("the search corpus is empty")
        t0 = time.perf_counter()
        query_emb = self.embed([text])
        t1 = time.perf_counter()
        hits = index.search(query_emb, k)[0]
        t2 = time.perf_counter()
        table = pd.DataFrame(
            [
                {"rank": rank, "cosine": round(score, 4), "question": index.texts[i]}
                for rank, (i, score) in enumerate(hits, 1)
            ],
            columns=["rank", "cosine", "question"],
        )
        table["duplicate"] = table["cosine"] >= self.thresholds.finetuned
        if self.embed_baseline is not None:  # the same hits, scored by the untuned baseline
            emb = self.embed_baseline([text, *table["question"]])
            table["baseline_cosine"] = np.round((emb[1:] @ emb[0]).astype(float), 4)
            table["baseline_duplicate"] = table["baseline_cosine"] >= self.thresholds.baseline
        timing = {
            "encode_ms": (t1 - t0) * 1e3,
            "search_ms": (t2 - t1) * 1e3,
            "total_ms": (t2 - t0) * 1e3,
            "corpus": len(index),
            "description": index.description,
        }
        return table, timing

    # -- Deduplicate
    def questions_from(self, text: str | None, path: str | os.PathLike | None) -> tuple[list[str], str]:
        """The list to deduplicate: the uploaded file if any, else the pasted lines."""
        if path:
            return read_questions_file(path, self.limits), f"upload {Path(path).name}"
        return check_questions((text or "").splitlines(), self.limits, "pasted list"), "pasted list"

    def baseline_in_dedup(self, n_texts: int) -> bool:
        """Whether a dedup of `n_texts` questions also encodes them with the baseline (its columns)."""
        return self.embed_baseline is not None and n_texts <= self.baseline_max_questions

    def dedup(
        self, texts: Sequence[str], threshold: float | None = None, progress: Progress | None = None
    ) -> tuple[pd.DataFrame, list[list[int]]]:
        """Groups of duplicates (connected components of pairs with cosine >= threshold), one row per question;
        with a baseline and at most `baseline_max_questions` texts, each row's baseline cosine to its group's first
        and its group under the baseline at the baseline's threshold (`baseline_cosine_to_first`,
        `baseline_group`). `progress` is told each encode batch (the time a long list takes)."""
        threshold = self.thresholds.finetuned if threshold is None else float(threshold)
        if not -1.0 <= threshold <= 1.0:
            raise DataError(f"threshold: {threshold} is not a cosine in [-1, 1]")
        with_baseline = self.baseline_in_dedup(len(texts))
        emb = self.embed(list(texts), stage(progress, "encoding" + (" (fine-tuned)" if with_baseline else "")))
        groups = duplicate_groups(emb, threshold, self.chunk_size)
        table = groups_table(texts, groups, emb)
        if with_baseline:  # the same rows under the baseline, at its own threshold
            base = self.embed_baseline(list(texts), stage(progress, "encoding (untuned baseline)"))
            mine = np.array([i for group in groups for i in group])  # groups_table's row order
            first = np.array([group[0] for group in groups for _ in group])
            table["baseline_cosine_to_first"] = np.round(np.sum(base[mine] * base[first], axis=1).astype(float), 4)
            base_groups = duplicate_groups(base, self.thresholds.baseline, self.chunk_size)
            number = {i: n for n, group in enumerate(base_groups, 1) for i in group}
            table["baseline_group"] = [number[i] for i in mine]
        return table, groups
