"""Helpers of the evaluation tests: a stand-in encoder, synthetic splits, clustered embeddings, ranx scores."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from contrastive.cli import compose_config
from contrastive.evaluation import EvalSet


class FakeModel:
    """A stand-in encoder: one seeded random vector per text; records every batch it encodes."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self.dim, self.seed = dim, seed
        self.batches: list[list[str]] = []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def vector(self, text: str) -> np.ndarray:
        digest = hashlib.blake2b(f"{self.seed}:{text}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "big")).normal(size=self.dim).astype(np.float32) * 3

    def encode(self, texts, batch_size=32, **kwargs) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([self.vector(t) for t in texts])

    @property
    def n_encoded(self) -> int:
        return sum(len(b) for b in self.batches)


def frame_from_components(sizes: list[int], negatives: list[tuple[int, int]] = ()) -> pd.DataFrame:
    """A split DataFrame: component c has sizes[c] questions q{c}_{i} chained by duplicates, plus negatives."""
    rows = []
    for c, size in enumerate(sizes):
        for i in range(1, size):
            rows.append((f"q{c}_{i - 1}", f"q{c}_{i}", 1, c, c))
    for a, b in negatives:
        rows.append((f"q{a}_0", f"q{b}_0", 0, a, b))
    singles = [c for c, size in enumerate(sizes) if size == 1 and not any(c in nb for nb in negatives)]
    if singles:
        raise ValueError(f"components {singles} have no pair")
    frame = pd.DataFrame(rows, columns=["question1", "question2", "label", "comp1", "comp2"])
    frame["key1"], frame["key2"] = frame["question1"].str.lower(), frame["question2"].str.lower()
    return frame


def random_split(n_comp: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_comp).tolist()
    negatives = [(c, (c + 1) % n_comp) for c in range(n_comp)]
    return frame_from_components(sizes, negatives)


def clustered_embeddings(es: EvalSet, dim: int, noise: float, seed: int) -> np.ndarray:
    """Unit rows near a random centre per component, so ranking metrics land strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(es.comp.max()) + 2, dim))
    emb = centres[es.comp] + noise * rng.normal(size=(len(es.comp), dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def ranx_scores(emb: np.ndarray, es: EvalSet, metrics: list[str]) -> dict[str, float]:
    """The same metrics by ranx from the full score matrix (every corpus row but the query itself)."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels, run = {}, {}
    full = emb[es.queries] @ emb.T
    for n, q in enumerate(es.queries):
        rel = np.flatnonzero((es.comp == es.comp[q]) & (np.arange(len(es.comp)) != q))
        qrels[f"q{q}"] = {f"d{d}": 1 for d in rel}
        run[f"q{q}"] = {f"d{d}": float(full[n, d]) for d in range(len(es.comp)) if d != q}
    return ranx_evaluate(Qrels(qrels), Run(run), metrics, make_comparable=True)


def eval_config(tmp_path, *overrides: str):
    """conf/evaluate.yaml on the fixture, its embedding cache in tmp_path, a small bootstrap."""
    return compose_config(
        ["data=fixture", f"eval.cache_dir={tmp_path / 'cache'}", "eval.n_boot=200", *overrides], "evaluate"
    )
