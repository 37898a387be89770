"""Section `eval_cost`: wall time and peak memory of scoring 10k / 50k / 100k questions (synthetic embeddings, one
subprocess per size), and the cached baseline's second evaluation as a share of its first."""

from __future__ import annotations

import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from contrastive.bench.common import Inputs, Row, note, run_child, unit_vectors

# The evaluation API the section times (one place to repoint when it moves).
from contrastive.evaluation import EvalSet, Evaluator, score_embeddings, scoring_args


def synthetic_eval_set(n: int, query_share: float, pairs_per_question: float, seed: int):
    """An EvalSet of `n` questions: a `query_share` of them in duplicate components of 2-3, the rest singletons,
    and about `pairs_per_question * n` labeled pairs (duplicates and random non-duplicates). Texts are empty."""
    rng = np.random.default_rng(seed)
    in_groups = int(round(n * query_share))
    sizes: list[int] = []
    while sum(sizes) < in_groups:
        sizes.append(int(rng.integers(2, 4)))
    if sizes and sum(sizes) > in_groups:
        sizes[-1] -= sum(sizes) - in_groups
        if sizes[-1] < 2:
            sizes.pop()
    grouped = sum(sizes)
    comp = np.concatenate(
        [np.repeat(np.arange(len(sizes)), sizes), np.arange(len(sizes), len(sizes) + n - grouped)]
    ).astype(np.int64)
    comp = comp[rng.permutation(n)]
    counts = np.bincount(comp)
    queries = np.flatnonzero(counts[comp] >= 2)
    n_pairs = int(round(n * pairs_per_question))
    first_of: dict[int, int] = {}
    for row in queries:
        first_of.setdefault(int(comp[row]), int(row))
    dup = np.array([(first_of[int(comp[r])], r) for r in queries if first_of[int(comp[r])] != r], dtype=np.int64)
    dup = dup.reshape(-1, 2)[: n_pairs // 2]
    neg = rng.integers(0, n, size=(n_pairs - len(dup), 2))
    neg = neg[comp[neg[:, 0]] != comp[neg[:, 1]]]
    pair_rows = np.concatenate([dup, neg]).astype(np.int64)
    labels = np.concatenate([np.ones(len(dup)), np.zeros(len(neg))]).astype(np.int64)
    keys = [f"q{i}" for i in range(n)]
    return EvalSet(
        split="synthetic",
        keys=keys,
        texts=[""] * n,
        comp=comp,
        n_split=n,
        queries=queries,
        n_relevant=counts[comp[queries]] - 1,
        pair_rows=pair_rows,
        pair_labels=labels,
    )


def status_bytes(field_name: str) -> int | None:
    """A `Vm*` field of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:  # pragma: no cover - non-Linux or restricted
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size: VmHWM (since the last reset), else ru_maxrss (which a child inherits from its
    parent across fork + exec, hence the reset above and a fresh process per size)."""
    return status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def eval_cost_child(
    n: int,
    dim: int,
    query_share: float,
    pairs_per_question: float,
    seed: int,
    k: int,
    map_k: int,
    chunk_size: int,
    query_chunk: int,
) -> dict[str, Any]:
    """In a fresh process: score synthetic embeddings of `n` questions; wall time and peak memory above the inputs."""
    es = synthetic_eval_set(n, query_share, pairs_per_question, seed)
    emb = unit_vectors(n, dim, seed)
    reset = reset_peak_rss()
    before = status_bytes("VmRSS") or peak_rss_bytes()
    start = time.perf_counter()
    scored = score_embeddings(emb, es, k=k, map_k=map_k, chunk_size=chunk_size, query_chunk=query_chunk)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    return {
        "n": n,
        "queries": len(es.queries),
        "pairs": len(es.pair_labels),
        "seconds": seconds,
        "inputs_mb": emb.nbytes / 1e6,
        "rss_before_mb": before / 1e6,
        "peak_delta_mb": (peak - before) / 1e6,
        "peak_rss_mb": peak / 1e6,
        "peak_reset": reset,
        "mrr": scored.metrics[f"mrr_at_{k}"],
    }


def cached_baseline_share(inp: Inputs, cache_dir: Path) -> dict[str, float]:
    """The baseline's evaluation (embeddings + scoring) on the val subset with an empty cache, then again."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    base = inp.settings.training()
    ev = replace(base.eval, cache_dir=str(cache_dir))
    evaluator = Evaluator(ev, base.model, inp.data, show_progress=False)
    times, hits = [], []
    for _ in range(2):
        start = time.perf_counter()
        emb, hit, _ = evaluator.baseline_embeddings(inp.eval_set, untuned=inp.model)
        score_embeddings(emb, inp.eval_set, **scoring_args(ev))
        times.append(time.perf_counter() - start)
        hits.append(hit)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "first_s": times[0],
        "second_s": times[1],
        "share": times[1] / times[0],
        "hits": hits,
        "questions": len(inp.eval_set.texts),
    }


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Scoring cost at growing corpus sizes (one subprocess each), and the cached baseline's second evaluation."""
    settings, b = inp.settings, inp.settings.bench.eval_cost
    ev = settings.eval
    results = []
    for n in b.sizes:
        args = (
            int(n),
            int(b.dim),
            float(b.query_share),
            float(b.pairs_per_question),
            int(settings.bench.seed),
            int(ev.k),
            int(ev.map_k),
            int(ev.chunk_size),
            int(ev.query_chunk_size),
        )
        call = f"eval_cost_child{args!r}"
        result = {"n": int(n), **run_child("contrastive.bench.eval_cost", call, float(b.timeout_s))}
        results.append(result)
        note(f"eval cost {int(n):,}: {result.get('seconds', result.get('error'))}")
    cache = cached_baseline_share(inp, Path(settings.paths.cache_dir) / "bench-eval-cache")
    record["eval_cost"] = {"sizes": results, "cached_baseline": cache}
    rows = []
    for i, r in enumerate(results):
        if "error" in r:
            rows.append({"row": f"4{chr(97 + i)}", "what": f"scoring {r['n']:,} questions", "a": r["error"]})
            continue
        rows.append(
            {
                "row": f"4{chr(97 + i)}",
                "what": f"retrieval + pair scoring of {r['n']:,} questions ({r['queries']:,} queries, top-{ev.map_k}; "
                f"synthetic unit embeddings, d={b.dim}): wall s, peak MB above inputs",
                "a": f"{r['seconds']:.1f} s, +{r['peak_delta_mb']:.0f} MB",
                "b": None,
                "ratio": None,
                "quality": f"inputs {r['inputs_mb']:.0f} MB; peak RSS {r['peak_rss_mb']:.0f} MB",
                "peak": [2.0 * r["queries"] * r["n"] * b.dim / r["seconds"], " (the score matmuls)"],
            }
        )
    rows.append(
        {
            "row": f"4{chr(97 + len(results))}",
            "what": f"baseline evaluation, 2nd (cached) vs 1st (encode) on {cache['questions']:,} real val questions",
            "a": f"{cache['second_s']:.2f} s",
            "b": f"{cache['first_s']:.1f} s",
            "ratio": f"{100 * cache['share']:.2f}%",
            "target": "<= 5%",
            "met": cache["share"] <= 0.05,
            "quality": f"cache hit on 2nd: {cache['hits'][1]}",
        }
    )
    return rows
