"""What a model is scored on: the split's questions as a corpus (plus distractors), its queries and labeled pairs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.data import PreparedData, question_key, read_questions
from contrastive.errors import ConfigError, DataError
from contrastive.utils import sha256_hex


@dataclass
class EvalSet:
    """What a model is scored on for one split: corpus, queries and labeled pairs, all as corpus rows.

    Corpus rows [0, n_split) are the split's questions (sorted by key), the rest distractors, whose
    component is -1 so they are never relevant and never queries.
    """

    split: str
    keys: list[str]
    texts: list[str]
    comp: np.ndarray  # duplicate component per corpus row; -1 for distractors
    n_split: int
    queries: np.ndarray  # corpus rows that are queries
    n_relevant: np.ndarray  # relevant corpus rows per query (the other members of its component)
    pair_rows: np.ndarray  # (n_pairs, 2) corpus rows of each labeled pair
    pair_labels: np.ndarray  # int 0/1 per pair
    protocol: dict[str, Any] = field(default_factory=dict)  # distractor settings, for the cache key

    @property
    def corpus_hash(self) -> str:
        """A hash of the corpus keys in order: embeddings cached for it line up row by row."""
        return sha256_hex("\n".join(self.keys))

    @property
    def n_distractors(self) -> int:
        """Corpus rows that are not questions of the split."""
        return len(self.keys) - self.n_split


def split_questions(frame: pd.DataFrame) -> pd.DataFrame:
    """The split's unique questions sorted by key: columns key, text (first occurrence), comp."""
    both = pd.concat(
        [
            frame[["key1", "question1", "comp1"]].set_axis(["key", "text", "comp"], axis=1),
            frame[["key2", "question2", "comp2"]].set_axis(["key", "text", "comp"], axis=1),
        ],
        ignore_index=True,
    )
    unique = both.drop_duplicates("key").sort_values("key", kind="stable").reset_index(drop=True)
    unique["text"] = unique["text"].astype(str)
    unique["comp"] = unique["comp"].astype(np.int64)
    return unique


def distractor_questions(
    spec: str, data: PreparedData, exclude: set[str], max_n: int | None, seed: int
) -> pd.DataFrame:
    """The distractors (key, text) sorted by key: none, the train split's questions, or a file's; capped."""
    if spec == "none":
        return pd.DataFrame({"key": [], "text": []}, dtype=object)
    if spec == "train":
        if "train" not in data.splits:
            raise ConfigError("eval.distractors='train': the data has no train split")
        pool = split_questions(data.splits["train"])[["key", "text"]]
    else:
        texts = read_questions(spec, "eval.distractors")
        pool = pd.DataFrame({"key": [question_key(t) for t in texts], "text": texts})
        pool = pool.drop_duplicates("key").sort_values("key", kind="stable")
    pool = pool[~pool["key"].isin(exclude)].reset_index(drop=True)
    if max_n is not None and len(pool) > max_n:
        keep = np.sort(np.random.default_rng(seed).choice(len(pool), size=int(max_n), replace=False))
        pool = pool.iloc[keep].reset_index(drop=True)
    return pool


def build_eval_set(
    frame: pd.DataFrame, split: str, distractors: pd.DataFrame | None = None, protocol: Mapping[str, Any] | None = None
) -> EvalSet:
    """Corpus (split questions + distractors), queries (component >= 2 members) and labeled pairs."""
    questions = split_questions(frame)
    extra = distractors if distractors is not None else pd.DataFrame({"key": [], "text": []})
    extra = extra[~extra["key"].isin(set(questions["key"]))]
    keys = questions["key"].tolist() + extra["key"].tolist()
    texts = questions["text"].tolist() + extra["text"].astype(str).tolist()
    comp = np.concatenate([questions["comp"].to_numpy(np.int64), np.full(len(extra), -1, np.int64)])
    sizes = questions["comp"].map(questions["comp"].value_counts()).to_numpy(np.int64)
    queries = np.flatnonzero(sizes >= 2)
    row_of = {key: i for i, key in enumerate(questions["key"])}
    pair_rows = np.stack(
        [frame["key1"].map(row_of).to_numpy(np.int64), frame["key2"].map(row_of).to_numpy(np.int64)], axis=1
    ).reshape(-1, 2)
    return EvalSet(
        split=split,
        keys=keys,
        texts=texts,
        comp=comp,
        n_split=len(questions),
        queries=queries,
        n_relevant=sizes[queries] - 1,
        pair_rows=pair_rows,
        pair_labels=frame["label"].to_numpy(np.int64),
        protocol=dict(protocol or {}),
    )


def split_frame(ev: Any, data: PreparedData, split: str) -> pd.DataFrame:
    """The split's labeled pairs, capped at `ev.max_pairs` (seeded whole linked groups, as data.max_pairs caps
    train) when set."""
    frame = data.splits[split]
    cap = getattr(ev, "max_pairs", None)
    if not cap or len(frame) <= cap:
        return frame
    from contrastive.pairs import cap_pairs  # imports torch

    return cap_pairs(frame, int(cap), int(ev.seed))


def eval_set_for(ev: Any, data: PreparedData, split: str | None = None) -> EvalSet:
    """The evaluation set the eval group `ev` describes (ev.split unless `split`), distractors included."""
    split = split or ev.split
    if split not in data.splits:
        raise ConfigError(f"eval.split={split!r}: the data has splits {', '.join(data.splits)}")
    frame = data.splits[split]
    if frame.empty:
        raise DataError(f"eval.split={split!r}: the split holds no pairs")
    frame = split_frame(ev, data, split)
    spec = str(ev.distractors)
    exclude = set(frame["key1"]) | set(frame["key2"])
    extra = distractor_questions(spec, data, exclude, ev.max_distractors, int(ev.seed))
    protocol = {"distractors": spec, "max_distractors": ev.max_distractors, "seed": int(ev.seed)}
    if getattr(ev, "max_pairs", None):  # only when capped: an uncapped run keeps its cache key
        protocol["max_pairs"] = int(ev.max_pairs)
    if spec not in ("none", "train"):
        protocol["distractors_sha256"] = sha256_hex(Path(spec).expanduser().read_bytes())
    return build_eval_set(frame, split, extra, protocol)


def intermediate_subset(ev: Any, data: PreparedData, split: str | None = None) -> EvalSet:
    """The eval set of intermediate objectives when `ev.intermediate_max_pairs` is set: a seeded subset of whole
    linked groups of at most that many split pairs, no distractors (cheap enough to evaluate often on a CPU)."""
    from contrastive.pairs import cap_pairs  # imports torch

    split = split or ev.split
    cap = int(ev.intermediate_max_pairs)
    frame = cap_pairs(split_frame(ev, data, split), cap, int(ev.seed))
    return build_eval_set(frame, split, None, {"distractors": "none", "subset_pairs": cap})
