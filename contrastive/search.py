"""Semantic search and duplicate grouping over L2-normalized embeddings (the exact kernels of contrastive.topk),
and reading question lists (pasted text, CSV or TXT uploads) within limits. No model and no UI in here."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.data import UnionFind, question_key, read_questions
from contrastive.errors import DataError
from contrastive.topk import blocked_top_k, pairs_at_least

SEARCH_BLOCK = 1 << 22  # scores per search block (16 MB of float32): queries x corpus rows scored at once


@dataclass
class CorpusIndex:
    """Texts and their L2-normalized float32 embeddings (row i embeds texts[i]); cosine = dot product."""

    texts: list[str]
    embeddings: np.ndarray
    description: str = ""

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.texts):
            raise ValueError(f"embeddings of shape {self.embeddings.shape} do not match {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query embedding (normalized), the k nearest corpus rows as (row, cosine), best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        width = max(SEARCH_BLOCK // max(len(queries), 1), 1)  # a few queries: the whole corpus in one block
        idx, vals = blocked_top_k(queries, self.embeddings, None, k, width, len(queries))
        return [[(int(i), float(v)) for i, v in zip(ri, rv)] for ri, rv in zip(idx, vals)]


# ---------------------------------------------------------------- duplicate groups
def duplicate_groups(embeddings: np.ndarray, threshold: float, chunk_size: int = 1024) -> list[list[int]]:
    """Connected components of the pairs with cosine >= threshold; every row is in exactly one group.

    Groups are ordered by size (largest first), then by their first row; rows inside a group ascend.
    """
    sets = UnionFind()
    for i in range(len(embeddings)):
        sets.find(i)
    for i, j, _ in pairs_at_least(embeddings, threshold, chunk_size):
        sets.union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(len(embeddings)):
        members.setdefault(sets.find(i), []).append(i)
    return sorted(members.values(), key=lambda g: (-len(g), g[0]))


def groups_table(texts: Sequence[str], groups: Sequence[Sequence[int]], embeddings: np.ndarray) -> pd.DataFrame:
    """One row per question: group number (1 = largest), group size, the group's first question, and the
    question's cosine to that representative."""
    emb = np.asarray(embeddings, dtype=np.float32)
    rows = []
    for number, group in enumerate(groups, start=1):
        rep = group[0]
        for i in group:
            rows.append(
                {
                    "group": number,
                    "size": len(group),
                    "question": texts[i],
                    "cosine_to_first": round(float(emb[i] @ emb[rep]), 4),
                    "representative": texts[rep],
                }
            )
    return pd.DataFrame(rows, columns=["group", "size", "question", "cosine_to_first", "representative"])


# ---------------------------------------------------------------- corpus identity
def corpus_fingerprint(texts: Iterable[str]) -> str:
    """A short content hash of an ordered list of texts."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- reading questions within limits
@dataclass(frozen=True)
class Limits:
    """Input limits of the app: characters per question, questions per list, upload size in bytes."""

    max_chars: int
    max_questions: int
    max_upload_bytes: int


def encodable(text: str, name: str) -> str:
    """`text` if it is valid Unicode (a lone surrogate from a broken client cannot be tokenized), else a DataError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{name}: invalid character at position {exc.start + 1} (not valid Unicode text)") from None
    return text


def results_wanted(value: Any, default: int, largest: int) -> int:
    """The number of results asked for: `default` when empty, else a whole number in 1..largest (DataError)."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= largest:
        raise DataError(f"k: {value!r} results asked for, choose a whole number from 1 to {largest}")
    return int(number)


def check_question(text: str | None, limits: Limits, name: str = "question") -> str:
    """A stripped, non-empty question within the character limit, else a DataError naming it."""
    text = encodable((text or "").strip(), name)
    if not text:
        raise DataError(f"{name}: empty; type a question")
    if len(text) > limits.max_chars:
        raise DataError(f"{name}: {len(text):,} characters, the limit is {limits.max_chars:,}")
    return text


def check_questions(texts: Iterable[str], limits: Limits, origin: str) -> list[str]:
    """Stripped non-empty lines within the per-question and list-size limits, else a DataError."""
    out = []
    for number, raw in enumerate(texts, start=1):
        text = encodable("" if raw is None else str(raw).strip(), f"{origin}: item {number}")
        if not text:
            continue
        if len(text) > limits.max_chars:
            raise DataError(f"{origin}: item {number} has {len(text):,} characters, the limit is {limits.max_chars:,}")
        out.append(text)
        if len(out) > limits.max_questions:
            raise DataError(
                f"{origin}: more than {limits.max_questions:,} questions, the limit is {limits.max_questions:,}"
            )
    if not out:
        raise DataError(f"{origin}: no questions found")
    return out


def unique_questions(texts: Iterable[str]) -> list[str]:
    """Texts with repeats (same question_key) removed, first occurrence kept, order preserved."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = question_key(text)
        if key not in seen:
            seen.add(key)
            out.append(text)
    return out


def read_questions_file(path: str | os.PathLike, limits: Limits) -> list[str]:
    """Questions from an uploaded .txt (one per line) or .csv ('question' column, question1+question2, or
    a single column), within the upload-size, list-size and length limits."""
    file = Path(path)
    origin = f"upload {file.name}"
    if not file.is_file():
        raise DataError(f"{origin}: file not found")
    size = file.stat().st_size
    if size > limits.max_upload_bytes:
        raise DataError(f"{origin}: {size / 1e6:.1f} MB, the limit is {limits.max_upload_bytes / 1e6:.1f} MB")
    if file.suffix.lower() not in (".csv", ".txt", ".text", ""):
        raise DataError(f"{origin}: unsupported file type {file.suffix.lower()!r}; upload .csv or .txt")
    items = read_questions(file, origin)
    return check_questions(items, limits, origin)
