"""The Evaluator: a model's metrics beside the untuned baseline's (cached) on one split, with paired bootstrap CIs.

Built once per run from the eval and model groups and the prepared data; it keeps the eval sets it builds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contrastive.data import PreparedData
from contrastive.evaluation.bootstrap import delta_table
from contrastive.evaluation.cache import baseline_cache_key, cache_path, cached_embeddings
from contrastive.evaluation.eval_sets import EvalSet, eval_set_for, intermediate_subset
from contrastive.evaluation.metrics import (
    COUNT_KEYS,
    PAIR_KEYS,
    Scored,
    pair_metrics,
    pair_scores,
    retrieval_per_query,
    score_embeddings,
    scoring_args,
)
from contrastive.model import Model, backend_args, encode, load_model
from contrastive.utils import fmt_delta, fmt_metric, json_safe

log = logging.getLogger(__name__)


def objective_entry(names: Any, metrics: Mapping[str, float]) -> dict[str, Any]:
    """{"name", "value"} of eval.objective (a metric name, or a list of them)."""
    if isinstance(names, str):
        return {"name": names, "value": metrics[names]}
    names = list(names)
    return {"name": names, "value": [metrics[n] for n in names]}


# ---------------------------------------------------------------- the result
@dataclass
class EvalResult:
    """One evaluation: what metrics.json holds (split .. delta) and the arrays behind it (never written)."""

    split: str
    objective: dict[str, Any]  # {"name", "value"} of eval.objective
    finetuned: dict[str, float]
    baseline: dict[str, float] | None  # None without eval.baseline
    delta: dict[str, dict[str, float | None]] | None  # per metric: delta, ci_low, ci_high
    eval_set: EvalSet
    embeddings: dict[str, np.ndarray]  # "finetuned" (and "baseline"), rows aligned with eval_set.keys
    scored: dict[str, Scored]  # the same sides' per-query scores and pair scores
    n_boot: int
    ci: float
    seconds: dict[str, float] = field(default_factory=dict)  # encode / score / baseline / bootstrap wall times
    baseline_cache: str | None = None  # the baseline's .npy file
    baseline_cache_hit: bool | None = None

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """What metrics.json holds, JSON-safe: split, objective, the metrics and deltas, then `extra` keys."""
        doc = {
            "split": self.split,
            "objective": self.objective,
            "finetuned": self.finetuned,
            "baseline": self.baseline,
            "delta": self.delta,
        }
        return json_safe({**doc, **extra})

    def table(self) -> str:
        """The printed table: baseline | fine-tuned | delta [CI] per metric, with the split's sizes on top."""
        return format_table(self)


def format_table(result: EvalResult) -> str:
    """baseline | fine-tuned | delta [CI] per metric, with the split's sizes on top."""
    ft, base, delta = result.finetuned, result.baseline, result.delta or {}
    head = [f"split={result.split}"] + [f"{n[2:]}={int(ft[n]):,}" for n in COUNT_KEYS if n in ft]
    head.append(f"distractors={result.eval_set.n_distractors:,}")
    if base is not None:
        head.append(f"bootstrap={result.n_boot}")
    names = [n for n in ft if n not in COUNT_KEYS]
    width = max(len(n) for n in [*names, "metric"]) + 2
    lines = ["  ".join(head)]
    if base is None:
        lines.append(f"{'metric':<{width}}{'fine-tuned':>11}")
        lines += [f"{n:<{width}}{fmt_metric(ft[n]):>11}" for n in names]
    else:
        lines.append(f"{'metric':<{width}}{'baseline':>10}{'fine-tuned':>12}   delta [{result.ci:.0%} CI]")
        for n in names:
            values = f"{n:<{width}}{fmt_metric(base.get(n)):>10}{fmt_metric(ft[n]):>12}"
            lines.append(f"{values}   {fmt_delta(delta.get(n, {}))}")
    if result.objective:
        lines.append(f"objective: {result.objective['name']} = {result.objective['value']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the evaluator
class Evaluator:
    """Scores models on the eval group's protocol beside the model group's untuned model.

    `ev`: the eval group; `model`: the model group (the baseline: name_or_path, max_seq_length, backend);
    `device`: where the baseline loads; `baseline_loader`: a zero-argument callable returning the untuned
    model, called only when the baseline cache misses (default: load the model group's model).
    """

    def __init__(
        self,
        ev: Any,
        model: Any,
        data: PreparedData,
        device: str | None = None,
        baseline_loader: Callable[[], Model] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.ev, self.model, self.data, self.device = ev, model, data, device
        self.baseline_loader = baseline_loader or self.load_baseline
        self.show_progress = show_progress
        self._sets: dict[tuple[str, str], EvalSet] = {}

    def load_baseline(self) -> Model:
        """The model group's untuned model on its configured backend."""
        m = self.model
        return load_model(m.name_or_path, m.max_seq_length, self.device, **backend_args(m))

    # ------------------------------------------------------------ eval sets, built once each
    def eval_set(self, split: str | None = None) -> EvalSet:
        """The eval set of `split` (eval.split by default), distractors included."""
        split = split or self.ev.split
        if ("full", split) not in self._sets:
            self._sets["full", split] = eval_set_for(self.ev, self.data, split)
        return self._sets["full", split]

    def intermediate_set(self, split: str | None = None) -> EvalSet:
        """The eval set of intermediate objectives: the split's own, or its seeded subset of whole linked groups
        of at most `eval.intermediate_max_pairs` pairs."""
        split = split or self.ev.split
        if not self.ev.intermediate_max_pairs:
            return self.eval_set(split)
        if ("intermediate", split) not in self._sets:
            self._sets["intermediate", split] = intermediate_subset(self.ev, self.data, split)
        return self._sets["intermediate", split]

    # ------------------------------------------------------------ the baseline
    def baseline_embeddings(
        self, es: EvalSet, untuned: Model | None = None, precomputed: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool, Path]:
        """The untuned model's embeddings of an eval set: from the cache, else computed and cached.

        On a miss: `precomputed` when given, else encoded by `untuned` (a model still untuned), else by the
        baseline loader's model. Returns (embeddings, cache hit, cache path).
        """
        key = baseline_cache_key(self.model, self.data, es)
        path = cache_path(self.ev.cache_dir, key)

        def compute() -> np.ndarray:
            if precomputed is not None:
                return precomputed
            log.info("baseline cache miss: encoding %d questions with %s", len(es.texts), self.model.name_or_path)
            encoder = untuned if untuned is not None else self.baseline_loader()
            return encode(encoder, es.texts, self.ev.batch_size, self.show_progress)

        emb, hit = cached_embeddings(path, key, len(es.texts), compute)
        return emb, hit, path

    def warm_baseline(self, untuned: Model, split: str | None = None) -> bool:
        """Fill the baseline cache with a model that is still untuned (before training): no second model load.

        Returns True when the cache already held the embeddings (or there is no baseline to score).
        """
        if not self.ev.baseline:
            return True
        return self.baseline_embeddings(self.eval_set(split), untuned)[1]

    # ------------------------------------------------------------ scoring
    def objective(self, model: Model, split: str | None = None) -> float:
        """The (first) eval.objective of `model` alone on the intermediate set, no baseline, no bootstrap."""
        ev = self.ev
        es = self.intermediate_set(split)
        name = ev.objective if isinstance(ev.objective, str) else list(ev.objective)[0]
        emb = encode(model, es.texts, ev.batch_size, show_progress=False)
        if name in PAIR_KEYS:
            return pair_metrics(pair_scores(emb, es), es.pair_labels)[name]
        per_query = retrieval_per_query(emb, es, **scoring_args(ev))
        return float(per_query[name].mean()) if len(es.queries) else float("nan")

    def run(self, model: Model, split: str | None = None, untuned: bool = False) -> EvalResult:
        """Score `model` and the untuned baseline (cached) on one split, with the deltas' bootstrap CIs.

        `untuned=True` says `model` IS the untuned baseline: on a cache miss its own embeddings are the baseline's.
        """
        ev = self.ev
        es = self.eval_set(split)
        clock = time.perf_counter()
        emb = encode(model, es.texts, ev.batch_size, self.show_progress)
        seconds = {"encode_finetuned": time.perf_counter() - clock}
        clock = time.perf_counter()
        ft = score_embeddings(emb, es, **scoring_args(ev))
        seconds["score_finetuned"] = time.perf_counter() - clock
        result = EvalResult(
            split=es.split,
            objective=objective_entry(ev.objective, ft.metrics),
            finetuned=ft.metrics,
            baseline=None,
            delta=None,
            eval_set=es,
            embeddings={"finetuned": emb},
            scored={"finetuned": ft},
            n_boot=int(ev.n_boot),
            ci=float(ev.ci),
            seconds=seconds,
        )
        if ev.baseline:
            clock = time.perf_counter()
            base_emb, hit, path = self.baseline_embeddings(es, precomputed=emb if untuned else None)
            seconds["baseline_embeddings"] = time.perf_counter() - clock
            base = score_embeddings(base_emb, es, **scoring_args(ev))
            clock = time.perf_counter()
            result.delta = delta_table(ft, base, es.pair_labels, int(ev.n_boot), float(ev.ci), int(ev.seed))
            seconds["bootstrap"] = time.perf_counter() - clock
            result.baseline = base.metrics
            result.embeddings["baseline"] = base_emb
            result.scored["baseline"] = base
            result.baseline_cache, result.baseline_cache_hit = str(path), hit
        return result
